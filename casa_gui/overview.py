"""The model-wide overview: per layer dominant share, capped entries, drift and energy kept.

Clicking a bar opens that layer.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal

from . import theme
from .plots.common import PlotPage, figure, png_export

CHARTS = (("dominant_share", "Dominant share"), ("n_capped", "Capped entries"), ("drift", "Drift"),
          ("energy_kept", "Energy kept by the rank"))


class OverviewView(PlotPage):
    layer_clicked = Signal(str)

    def __init__(self, parent=None):
        self.glw = pg.GraphicsLayoutWidget()
        super().__init__(self.glw, "The overview fills in as layers convert.", parent)
        self.plots: list[pg.PlotItem] = []
        for row, (_key, title) in enumerate(CHARTS):
            p = self.glw.addPlot(row=row, col=0)
            p.setTitle(title, size="9pt", justify="left")
            p.getAxis("left").enableAutoSIPrefix(False)
            p.getAxis("left").setWidth(48)
            p.showGrid(y=True, alpha=0.25)
            p.setMouseEnabled(x=True, y=False)
            p.hideButtons()
            if row:
                p.setXLink(self.plots[0])
            if row < len(CHARTS) - 1:
                p.getAxis("bottom").setStyle(showValues=False)
            self.plots.append(p)
        self.plots[-1].setLabel("bottom", "layer (click a bar to open it)")
        self.modules: list[str] = []
        self.values: dict[str, np.ndarray] = {}
        self.selected = -1
        self._bars: list = [None] * len(CHARTS)
        self.glw.scene().sigMouseClicked.connect(self._clicked)
        self.glw.scene().sigMouseMoved.connect(self._hover)

    def set_data(self, modules: list[str], results: dict, drift: dict[str, float], selected: str | None) -> None:
        """Draw one bar per planned layer (NaN where there is no figure yet)."""
        self.modules = list(modules)
        if not self.modules:
            self.show_message("The overview fills in as layers convert.")
            return
        self.show_view()
        nan = float("nan")

        def fig(m, name):   # a method's figure by its report name (the diagnostics are typed per method)
            res = results.get(m)
            v = figure(res, name) if res is not None else None
            return nan if v is None else v

        self.values = {
            "dominant_share": np.array([fig(m, "dominant_share") for m in modules], float),
            "n_capped": np.array([fig(m, "capped") for m in modules], float),
            "drift": np.array([drift.get(m, getattr(results.get(m), "drift", nan)) for m in modules], float),
            "energy_kept": np.array([getattr(results.get(m), "energy_kept", nan) for m in modules], float),
        }
        self.selected = self.modules.index(selected) if selected in self.modules else -1
        self._draw()

    def select(self, module: str | None) -> None:
        if not self.modules:
            return
        self.selected = self.modules.index(module) if module in self.modules else -1
        self._draw()

    def _draw(self) -> None:
        c = theme.current()
        x = np.arange(len(self.modules))
        base, sel = pg.mkBrush(c.bars), pg.mkBrush(c.accent)
        brushes = [sel if i == self.selected else base for i in x]
        for i, (key, _t) in enumerate(CHARTS):
            h = np.nan_to_num(self.values[key], nan=0.0)
            p = self.plots[i]
            if self._bars[i] is not None:
                p.removeItem(self._bars[i])
            self._bars[i] = pg.BarGraphItem(x=x, height=h, width=0.8, brushes=brushes, pen=None)
            p.addItem(self._bars[i])
            top = float(h.max()) if h.size and h.max() > 0 else 1.0
            p.setYRange(0, top * 1.05, padding=0)
        self.plots[0].setXRange(-0.6, len(self.modules) - 0.4, padding=0)

    def _index_at(self, pos) -> tuple[int, int]:
        for row, p in enumerate(self.plots):
            if p.sceneBoundingRect().contains(pos):
                i = int(round(p.vb.mapSceneToView(pos).x()))
                return (i if 0 <= i < len(self.modules) else -1), row
        return -1, -1

    def _clicked(self, ev) -> None:
        i, _row = self._index_at(ev.scenePos())
        if i >= 0:
            self.layer_clicked.emit(self.modules[i])

    def _hover(self, pos) -> None:
        i, row = self._index_at(pos)
        if i < 0:
            return
        key, title = CHARTS[row]
        v = self.values[key][i]
        val = "not yet" if math.isnan(v) else (f"{int(v)}" if key == "n_capped" else f"{v:.4f}")
        self.hover.setText(f"layer {i}: {self.modules[i]}   {title.lower()} {val}")

    def export_png(self, path):
        return png_export(self.glw.scene(), path)
