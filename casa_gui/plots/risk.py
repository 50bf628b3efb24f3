"""The risk-score histogram of one layer with the q_act threshold line."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg

from .. import theme
from .common import PlotPage, figure, png_export, setting


class RiskView(PlotPage):
    def __init__(self, parent=None):
        self.pw = pg.PlotWidget()
        super().__init__(self.pw, "Run a conversion, then pick a layer to see its risk scores.", parent)
        self.plot = self.pw.getPlotItem()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "log10 risk score")
        self.plot.setLabel("left", "entries")
        self.pw.scene().sigMouseMoved.connect(self._hover)

    def set_result(self, res) -> None:
        if not self.accept(res, "scores no risk."):
            return
        v = res.views
        if v.risk_counts.size == 0:
            self.show_message(f"{res.name}: no capping candidates, so no risk scores.")
            return
        self.show_view()
        c = theme.current()
        self.plot.clear()
        self.plot.plot(v.risk_edges, v.risk_counts, stepMode="center", fillLevel=0,
                       brush=pg.mkBrush(c.bars), pen=pg.mkPen(c.foreground, width=1))
        if v.threshold is not None and not math.isnan(v.threshold) and v.threshold > 0:
            t = math.log10(v.threshold)
            line = pg.InfiniteLine(pos=t, angle=90, pen=pg.mkPen(c.accent, width=2),
                                   label=f"q_act = {setting(res, 'q_act'):g}: capped right of here",
                                   labelOpts={"position": 0.97, "color": c.accent, "anchors": [(1, 0), (1, 0)],
                                              "fill": pg.mkBrush(c.background)})
            self.plot.addItem(line)
        self.plot.setTitle(f"{res.name}: risk of {figure(res, 'candidates')} candidates, "
                           f"{figure(res, 'capped')} capped")
        self.plot.autoRange()

    def _hover(self, pos) -> None:
        res = self.result
        if res is None or res.views is None or not self.showing_view or not self.plot.sceneBoundingRect().contains(pos):
            return
        v = res.views
        x = self.plot.vb.mapSceneToView(pos).x()
        i = int(np.searchsorted(v.risk_edges, x) - 1)
        if 0 <= i < v.risk_counts.size:
            self.hover.setText(f"log10 risk {v.risk_edges[i]:.3f} … {v.risk_edges[i + 1]:.3f}: "
                               f"{int(v.risk_counts[i])} entries")

    def export_png(self, path):
        return png_export(self.plot, path)
