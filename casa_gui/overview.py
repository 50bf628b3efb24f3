"""The model-wide overview: per layer bars (dominant share, capped entries, drift, energy kept) and a
block × module grid of one chosen figure, both in the plan's order.

Clicking a bar or a cell opens that layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from casa_core.api import layer_verdict

from . import theme
from .plots.common import PlotPage, loose_title, png_export

CHARTS = (("dominant_share", "Dominant share"), ("capped", "Capped entries"), ("drift", "Drift"),
          ("energy_kept", "Energy kept by the rank"))
# what the grid can colour by: the charts' figures and the verdict (0 good, 1 check, 2 poor)
GRID_FIGURES = (*CHARTS, ("verdict", "Verdict"))
VERDICT_LEVEL = {"good": 0.0, "check": 1.0, "poor": 2.0}
SHORT = {"self_attn": "sa", "cross_attn": "ca"}


def short_part(part: str) -> str:
    """``self_attn.q`` -> ``sa.q`` for the grid's column labels."""
    head, _, rest = part.partition(".")
    return f"{SHORT.get(head, head)}.{rest}" if rest else part


def layer_figure(res, key: str, drift: float | None = None) -> float:
    """One layer's figure by its run-report name (NaN where there is none yet, or the method has none)."""
    nan = float("nan")
    if key == "drift":
        v = drift if drift is not None else (res.drift if res is not None else None)
        return nan if v is None else float(v)
    if res is None:
        return nan
    if key == "energy_kept":
        return float(res.energy_kept)
    if key == "verdict":
        return VERDICT_LEVEL.get(layer_verdict(res.figures()).level, nan)
    figs = res.diagnostics.figures() if res.diagnostics is not None else {}
    v = figs.get(key)
    return nan if v is None else float(v)


class GridAxis(pg.AxisItem):
    """Labels at the centres of the grid's cells."""

    def __init__(self, orientation: str):
        super().__init__(orientation)
        self.labels: list[str] = []

    def tickValues(self, minVal, maxVal, size):
        minVal, maxVal = sorted((minVal, maxVal))
        n = len(self.labels)
        if not n:
            return []
        every = max(1, int(math.ceil(n / max(1.0, size / (18 if self.orientation == "left" else 44)))))
        return [(every, [i + 0.5 for i in range(0, n, every) if minVal <= i + 0.5 <= maxVal])]

    def tickStrings(self, values, scale, spacing):
        return [self.labels[int(v)] if 0 <= int(v) < len(self.labels) else "" for v in values]


