"""The layer table: what the inspection found, then each layer's figures and verdict as the run fills them in.

Rows stay in the plan's order (the network's: blocks by number, then module); a proxy sorts
by any column and filters by name (a regular expression), block and module type.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from casa_core.api import layer_verdict, methods

from .params_form import describe

COLUMNS = ("Layer", "Shape", "Rank", "Scale", "Drift", "Status", "k", "Clusters", "Dominant", "Capped",
           "Energy kept", "Verdict", "Override", "LoRA restored", "LoRA capped", "LoRA reused", "Drift undone")
TIPS = {
    "Layer": "the layer's canonical (original Wan) name; rows are in the network's order: block by block, "
             "each block's modules as it runs them",
    "Shape": "the weight's shape, outputs × inputs",
    "Rank": "the LoRA's rank on this layer (→ the output rank when it differs)",
    "Scale": "the LoRA's scale alpha / r, folded into the written factors",
    "Drift": "relative distillation drift ||W_t - W_s|| / ||W_s||: how far the target moved from the base",
    "Status": "whether the layer transfers, passed through unchanged (and why), or is converted",
    "k": "spectral head size: the top singular directions the rule clusters and arbitrates",
    "Clusters": "clusters among the top-k routing directions",
    "Dominant": "share of the routing grid in dominant rows or columns (where the distillation relies on it)",
    "Capped": "routing entries whose magnitude the rule capped",
    "Energy kept": "share of the transferred update's energy the output rank keeps (* : the auto rank hit its cap "
                   "first)",
    "Verdict": "good / check / poor from energy kept, share capped and drift (Help › What the numbers mean)",
    "Override": "this layer's own method and thresholds, when it has some",
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
NUMERIC = ("Rank", "Scale", "Drift", "k", "Clusters", "Dominant", "Capped", "Energy kept", *EFFECT_COLUMNS)
NONE = "–"                      # a figure the layer's method does not have
VERDICT_COLORS = {"good": ("#d7f0d9", "#1f5f2a"), "check": ("#fbecc5", "#6b4a00"), "poor": ("#f8d2d0", "#7a1010")}
VERDICT_RANK = {"good": 0, "check": 1, "poor": 2}


class Row:
    __slots__ = ("module", "order", "block", "part", "shape", "rank", "scale", "drift", "status", "passed", "result",
                 "override", "verdict")

    def __init__(self, module, order, block, part, shape, rank, scale, status, passed=False):
        self.module, self.order, self.block, self.part = module, order, block, part
        self.shape, self.rank, self.scale = shape, rank, scale
        self.status, self.passed = status, passed
        self.drift = None
        self.result = None
        self.override = None
        self.verdict = None


def _f(v, fmt):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def exact_reuse(res) -> bool:
    """The method copies the LoRA and cut nothing: its 'energy kept' of 1 says nothing."""
    return not methods.get(res.method).uses_models and res.rank_out >= res.rank_in


def figure_value(r: Row, col: str):
    """The raw value of a cell (None where there is none): what sorting and the CSV use."""
    res = r.result
    if col == "Layer":
        return r.module
    if col == "Shape":
        return r.shape
    if col == "Rank":
        return r.rank
    if col == "Scale":
        return r.scale
    if col == "Drift":
        return r.drift if r.drift is not None else (res.drift if res is not None else None)
    if col == "Status":
        return r.status
    if col == "Override":
        return "" if r.override is None else describe(r.override)
    if col == "Verdict":
        return r.verdict.level if r.verdict is not None and r.verdict.level else None
    if res is None:
        return None
    if col == "Energy kept":
        return None if exact_reuse(res) else res.energy_kept
    if col in EFFECT_COLUMNS:
        return None if res.effect is None else getattr(res.effect, EFFECT_COLUMNS[col][0])
    key = DIAGNOSTIC_COLUMNS[col][0]
    fig = res.diagnostics.figures() if res.diagnostics is not None else {}
    return fig.get(key)


def parse_blocks(text: str) -> set[int] | None:
    """``3``, ``0-9``, ``1, 4, 10-12`` -> the block numbers; '' -> None (every block); ValueError when unreadable."""
    text = text.strip()
    if not text:
        return None
    out: set[int] = set()
    for part in re.split(r"[,\s]+", text):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(part)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return out


class LayerModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[Row] = []
        self._index: dict[str, int] = {}

    def set_plan(self, plan) -> None:
        self.beginResetModel()
        self.rows = [Row(lp.module, i, lp.block, lp.part, "×".join(map(str, lp.shape)), lp.rank, lp.scale,
                         "will transfer") for i, lp in enumerate(plan.layers)] if plan else []
        for i, p in enumerate(plan.passed if plan else []):
            self.rows.append(Row(p.module or p.prefix, len(self.rows) + i, None, "", "", None, None,
                                 f"passes through: {p.reason}", True))
        self._index = {r.module: i for i, r in enumerate(self.rows) if not r.passed}
        self.endResetModel()

    def n_layers(self) -> int:
        return len(self._index)

    def row_of(self, module: str) -> int:
        return self._index.get(module, -1)

    def parts(self) -> list[str]:
        """The module types of the planned layers, in the plan's order."""
        return list(dict.fromkeys(r.part for r in self.rows if not r.passed))

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
        self._update(res.name, result=res, status="converted", verdict=layer_verdict(res.figures()))

    def set_overrides(self, overrides: dict) -> None:
        """Show each layer's override (or none)."""
        for r in self.rows:
            if not r.passed and r.override != overrides.get(r.module):
                self._update(r.module, override=overrides.get(r.module))

    def clear_results(self) -> None:
        for r in self.rows:
            if not r.passed:
                r.result, r.status, r.verdict = None, "will transfer", None
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(COLUMNS) - 1))

    def verdicts(self) -> list:
        return [r.verdict for r in self.rows if r.verdict is not None]

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
            if col == "Verdict" and r.verdict is not None and r.verdict.level:
                return "\n".join(r.verdict.reasons)
            if col == "Energy kept" and r.result is not None and exact_reuse(r.result):
                return "nothing was cut: the method reuses the LoRA at its own rank"
            return r.module if col == "Layer" else None
        if role == Qt.ItemDataRole.ForegroundRole:
            if r.passed:
                return QColor("#888888")
            if col == "Verdict" and r.verdict is not None and r.verdict.level:
                return QColor(VERDICT_COLORS[r.verdict.level][1])
        if role == Qt.ItemDataRole.BackgroundRole and col == "Verdict" and r.verdict is not None and r.verdict.level:
            return QColor(VERDICT_COLORS[r.verdict.level][0])
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if col == "Verdict":
                return int(Qt.AlignmentFlag.AlignCenter)
            if col not in ("Layer", "Status", "Override"):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def sort_key(r: Row, col: str):
        """Numbers sort as numbers, blanks last; names in the plan's order; passed-through rows after the layers."""
        if col == "Layer":
            return (r.passed, r.order)
        v = figure_value(r, col)
        if col == "Verdict":
            v = VERDICT_RANK.get(v)
        elif col == "Shape":
            v = tuple(int(x) for x in v.split("×")) if v else None
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            return (1, r.passed, 0, r.order)
        return (0, r.passed, v, r.order)

    @staticmethod
    def _text(r: Row, col: str) -> str:
        res = r.result
        if col == "Rank":
            if r.rank is None:
                return ""
            return f"{r.rank}→{res.rank_out}" if res is not None and res.rank_out != r.rank else str(r.rank)
        if col == "Scale":
            return _f(r.scale, ".4g")
        if col == "Drift":
            return _f(figure_value(r, col), ".4f")
        if col in ("Layer", "Shape", "Status", "Override", "Verdict"):
            return figure_value(r, col) or ""
        if res is None:
            return ""
        v = figure_value(r, col)
        if v is None:
            return NONE
        if col == "Energy kept":
            return _f(v, ".3f") + ("*" if res.rank_capped else "")
        fmt = EFFECT_COLUMNS[col][1] if col in EFFECT_COLUMNS else DIAGNOSTIC_COLUMNS[col][1]
        return _f(v, fmt)

    def write_csv(self, path, rows: list[int]) -> Path:
        """The given rows (model rows, in that order) as CSV with full-precision values; written atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.part")
        header = ["Layer", "Block", "Module type", "Shape", "Rank in", "Rank out", *COLUMNS[3:], "Verdict reasons"]
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(header)
                for i in rows:
                    r = self.rows[i]
                    vals = {c: figure_value(r, c) for c in COLUMNS}
                    out = [vals["Layer"], r.block, r.part, vals["Shape"], r.rank,
                           r.result.rank_out if r.result is not None else None,
                           *(vals[c] for c in COLUMNS[3:]),
                           "; ".join(r.verdict.reasons) if r.verdict is not None else ""]
                    w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in out])
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


class LayerFilter(QSortFilterProxyModel):
    """Sorts by ``LayerModel.sort_key``; keeps the rows whose name matches ``pattern``, in ``blocks``, of
    module type ``part``."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pattern: re.Pattern | None = None
        self.blocks: set[int] | None = None
        self.part = ""              # '' every type; 'self_attn' a group; 'self_attn.q' one module

    def set_filter(self, pattern: re.Pattern | None, blocks: set[int] | None, part: str) -> None:
        if hasattr(self, "beginFilterChange"):      # Qt 6.10+; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self.pattern, self.blocks, self.part = pattern, blocks, part
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.pattern, self.blocks, self.part = pattern, blocks, part
            self.invalidateFilter()

    @property
    def active(self) -> bool:
        return self.pattern is not None or self.blocks is not None or bool(self.part)

    def lessThan(self, left, right) -> bool:
        # compared in Python: the keys are tuples, which a QVariant cannot compare
        m, col = self.sourceModel(), COLUMNS[left.column()]
        return m.sort_key(m.rows[left.row()], col) < m.sort_key(m.rows[right.row()], col)

    def filterAcceptsRow(self, source_row, source_parent) -> bool:
        r = self.sourceModel().rows[source_row]
        if self.pattern is not None and not self.pattern.search(r.module):
            return False
        if (self.blocks is not None or self.part) and r.passed:
            return False
        if self.blocks is not None and r.block not in self.blocks:
            return False
        return not self.part or r.part == self.part or r.part.startswith(self.part + ".")


