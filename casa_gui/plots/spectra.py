"""Singular spectra of base, target and base + LoRA on one log plot (the spectral rigidity)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from .. import theme
from .common import PlotPage, png_export


class SpectraView(PlotPage):
    def __init__(self, parent=None):
        self.pw = pg.PlotWidget()
        super().__init__(self.pw, "Run a conversion, then pick a layer to see its singular spectra.", parent)
        self.plot = self.pw.getPlotItem()
        self.plot.setLogMode(x=False, y=True)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "index i")
        self.plot.setLabel("left", "singular value σ_i")
        self.legend = self.plot.addLegend(offset=(10, -10))      # lower left: spectra fall to the right
        self.pw.scene().sigMouseMoved.connect(self._hover)

    def set_result(self, res) -> None:
        if not self.accept(res, "computes no spectra."):
            return
        self.show_view()
        c = theme.current()
        self.plot.clear()
        self.legend.clear()
        v = res.views
        floor = None
        for arr, name, color, style in ((v.sigma_base, "base W_s", c.base, None),
                                        (v.sigma_target, "target W_t", c.target, None),
                                        (v.sigma_merged, "base + LoRA", c.merged, pg.QtCore.Qt.PenStyle.DashLine)):
            if arr is None or not len(arr):
                continue
            pos = arr[arr > 0]
            floor = pos.min() if floor is None and pos.size else floor
            y = np.maximum(arr, floor or 1e-30)
            pen = pg.mkPen(color, width=2, style=style or pg.QtCore.Qt.PenStyle.SolidLine)
            self.plot.plot(np.arange(len(arr)), y, pen=pen, name=name)
        line = pg.InfiniteLine(pos=v.k - 0.5, angle=90, pen=pg.mkPen(c.accent, width=1.5,
                                                                     style=pg.QtCore.Qt.PenStyle.DotLine),
                               label=f"k = {v.k}", labelOpts={"position": 0.95, "color": c.accent,
                                                                      "anchors": [(1, 0), (1, 0)]})
        self.plot.addItem(line)
        self.plot.setTitle(f"{res.name}: singular spectra (drift {res.drift:.4f})")
        self.plot.autoRange()

    def _hover(self, pos) -> None:
        res = self.result
        if res is None or res.views is None or not self.showing_view:
            return
        if not self.plot.sceneBoundingRect().contains(pos):
            return
        i = int(round(self.plot.vb.mapSceneToView(pos).x()))
        v = res.views
        if 0 <= i < len(v.sigma_base):
            parts = [f"i = {i}", f"base {v.sigma_base[i]:.4g}"]
            if v.sigma_target is not None:
                parts.append(f"target {v.sigma_target[i]:.4g}")
            if v.sigma_merged is not None:
                parts.append(f"base+LoRA {v.sigma_merged[i]:.4g}")
            self.hover.setText("   ".join(parts))

    def export_png(self, path):
        return png_export(self.plot, path)
