"""Routing heatmaps of one layer: C_lora, C_fft and C_casa side by side, one colour bar."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSizePolicy

from .. import theme
from .common import (
    PlotPage,
    add_strip,
    block_text,
    diverging_map,
    figure,
    matrices_png,
    matrix_plot,
    set_matrix,
    strip_rgba,
    symmetric_level,
)

PANELS = (("c_lora", "C_lora · base + LoRA"), ("c_fft", "C_fft · distillation"), ("c_casa", "C_casa · transferred"))
REGIONS = (("top", "Top-k block"), ("full", "Full matrix"))
EXPORT_EXTRA = 130      # the colour bar beside the matrices


class HeatmapView(PlotPage):
    """Three routing matrices of the selected layer, pooled by max-abs in the worker."""

    def __init__(self, parent=None):
        self.glw = pg.GraphicsLayoutWidget()
        super().__init__(self.glw, "Run a conversion, then pick a layer to see its routing.", parent)
        self.plots, self.images = [], []
        for col, (_key, title) in enumerate(PANELS):
            p, img = matrix_plot(title)
            if col:
                p.setLabel("left", "")
                p.setXLink(self.plots[0])       # one zoom and pan for the three matrices
                p.setYLink(self.plots[0])
            self.glw.addItem(p, 0, col)
            self.plots.append(p)
            self.images.append(img)
        self.bar = pg.ColorBarItem(values=(-1, 1), colorMap=diverging_map(), interactive=False, width=14,
                                   label="routing value")
        self.bar.setImageItem(self.images)
        self.glw.addItem(self.bar, 0, len(PANELS))
        self.region = QComboBox()
        for key, label in REGIONS:
            self.region.addItem(label, key)
        self.region.setToolTip("Top-k: the spectral head the rule arbitrates; Full: every singular direction")
        self.dominant = QCheckBox("Dominant")
        self.dominant.setToolTip("Mark the dominant rows and columns on the matrices' edges")
        self.dominant.setChecked(True)
        self.capped = QCheckBox("Capped")
        self.capped.setToolTip("Mark the capped entries on C_casa (dots; a shaded density on large layers)")
        self.capped.setChecked(True)
        self.saturate = QCheckBox("Saturate")
        self.saturate.setChecked(True)
        self.saturate.setToolTip("Colour scale at the 99th percentile of |value| (a few entries dominate); "
                                 "off: at the largest |value|")
        # the layer's figures on a line of their own, wrapped: a long layer name never widens the window
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Region"))
        bar.addWidget(self.region)
        bar.addWidget(self.dominant)
        bar.addWidget(self.capped)
        bar.addWidget(self.saturate)
        bar.addStretch(1)
        self.body.insertLayout(0, bar)
        self.body.insertWidget(1, self.info)
        self.region.currentIndexChanged.connect(self._redraw)
        self.dominant.toggled.connect(self._redraw)
        self.capped.toggled.connect(self._redraw)
        self.saturate.toggled.connect(self._redraw)
        self.glw.scene().sigMouseMoved.connect(self._hover)
        self._overlays: list = []

    def copy_options(self, other) -> None:
        for mine, theirs in ((self.dominant, other.dominant), (self.capped, other.capped),
                             (self.saturate, other.saturate)):
            mine.setChecked(theirs.isChecked())
        self.set_region(other.region.currentData())

    def set_region(self, key: str) -> None:
        self.region.setCurrentIndex(max(0, self.region.findData(key)))

    def set_result(self, res) -> None:
        if not self.accept(res, "draws no routing matrices."):
            self.info.setText("")   # the figures of the layer shown before do not stay
            return
        self._redraw()

    def current_view(self):
        return getattr(self.result.views, self.region.currentData())

    def _redraw(self) -> None:
        res = self.result
        if res is None or res.views is None:
            return
        self.show_view()
        v = self.current_view()
        top = self.region.currentData() == "top"
        n = res.views.k if top else res.views.rowdom.size
        level = symmetric_level(v.c_lora, v.c_fft, v.c_casa, percentile=99.0 if self.saturate.isChecked() else None)
        for img, (key, _t) in zip(self.images, PANELS, strict=True):
            set_matrix(img, getattr(v, key), v.step, level)
        self.bar.setLevels((-level, level))
        for plot, item in self._overlays:
            plot.removeItem(item)
        self._overlays = []
        c = theme.current()
        if self.dominant.isChecked():
            colors = [QColor(c.dominant)]
            rows = np.where(res.views.rowdom[:n], 0, -1)
            cols = np.where(res.views.coldom[:n], 0, -1)
            for p in self.plots:
                self._overlays.append((p, add_strip(p, strip_rgba(rows, colors), n, "left")))
                self._overlays.append((p, add_strip(p, strip_rgba(cols, colors), n, "top")))
        if self.capped.isChecked():
            overlay = capped_overlay(v.capped, v.step, c.capped, self.plots[2].vb.width())
            if overlay is not None:
                self.plots[2].addItem(overlay)
                self._overlays.append((self.plots[2], overlay))
        for p in self.plots:
            p.autoRange(padding=0.02)
        pooled = "" if v.step == 1 else f", pooled {v.step}×{v.step} by max-abs"
        self.info.setText(f"{res.name}: {'top-k' if top else 'full'} {n}×{n}{pooled}; "
                          f"{figure(res, 'capped')} capped, dominant share {figure(res, 'dominant_share'):.2f}; "
                          f"colours ±{level:.3g}")

    def _hover(self, pos) -> None:
        res = self.result
        if res is None or res.views is None or not self.showing_view:
            return
        v = self.current_view()
        for (key, title), p in zip(PANELS, self.plots, strict=True):
            if not p.sceneBoundingRect().contains(pos):
                continue
            pt = p.vb.mapSceneToView(pos)
            arr = getattr(v, key)
            r, c = int(pt.y() // v.step), int(pt.x() // v.step)
            if 0 <= r < arr.shape[0] and 0 <= c < arr.shape[1]:
                n = res.views.k if self.region.currentData() == "top" else res.views.rowdom.size
                cap = f", capped {v.capped[r, c]:.0%}" if v.capped[r, c] > 0 else ""
                self.hover.setText(block_text(title.split(" ")[0], r, c, v.step, float(arr[r, c]), n=n) + cap)
            return

    def export_png(self, path):
        return matrices_png(self, path, extra=EXPORT_EXTRA)


# beyond this many capped cells, dots would cover C_casa: the overlay becomes a shaded density
MAX_CAPPED_DOTS = 300


def capped_overlay(capped: np.ndarray, step: int, color: str, width_px: float):
    """Capped entries over C_casa: a small dot per cell while they are few, else the share of capped
    entries per cell as a light shade (at most 30 % opaque), so the matrix stays readable."""
    r, cc = np.nonzero(capped > 0)
    if not r.size:
        return None
    if r.size <= MAX_CAPPED_DOTS:
        cell_px = width_px / max(capped.shape[1], 1) if width_px > 0 else 4.0
        size = float(min(6.0, max(2.0, 0.4 * cell_px)))
        return pg.ScatterPlotItem(x=(cc + 0.5) * step, y=(r + 0.5) * step, symbol="o", size=size, pen=None,
                                  brush=pg.mkBrush(color), pxMode=True)
    q = QColor(color)
    rgba = np.zeros((*capped.shape, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = q.red(), q.green(), q.blue()
    rgba[..., 3] = np.where(capped > 0, 20 + 56 * np.clip(capped, 0, 1), 0).astype(np.uint8)
    item = pg.ImageItem(axisOrder="row-major")
    item.setImage(np.ascontiguousarray(rgba))
    h, w = capped.shape
    item.setRect(QRectF(0, 0, w * step, h * step))
    return item