class LayerTable(QTableView):
    """Selecting a transferable row selects that layer everywhere: the table follows ``state.selected``."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.model_ = LayerModel(self)
        self.proxy = LayerFilter(self)
        self.proxy.setSourceModel(self.model_)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setTabKeyNavigation(False)         # Tab leaves the table instead of walking its cells
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        h = self.horizontalHeader()
        h.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        h.setStretchLastSection(True)
        h.setSortIndicatorShown(True)
        self.selectionModel().currentRowChanged.connect(self._current_changed)
        state.selected_changed.connect(self.select_module)

    def set_plan(self, plan) -> None:
        self.model_.set_plan(plan)
        self.resizeColumnsToContents()
        # room for the figures that arrive later (drift, then the run's columns), so none is cut
        fm = self.fontMetrics()
        digits = fm.horizontalAdvance("0.00000") + 16
        for col, name in enumerate(COLUMNS):
            if name in NUMERIC or name == "Verdict":
                self.setColumnWidth(col, max(self.columnWidth(col), digits,
                                             fm.horizontalAdvance(name) + 28))   # the sort arrow
        self.setColumnWidth(0, max(self.columnWidth(0), 200))
        status = COLUMNS.index("Status")
        self.setColumnWidth(status, min(max(self.columnWidth(status), 110), 260))

    def _module_at(self, proxy_row: int) -> str | None:
        if proxy_row < 0:
            return None
        src = self.proxy.mapToSource(self.proxy.index(proxy_row, 0)).row()
        r = self.model_.rows[src] if 0 <= src < len(self.model_.rows) else None
        return r.module if r is not None and not r.passed else None

    def _current_changed(self, cur, _prev) -> None:
        m = self._module_at(cur.row()) if cur.isValid() else None
        if m is not None:
            self.state.selected = m

    def select_module(self, module: str | None) -> None:
        i = self.model_.row_of(module)
        if i < 0:
            return
        idx = self.proxy.mapFromSource(self.model_.index(i, 0))
        if idx.isValid() and self.currentIndex().row() != idx.row():
            self.setCurrentIndex(idx)
            self.scrollTo(idx)

    def current_module(self) -> str | None:
        return self._module_at(self.currentIndex().row()) if self.currentIndex().isValid() else None

    def visible_modules(self) -> list[str]:
        """The transferable layers the filter shows, in the table's order."""
        return [m for i in range(self.proxy.rowCount()) if (m := self._module_at(i)) is not None]

    def visible_rows(self) -> list[int]:
        """The model rows the filter shows, in the table's order."""
        return [self.proxy.mapToSource(self.proxy.index(i, 0)).row() for i in range(self.proxy.rowCount())]

    def step(self, delta: int) -> None:
        """Select the next (+1) or previous (-1) transferable layer the table shows."""
        mods = self.visible_modules()
        if not mods:
            return
        cur = self.current_module()
        i = mods.index(cur) if cur in mods else -1
        j = min(max(0, i + delta), len(mods) - 1) if i >= 0 else 0
        self.state.selected = mods[j]
        self.select_module(mods[j])