class OverviewView(PlotPage):
    layer_clicked = Signal(str)

    def __init__(self, parent=None):
        self.glw = pg.GraphicsLayoutWidget()
        self.grid_glw = pg.GraphicsLayoutWidget()
        self.figure = QComboBox()
        for key, title in GRID_FIGURES:
            self.figure.addItem(title, key)
        self.figure.setToolTip("The figure the block × module grid shows")
        grid_page = QWidget()
        gl = QVBoxLayout(grid_page)
        gl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Grid of"))
        row.addWidget(self.figure, 1)
        gl.addLayout(row)
        gl.addWidget(self.grid_glw, 1)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        gl.addWidget(self.note)
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(self.glw)
        self.split.addWidget(grid_page)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        super().__init__(self.split, "The overview fills in as layers convert.", parent)
        self.plots: list[pg.PlotItem] = []
        for row_i, (_key, title) in enumerate(CHARTS):
            p = self.glw.addPlot(row=row_i, col=0)
            p.setTitle(title, size="9pt", justify="left")
            p.getAxis("left").enableAutoSIPrefix(False)
            p.getAxis("left").setWidth(48)
            p.getAxis("left").setStyle(maxTickLevel=0)    # short charts: major ticks only, no crowding
            p.showGrid(y=True, alpha=0.25)
            p.setMouseEnabled(x=True, y=False)
            p.hideButtons()
            if row_i:
                p.setXLink(self.plots[0])
            if row_i < len(CHARTS) - 1:
                p.getAxis("bottom").setStyle(showValues=False)
            self.plots.append(p)
        self.plots[-1].setLabel("bottom", "layer, in the network's order")
        self.grid_plot = pg.PlotItem(axisItems={"bottom": GridAxis("bottom"), "left": GridAxis("left")})
        self.grid_plot.invertY(True)
        self.grid_plot.hideButtons()
        self.grid_plot.setMenuEnabled(False)
        self.grid_plot.setLabel("left", "block")
        self.grid_plot.setLabel("bottom", "module")
        self.grid_plot.setTitle("block × module", size="9pt")
        loose_title(self.grid_plot)
        self.grid_img = pg.ImageItem(axisOrder="row-major")
        self.grid_plot.addItem(self.grid_img)
        self.grid_sel = pg.PlotCurveItem(pen=pg.mkPen(theme.current().accent, width=2.5))
        self.grid_plot.addItem(self.grid_sel)
        self.grid_bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"), interactive=False,
                                        width=12, label=CHARTS[0][1].lower())
        self.grid_bar.setImageItem(self.grid_img)
        self.grid_glw.addItem(self.grid_plot, 0, 0)
        self.grid_glw.addItem(self.grid_bar, 0, 1)
        self.modules: list[str] = []
        self.positions: dict[str, tuple[int | None, str]] = {}
        self.results: dict = {}
        self.drift: dict = {}
        self.values: dict[str, np.ndarray] = {}
        self.selected = -1
        self.grid_blocks: list[int] = []
        self.grid_parts: list[str] = []
        self.grid_cells: dict[tuple[int, int], str] = {}
        self._bars: list = [None] * len(CHARTS)
        self.glw.scene().sigMouseClicked.connect(self._clicked)
        self.glw.scene().sigMouseMoved.connect(self._hover)
        self.grid_glw.scene().sigMouseClicked.connect(self._grid_clicked)
        self.grid_glw.scene().sigMouseMoved.connect(self._grid_hover)
        self.figure.currentIndexChanged.connect(self._draw_grid)

    def set_data(self, modules: list[str], results: dict, drift: dict[str, float], selected: str | None,
                 positions: dict | None = None) -> None:
        """Draw one bar per planned layer (NaN where there is no figure yet) and the grid.

        ``positions``: module -> (block or None, module type), as the plan says.
        """
        if list(modules) != self.modules:
            self.hover.setText(" ")
        self.modules = list(modules)
        self.positions = dict(positions or {})
        self.results, self.drift = results, drift
        if not self.modules:
            self.show_message("The overview fills in as layers convert.")
            return
        self.show_view()
        self.values = {key: np.array([layer_figure(results.get(m), key, drift.get(m)) for m in modules], float)
                       for key, _t in CHARTS}
        self.selected = self.modules.index(selected) if selected in self.modules else -1
        self._draw()
        self._draw_grid()

    def select(self, module: str | None) -> None:
        if not self.modules:
            return
        self.selected = self.modules.index(module) if module in self.modules else -1
        self._draw()
        self._draw_selection()

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

    # ---- the block x module grid --------------------------------------------------

    def _draw_grid(self, *_args) -> None:
        key = self.figure.currentData()
        in_blocks = [(m, *self.positions[m]) for m in self.modules if self.positions.get(m, (None, ""))[0] is not None]
        outside = [m for m in self.modules if self.positions.get(m, (None, ""))[0] is None]
        self.grid_blocks = sorted({b for _m, b, _p in in_blocks})
        self.grid_parts = list(dict.fromkeys(p for _m, _b, p in in_blocks))
        self.grid_cells = {}
        if not in_blocks:
            self.grid_img.clear()
            self.grid_sel.setData([], [])
            self.note.setText("No layer sits in a block: the bars show every layer.")
            return
        row_of = {b: i for i, b in enumerate(self.grid_blocks)}
        col_of = {p: j for j, p in enumerate(self.grid_parts)}
        grid = np.full((len(self.grid_blocks), len(self.grid_parts)), np.nan, dtype=np.float32)
        for m, b, p in in_blocks:
            grid[row_of[b], col_of[p]] = layer_figure(self.results.get(m), key, self.drift.get(m))
            self.grid_cells[(row_of[b], col_of[p])] = m
        finite = grid[np.isfinite(grid)]
        if key == "verdict":
            levels = (0.0, 2.0)
            cmap = pg.ColorMap([0.0, 0.5, 1.0], [(76, 175, 80), (240, 190, 50), (211, 47, 47)])
        else:
            lo = 0.0 if key != "energy_kept" or not finite.size else float(min(finite.min(), 0.999))
            hi = float(finite.max()) if finite.size and finite.max() > lo else lo + 1.0
            levels = (lo, hi)
            cmap = pg.colormap.get("viridis")
        self.grid_img.setColorMap(cmap)
        self.grid_img.setImage(grid, levels=levels, autoLevels=False)
        self.grid_img.setRect(QRectF(0, 0, grid.shape[1], grid.shape[0]))
        self.grid_bar.setColorMap(cmap)
        self.grid_bar.setLevels(levels)
        self.grid_bar.getAxis("left").setLabel(dict(GRID_FIGURES)[key].lower())
        self.grid_bar.axis.setTicks([[(v, name) for name, v in VERDICT_LEVEL.items()]] if key == "verdict" else None)
        self.grid_plot.getAxis("left").labels = [str(b) for b in self.grid_blocks]
        self.grid_plot.getAxis("bottom").labels = [short_part(p) for p in self.grid_parts]
        for name in ("left", "bottom"):
            ax = self.grid_plot.getAxis(name)
            ax.picture = None
            ax.update()
        self.grid_plot.setRange(xRange=(0, grid.shape[1]), yRange=(0, grid.shape[0]), padding=0.02)
        self.note.setText(("Outside the blocks (bars only): " + ", ".join(outside[:6])
                           + (" …" if len(outside) > 6 else "") + ". ") if outside else "")
        self.note.setText(self.note.text() + "Grey: no figure yet. Click a cell to open its layer.")
        self._draw_selection()

    def _draw_selection(self) -> None:
        m = self.modules[self.selected] if 0 <= self.selected < len(self.modules) else None
        cell = next((rc for rc, mod in self.grid_cells.items() if mod == m), None)
        if cell is None:
            self.grid_sel.setData([], [])
            return
        r, c = cell
        self.grid_sel.setData([c, c + 1, c + 1, c, c], [r, r, r + 1, r + 1, r])

    def _cell_at(self, pos) -> str | None:
        if not self.grid_plot.sceneBoundingRect().contains(pos):
            return None
        pt = self.grid_plot.vb.mapSceneToView(pos)
        return self.grid_cells.get((int(math.floor(pt.y())), int(math.floor(pt.x()))))

    def _grid_clicked(self, ev) -> None:
        m = self._cell_at(ev.scenePos())
        if m is not None:
            self.layer_clicked.emit(m)

    def _grid_hover(self, pos) -> None:
        m = self._cell_at(pos)
        if m is None:
            return
        key = self.figure.currentData()
        v = layer_figure(self.results.get(m), key, self.drift.get(m))
        if key == "verdict":
            val = {0.0: "good", 1.0: "check", 2.0: "poor"}.get(v, "not yet")
        else:
            val = "not yet" if math.isnan(v) else (f"{int(v)}" if key == "capped" else f"{v:.4f}")
        self.hover.setText(f"{m}   {dict(GRID_FIGURES)[key].lower()} {val}   (click to open)")

    # ---- the bars -------------------------------------------------------------------

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
        val = "not yet" if math.isnan(v) else (f"{int(v)}" if key == "capped" else f"{v:.4f}")
        self.hover.setText(f"layer {i}: {self.modules[i]}   {title.lower()} {val}   (click a bar to open it)")

    def export_png(self, path):
        """The bars as ``path``, the grid beside it as ``<stem>-grid.png``."""
        path = Path(path)
        out = png_export(self.glw.scene(), path)
        if self.grid_cells:
            png_export(self.grid_glw.scene(), path.with_name(f"{path.stem}-grid.png"))
        return out
