"""The layer table: what the inspection found, then each layer's figures as the run fills them in."""

from __future__ import annotations

import math

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from .params_form import describe

COLUMNS = ("Layer", "Shape", "Rank", "Scale", "Drift", "Status", "k", "Clusters", "Dominant", "Capped",
           "Energy kept", "Override", "LoRA restored", "LoRA capped", "LoRA reused", "Drift undone")
TIPS = {
    "Drift": "relative distillation drift ||W_t - W_s|| / ||W_s||",
    "k": "spectral head size (directions that carry the energy)",
    "Clusters": "clusters among the top-k routing directions",
    "Dominant": "share of the routing grid in dominant rows or columns",
    "Capped": "entries whose magnitude the rule capped",
    "Energy kept": "energy of the update kept by the output rank (* : the auto rank hit its cap first)",
    "LoRA restored": "share of the LoRA's routing energy routed like base + LoRA (the drift taken out there)",
    "LoRA capped": "share of the LoRA's routing energy in capped entries",
    "LoRA reused": "share of the LoRA's routing energy reused as it is on top of the drift",
    "Drift undone": "how much of the distillation drift the update takes back: 1 undoes it all, 0 keeps it",
}
# columns that show what the converted layer does (LayerResult.effect): attribute, format
EFFECT_COLUMNS = {"LoRA restored": ("lora_restored_share", ".2f"), "LoRA capped": ("lora_capped_share", ".2f"),
                  "LoRA reused": ("lora_reused_share", ".2f"), "Drift undone": ("drift_undone", ".3f")}
# columns that show a method's per-layer figures: (name in the run report, format)
DIAGNOSTIC_COLUMNS = {"k": ("k", "d"), "Clusters": ("clusters", "d"), "Dominant": ("dominant_share", ".2f"),
                      "Capped": ("capped", "d")}


class Row:
    __slots__ = ("module", "shape", "rank", "scale", "drift", "status", "passed", "result", "override")

    def __init__(self, module, shape, rank, scale, status, passed=False):
        self.module, self.shape, self.rank, self.scale = module, shape, rank, scale
        self.status, self.passed = status, passed
        self.drift = None
        self.result = None
        self.override = None


def _f(v, fmt):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


class LayerModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[Row] = []
        self._index: dict[str, int] = {}

    def set_plan(self, plan) -> None:
        self.beginResetModel()
        self.rows = [Row(lp.module, "×".join(map(str, lp.shape)), lp.rank, lp.scale, "will transfer")
                     for lp in plan.layers] if plan else []
        for p in plan.passed if plan else []:
            self.rows.append(Row(p.module or p.prefix, "", None, None, f"passes through: {p.reason}", True))
        self._index = {r.module: i for i, r in enumerate(self.rows) if not r.passed}
        self.endResetModel()

    def n_layers(self) -> int:
        return len(self._index)

    def row_of(self, module: str) -> int:
        return self._index.get(module, -1)

    def _update(self, module: str, **values) -> None:
        i = self.row_of(module)
        if i < 0:
            return
        for k, v in values.items():
            setattr(self.rows[i], k, v)
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))

    def set_drift(self, module: str, drift: float) -> None:
        self._update(module, drift=drift)

    def set_result(self, res) -> None:
        self._update(res.name, result=res, status="converted")

    def set_overrides(self, overrides: dict) -> None:
        """Show each layer's override (or none)."""
        for r in self.rows:
            if not r.passed and r.override != overrides.get(r.module):
                self._update(r.module, override=overrides.get(r.module))

    def clear_results(self) -> None:
        for r in self.rows:
            if not r.passed:
                r.result, r.status = None, "will transfer"
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(COLUMNS) - 1))

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return TIPS.get(COLUMNS[section])
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        col = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(r, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == "Status":
                return r.status
            if col == "Override" and r.override is not None:
                return ", ".join(f"{k}={v}" for k, v in r.override.to_dict().items())
            return r.module if col == "Layer" else None
        if role == Qt.ItemDataRole.ForegroundRole and r.passed:
            return QColor("#888888")
        if role == Qt.ItemDataRole.TextAlignmentRole and col not in ("Layer", "Status", "Override"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _text(r: Row, col: str) -> str:
        res = r.result
        if col == "Layer":
            return r.module
        if col == "Shape":
            return r.shape
        if col == "Rank":
            if r.rank is None:
                return ""
            return f"{r.rank}→{res.rank_out}" if res is not None and res.rank_out != r.rank else str(r.rank)
        if col == "Scale":
            return _f(r.scale, ".4g")
        if col == "Drift":
            return _f(r.drift, ".4f")
        if col == "Status":
            return r.status
        if col == "Override":
            return "" if r.override is None else describe(r.override)
        if res is None:
            return ""
        if col == "Energy kept":
            return _f(res.energy_kept, ".3f") + ("*" if res.rank_capped else "")
        if col in EFFECT_COLUMNS:
            attr, fmt = EFFECT_COLUMNS[col]
            return "" if res.effect is None else _f(getattr(res.effect, attr), fmt)
        # the method's own figures, by their report names (blank where a method has none)
        fig = res.diagnostics.figures() if res.diagnostics is not None else {}
        key, fmt = DIAGNOSTIC_COLUMNS.get(col, (None, ""))
        return "" if fig.get(key) is None else format(fig[key], fmt)


class LayerTable(QTableView):
    """Selecting a transferable row selects that layer everywhere: the table follows ``state.selected``."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.model_ = LayerModel(self)
        self.setModel(self.model_)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        h = self.horizontalHeader()
        h.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        h.setStretchLastSection(True)
        self.selectionModel().currentRowChanged.connect(self._current_changed)
        state.selected_changed.connect(self.select_module)

    def set_plan(self, plan) -> None:
        self.model_.set_plan(plan)
        self.resizeColumnsToContents()
        # room for the figures that arrive later (drift, then the run's columns)
        digits = self.fontMetrics().horizontalAdvance("0.00000") + 12
        for col, name in enumerate(COLUMNS):
            if name in ("Drift", "Dominant", "Energy kept", "Capped", "Clusters", *EFFECT_COLUMNS):
                self.setColumnWidth(col, max(self.columnWidth(col), digits))
        self.setColumnWidth(0, max(self.columnWidth(0), 200))
        self.setColumnWidth(5, min(max(self.columnWidth(5), 110), 260))

    def _current_changed(self, cur, _prev) -> None:
        if cur.isValid() and not self.model_.rows[cur.row()].passed:
            self.state.selected = self.model_.rows[cur.row()].module

    def select_module(self, module: str | None) -> None:
        i = self.model_.row_of(module)
        if i >= 0 and self.currentIndex().row() != i:
            self.setCurrentIndex(self.model_.index(i, 0))
            self.scrollTo(self.model_.index(i, 0))

    def current_module(self) -> str | None:
        i = self.currentIndex().row()
        if 0 <= i < len(self.model_.rows) and not self.model_.rows[i].passed:
            return self.model_.rows[i].module
        return None

    def step(self, delta: int) -> None:
        """Select the next (+1) or previous (-1) transferable layer."""
        n = self.model_.n_layers()
        if not n:
            return
        cur = self.current_module()
        i = self.model_.row_of(cur) if cur else -1
        j = min(max(0, i + delta), n - 1) if i >= 0 else 0
        self.select_module(self.model_.rows[j].module)
