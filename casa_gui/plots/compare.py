"""Two methods side by side: what each one's written update routes in the base's basis for the selected
layer, and their difference; below, per layer, what each does (drift undone, energy kept)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from casa_core.api import methods

from .. import theme
from .common import PlotPage, diverging_map, matrix_plot, png_export, set_matrix, symmetric_level

# per-layer figures compared across methods: (attribute path, title)
CHARTS = (("drift_undone", "Drift undone"), ("energy_kept", "Energy kept by the rank"))


def _figure(res, key):
    if res is None:
        return float("nan")
    if key == "energy_kept":
        return res.energy_kept
    v = getattr(res.effect, key, None) if res.effect is not None else None
    return float("nan") if v is None else v


class CompareView(PlotPage):
    """Choose two methods and Compare: one pass computes both on every layer (shared decompositions)."""
    compare_requested = Signal(list)     # [method, method]

    def __init__(self, parent=None):
        box = QWidget()
        self.first, self.second = QComboBox(), QComboBox()
        for combo in (self.first, self.second):
            for m in methods.available():
                combo.addItem(m.label, m.name)
            # a long method label must not widen the window (the list shows it in full)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self.second.setCurrentIndex(min(1, self.second.count() - 1))
        self.go = QPushButton("Compare")
        self.go.setToolTip("convert every layer with both methods in one pass (each layer decomposed once)")
        self.go.clicked.connect(lambda: self.compare_requested.emit(self.chosen()))
        row = QHBoxLayout()
        row.addWidget(self.first)
        row.addWidget(QLabel("vs"))
        row.addWidget(self.second)
        row.addWidget(self.go)
        row.addStretch(1)
        self.glw = pg.GraphicsLayoutWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.glw, 1)
        super().__init__(box, "", parent)
        self.show_view()
        self.plots, self.images = [], []
        for col, title in enumerate(("first", "second", "first - second")):
            p, img = matrix_plot(title)
            self.glw.addItem(p, 0, col)
            self.plots.append(p)
            self.images.append(img)
        self.bar = pg.ColorBarItem(values=(-1, 1), colorMap=diverging_map(), interactive=False, width=14,
                                   label="routing of the written update")
        self.bar.setImageItem(self.images)
        self.glw.addItem(self.bar, 0, 3)
        self.charts = []
        for i, (_key, title) in enumerate(CHARTS):
            p = self.glw.addPlot(row=1 + i, col=0, colspan=4)
            p.setTitle(title, size="9pt", justify="left")
            p.showGrid(y=True, alpha=0.25)
            p.addLegend(offset=(10, 5))
            p.hideButtons()
            self.charts.append(p)
        self.charts[-1].setLabel("bottom", "layer")
        self.compared: dict = {}         # method -> module -> LayerResult
        self.modules: list[str] = []
        self.selected: str | None = None

    @property
    def has_figures(self) -> bool:
        """Whether there is a comparison to draw (the page always shows its controls)."""
        return bool(self.compared)

    def chosen(self) -> list[str]:
        a, b = self.first.currentData(), self.second.currentData()
        return [a] if a == b else [a, b]

    def set_compared(self, modules: list[str], compared: dict) -> None:
        self.modules, self.compared = list(modules), compared
        self._draw()

    def set_selected(self, module: str | None) -> None:
        self.selected = module
        self._draw_layer()

    def _draw(self) -> None:
        self._draw_layer()
        c = theme.current()
        x = np.arange(len(self.modules))
        colors = (c.base, c.target)
        for (key, _title), p in zip(CHARTS, self.charts, strict=True):
            p.clear()
            for color, (method, results) in zip(colors, self.compared.items(), strict=False):
                y = np.array([_figure(results.get(m), key) for m in self.modules], float)
                p.plot(x, y, pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5, symbolBrush=color,
                       name=method)

    def _draw_layer(self) -> None:
        names = list(self.compared)
        got = [self.compared[m].get(self.selected) for m in names]
        pools = [r.routing for r in got if r is not None and r.routing is not None]
        for img in self.images:
            img.clear()
        if len(pools) != len(names) or not names:
            self.hover.setText("Compare two methods, then pick a layer." if not self.compared
                               else f"{self.selected}: no routing for this layer")
            return
        arrays = [a for a, _ in pools]
        step = pools[0][1]
        if len(arrays) == 2 and arrays[0].shape == arrays[1].shape:
            arrays.append(arrays[0] - arrays[1])
        level = symmetric_level(*arrays, percentile=99)
        titles = [*names, f"{names[0]} - {names[1]}" if len(names) == 2 else ""]
        for p, img, a, t in zip(self.plots, self.images, arrays, titles, strict=False):
            set_matrix(img, a, step, level)
            p.setTitle(t)
        self.bar.setLevels((-level, level))
        diff = ""
        if len(arrays) == 3:
            rel = float(np.linalg.norm(arrays[2]) / max(np.linalg.norm(arrays[0]), 1e-30))
            diff = f"; relative difference {rel:.3f} (pooled)"
        self.hover.setText(f"{self.selected}: U^T D V of each method's written update{diff}")

    def export_png(self, path):
        return png_export(self.glw.scene(), path)