class LayerPane(QWidget):
    """The layer table under its filter bar: a name pattern, blocks, module type, the count, CSV export."""

    csv_requested = Signal()

    def __init__(self, table: LayerTable, parent=None):
        super().__init__(parent)
        self.table = table
        self.pattern = QLineEdit()
        self.pattern.setPlaceholderText("filter: regular expression, e.g. ffn|cross_attn\\.o")
        self.pattern.setClearButtonEnabled(True)
        self.pattern.setToolTip("Show the layers whose name matches this regular expression")
        self.blocks = QLineEdit()
        self.blocks.setPlaceholderText("blocks: 3, 0-9")
        self.blocks.setClearButtonEnabled(True)
        self.blocks.setToolTip("Show these blocks only: a number, a range (10-19) or a list (1, 4, 10-12)")
        self.blocks.setMaximumWidth(130)
        self.part = QComboBox()
        self.part.setToolTip("Show one module type (or one group: self-attention, cross-attention, feed-forward)")
        # none of the bar's fields grows with what it shows: the window's width never depends on it
        self.part.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.part.setMinimumContentsLength(8)
        self.pattern.setMinimumWidth(70)
        self.blocks.setMinimumWidth(50)
        self.verdict = QLabel("")
        self.verdict.setMinimumWidth(self.verdict.fontMetrics().horizontalAdvance("Model: check") + 24)
        self.verdict.setToolTip("The model's verdict appears once layers are converted")
        self.count = QLabel("")
        self.count.setMinimumWidth(self.count.fontMetrics().horizontalAdvance("0000/0000"))
        self.count.setToolTip("layers shown / layers that transfer")
        csv_btn = QToolButton(text="CSV…", toolTip="Export the rows shown, as they are sorted, as CSV")
        csv_btn.clicked.connect(self.csv_requested)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.verdict)
        bar.addWidget(self.pattern, 3)
        bar.addWidget(self.blocks, 1)
        bar.addWidget(self.part)
        bar.addWidget(self.count)
        bar.addWidget(csv_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(table, 1)
        self.pattern.textChanged.connect(self.apply)
        self.blocks.textChanged.connect(self.apply)
        self.part.currentIndexChanged.connect(self.apply)
        table.model_.modelReset.connect(self._fill_parts)
        self._fill_parts()

    def _fill_parts(self) -> None:
        keep = self.part.currentData()
        parts = self.table.model_.parts()
        groups = list(dict.fromkeys(p.split(".")[0] for p in parts if "." in p))
        self.part.blockSignals(True)
        self.part.clear()
        self.part.addItem("every module", "")
        for g in groups:
            if sum(p.startswith(g + ".") for p in parts) > 1:
                self.part.addItem(f"{g}.*", g)
        for p in parts:
            self.part.addItem(p, p)
        self.part.setCurrentIndex(max(0, self.part.findData(keep)))
        self.part.blockSignals(False)
        self.apply()

    def show_verdict(self, verdict, colors: dict) -> None:
        """The model-wide verdict as a badge; its reasons in the tooltip."""
        if not verdict.level:
            self.verdict.setText("")
            self.verdict.setStyleSheet("")
            self.verdict.setToolTip("The model's verdict appears once layers are converted")
            return
        bg, fg = colors[verdict.level]
        self.verdict.setText(f"Model: {verdict.level}")
        self.verdict.setStyleSheet(f"QLabel {{ background: {bg}; color: {fg}; padding: 2px 8px; "
                                   "border-radius: 3px; font-weight: bold; }")
        self.verdict.setToolTip("\n".join(verdict.reasons) + "\n(Help › What the numbers mean)")

    def apply(self, *_args) -> None:
        pattern = blocks = None
        bad = []
        try:
            pattern = re.compile(self.pattern.text()) if self.pattern.text() else None
        except re.error:
            bad.append(self.pattern)
        try:
            blocks = parse_blocks(self.blocks.text())
        except ValueError:
            bad.append(self.blocks)
        for w in (self.pattern, self.blocks):
            w.setStyleSheet("QLineEdit { border: 1px solid #c0392b; }" if w in bad else "")
        self.table.proxy.set_filter(pattern, blocks, self.part.currentData() or "")
        n, shown = self.table.model_.n_layers(), len(self.table.visible_modules())
        self.count.setText(f"{shown}/{n}" if self.table.proxy.active else f"{n}")
        self.table.select_module(self.table.state.selected)
