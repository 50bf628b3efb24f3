"""The cluster map: top-k routing reordered by cluster, boundaries drawn, a strip coloured by cluster."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QSizePolicy

from .. import theme
from .common import (
    PlotPage,
    add_strip,
    block_text,
    cluster_colors,
    diverging_map,
    figure,
    loose_title,
    matrices_png,
    matrix_plot,
    set_matrix,
    setting,
    strip_rgba,
    symmetric_level,
)

PANELS = (("c_lora", "C_lora by cluster"), ("c_casa", "C_casa by cluster"))
EXPORT_EXTRA = 130 + 420      # the colour bar and the cluster sizes beside the maps


class ClusterView(PlotPage):
    def __init__(self, parent=None):
        self.glw = pg.GraphicsLayoutWidget()
        super().__init__(self.glw, "Run a conversion, then pick a layer to see its clusters.", parent)
        self.plots, self.images = [], []
        for col, (_k, title) in enumerate(PANELS):
            p, img = matrix_plot(title)
            p.setLabel("bottom", "position in cluster order")
            p.setLabel("left", "position in cluster order" if col == 0 else "")
            self.glw.addItem(p, 0, col)
            self.plots.append(p)
            self.images.append(img)
        self.bar = pg.ColorBarItem(values=(-1, 1), colorMap=diverging_map(), interactive=False, width=14,
                                   label="routing value")
        self.bar.setImageItem(self.images)
        self.glw.addItem(self.bar, 0, len(PANELS))
        # the width the square maps leave: how large each cluster is, in the maps' order and colours
        self.sizes = pg.PlotItem(title="cluster sizes")
        self.sizes.titleLabel.setText("cluster sizes", size="10pt")
        loose_title(self.sizes)
        self.sizes.setLabel("bottom", "cluster, in map order")
        self.sizes.setLabel("left", "directions")
        self.sizes.getAxis("left").enableAutoSIPrefix(False)
        self.sizes.showGrid(y=True, alpha=0.25)
        self.sizes.hideButtons()
        self.sizes.setMouseEnabled(x=True, y=False)
        self.glw.addItem(self.sizes, 0, len(PANELS) + 1)
        self._size_bars = None
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.body.insertWidget(0, self.info)
        self.glw.scene().sigMouseMoved.connect(self._hover)
        self._extra: list = []

    def set_result(self, res) -> None:
        if not self.accept(res, "does not cluster; there is no map to show."):
            self.info.setText("")   # the figures of the layer shown before do not stay
            return
        self.show_view()
        views = res.views
        v = views.clustered
        k = views.k
        order = v.index if v.index is not None else np.arange(k)
        sorted_labels = views.labels[order]
        for p, item in self._extra:
            p.removeItem(item)
        self._extra = []
        # relabel clusters by first appearance so neighbouring clusters get distinct colours
        _, first = np.unique(sorted_labels, return_index=True)
        rank = {lab: i for i, lab in enumerate(sorted_labels[np.sort(first)])}
        codes = np.array([rank[x] for x in sorted_labels])
        colors = cluster_colors(len(rank))
        rgba = strip_rgba(codes, colors)
        starts = np.concatenate([[0], np.nonzero(np.diff(codes))[0] + 1])
        ends = np.concatenate([starts[1:], [k]])
        pen = pg.mkPen(theme.current().foreground, width=1.2)
        # each cluster is a block on the diagonal: outline it (corners in cluster order)
        xs, ys = [], []
        for a, b in zip(starts.astype(float), ends.astype(float), strict=True):
            if b - a < 2:
                continue
            for (x0, y0), (x1, y1) in (((a, a), (b, a)), ((b, a), (b, b)), ((b, b), (a, b)), ((a, b), (a, a))):
                xs += [x0, x1]
                ys += [y0, y1]
        level = symmetric_level(v.c_lora, v.c_casa, percentile=99.0)
        for img, (key, _t) in zip(self.images, PANELS, strict=True):
            set_matrix(img, getattr(v, key), v.step, level)
        self.bar.setLevels((-level, level))
        for p in self.plots:
            self._extra.append((p, add_strip(p, rgba, k, "left")))
            self._extra.append((p, add_strip(p, rgba, k, "top")))
            if xs:
                line = pg.PlotCurveItem(x=np.array(xs), y=np.array(ys), connect="pairs", pen=pen)
                p.addItem(line)
                self._extra.append((p, line))
            p.autoRange(padding=0.02)
        sizes = np.bincount(codes)
        if self._size_bars is not None:
            self.sizes.removeItem(self._size_bars)
        self._size_bars = pg.BarGraphItem(x=np.arange(sizes.size), height=sizes, width=0.85, pen=None,
                                          brushes=[pg.mkBrush(colors[i % len(colors)]) for i in range(sizes.size)])
        self.sizes.addItem(self._size_bars)
        self.sizes.setXRange(-0.6, sizes.size - 0.4, padding=0)
        self.sizes.setYRange(0, float(sizes.max()) * 1.05, padding=0)
        self.info.setText(f"{res.name}: top {k} directions in {figure(res, 'clusters')} clusters "
                          f"(largest {int(sizes.max())}, singletons {int((sizes == 1).sum())}); "
                          f"τ = {setting(res, 'tau'):g}; outlined blocks: clusters of 2 or more")

    def _hover(self, pos) -> None:
        res = self.result
        if res is None or res.views is None or not self.showing_view:
            return
        v = res.views.clustered
        for (key, title), p in zip(PANELS, self.plots, strict=True):
            if not p.sceneBoundingRect().contains(pos):
                continue
            pt = p.vb.mapSceneToView(pos)
            arr = getattr(v, key)
            r, c = int(pt.y() // v.step), int(pt.x() // v.step)
            if 0 <= r < arr.shape[0] and 0 <= c < arr.shape[1]:
                text = block_text(title.split(" ")[0], r, c, v.step, float(arr[r, c]), index=v.index,
                                  n=res.views.k)
                if v.step == 1 and v.index is not None:
                    labs = res.views.labels
                    text += f"  clusters {labs[v.index[r]]} / {labs[v.index[c]]}"
                self.hover.setText(text)
            return

    def export_png(self, path):
        return matrices_png(self, path, extra=EXPORT_EXTRA)
