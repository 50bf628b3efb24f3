"""Energy kept against the output rank, for the selected layer and the whole model, and what a target
share would need (rank and size), before anything is exported."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from casa_core.api import ranks

from .. import theme
from .common import PlotPage, png_export

BYTES_PER_VALUE = 2     # sizes are given for 16-bit factors (bf16 / fp16), the usual LoRA dtype


class RankView(PlotPage):
    def __init__(self, parent=None):
        box = QWidget()
        self.glw = pg.GraphicsLayoutWidget()
        self.fraction = QDoubleSpinBox(decimals=3, minimum=0.05, maximum=1.0, singleStep=0.01, value=0.9)
        self.fraction.setToolTip("the share of each layer's update a file should keep (--rank auto:FRACTION)")
        self.needs = QLabel(" ")
        self.needs.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Keep"))
        row.addWidget(self.fraction)
        row.addWidget(self.needs, 1)
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.glw, 1)
        super().__init__(box, "Run a conversion to see how much of each update a rank keeps.", parent)
        self.layer_plot = self.glw.addPlot(row=0, col=0)
        self.model_plot = self.glw.addPlot(row=1, col=0)
        titles = ((self.layer_plot, "selected layer"), (self.model_plot, "whole model (one rank for every layer)"))
        for p, title in titles:
            p.setTitle(title, size="9pt", justify="left")
            p.showGrid(x=True, y=True, alpha=0.25)
            p.setLabel("left", "energy kept")
            p.setYRange(0, 1.02, padding=0)
            p.hideButtons()
        self.model_plot.setLabel("bottom", "output rank")
        self.results: list = []
        self.fraction.valueChanged.connect(lambda _v: self._draw())

    def set_result(self, res) -> None:
        self.result = res
        self._draw()

    def set_results(self, results) -> None:
        """Every converted layer so far (for the model-wide curve and the size a share needs)."""
        self.results = [r for r in results if getattr(r, "energy_curve", None) is not None]
        self._draw()

    def _draw(self) -> None:
        res = self.result
        if res is None and not self.results:
            self.show_message(self.empty_text)
            return
        self.show_view()
        c = theme.current()
        f = self.fraction.value()
        line = pg.mkPen(c.accent, width=1, style=pg.QtCore.Qt.PenStyle.DotLine)
        self.layer_plot.clear()
        parts = []
        if res is not None and res.energy_curve is not None:
            curve = res.energy_curve
            x = np.arange(1, len(curve) + 1)
            self.layer_plot.plot(x, curve, pen=pg.mkPen(c.base, width=2))
            p = min(res.shape)
            if len(curve) < p:    # a randomized factorization knew only the leading values: a bound beyond
                bound = ranks.upper_bound(curve, p)
                self.layer_plot.plot(np.arange(len(curve), p + 1), bound[len(curve) - 1:],
                                     pen=pg.mkPen(c.base, width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
            self.layer_plot.addItem(pg.InfiniteLine(pos=res.rank_out, angle=90, pen=line,
                                                    label=f"written {res.rank_out}",
                                                    labelOpts={"position": 0.1, "color": c.accent}))
            self.layer_plot.addItem(pg.InfiniteLine(pos=f, angle=0, pen=line))
            need = ranks.rank_for(curve, f, res.rank_in)
            least = ranks.rank_at_least(curve, f, res.rank_in, min(res.shape))
            self.layer_plot.setTitle(f"{res.name}: energy kept by rank (keeps {res.energy_kept:.3f} at "
                                     f"{res.rank_out}; dashed: a bound where only the leading values are known)",
                                     size="9pt", justify="left")
            parts.append(f"{res.name} needs rank {need}" if need is not None
                         else f"{res.name} needs rank {least} or more" if least is not None
                         else f"{res.name}: not reachable")
        self.model_plot.clear()
        if self.results:
            top = max(len(r.energy_curve) for r in self.results)
            xs, kept = ranks.model_curve(self.results, top)
            self.model_plot.plot(xs, kept, pen=pg.mkPen(c.target, width=2))
            self.model_plot.addItem(pg.InfiniteLine(pos=f, angle=0, pen=line))
            per, size, short, bounded = ranks.size_for(self.results, f, BYTES_PER_VALUE)
            text = (f"every layer at its auto rank for {f:g}: ranks {min(per.values())} to {max(per.values())}, "
                    f"{'at least ' if bounded else ''}{size / 1e6:.1f} MB in 16-bit")
            if short:
                text += f"; {len(short)} layers stay short of it at 4x their rank"
            if bounded:
                text += f"; {len(bounded)} layers' ranks are lower bounds"
            parts.append(text)
        self.needs.setText("; ".join(parts))

    def export_png(self, path):
        return png_export(self.glw.scene(), path)
