"""What every plot shares: the diverging colour map, matrix images, strips, hover text, PNG export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication, QLabel, QSizePolicy, QStackedLayout, QVBoxLayout, QWidget

from .. import theme

DIVERGING = "CET-D1A"     # blue - white - red, white at zero


def diverging_map() -> pg.ColorMap:
    return pg.colormap.get(DIVERGING)


def symmetric_level(*arrays, percentile: float | None = None) -> float:
    """One level L for all arrays, so -L..L is symmetric around 0 and shared by the panels.

    With ``percentile``, L is that percentile of |value| over the nonzero entries, so a
    few large entries saturate instead of washing out the rest.
    """
    vals = [np.abs(a[np.isfinite(a)]).ravel() for a in arrays if a is not None and a.size]
    vals = np.concatenate(vals) if vals else np.zeros(0)
    vals = vals[vals > 0]
    if not vals.size:
        return 1e-12
    return float(np.percentile(vals, percentile) if percentile else vals.max())


class IndexAxis(pg.AxisItem):
    """Whole-number ticks at the centres of a matrix's cells (``step`` entries per cell when pooled),
    labelled with the first index the cell covers."""

    def __init__(self, orientation: str):
        super().__init__(orientation)
        self.step = 1
        self.extent: float | None = None        # entries along this axis: no tick beyond them
        self.enableAutoSIPrefix(False)

    def tickValues(self, minVal, maxVal, size):
        minVal, maxVal = sorted((minVal, maxVal))     # an inverted axis (rows down) gives them reversed
        if self.extent is not None and maxVal > minVal:
            full = maxVal - minVal
            minVal, maxVal = max(minVal, 0.0), min(maxVal, self.extent)
            size *= max(maxVal - minVal, 0.0) / full      # the pixels the matrix itself spans
        span = maxVal - minVal
        if span <= 0 or size <= 0:
            return []
        digits = len(str(int(max(abs(minVal), abs(maxVal), 1))))
        most = max(3, int(size / (8 * digits + 28)))     # room for each label, and at least three
        spacing = self.step
        for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
            spacing = nice * self.step
            if span / spacing <= most:
                break
        first = int(np.ceil((minVal - self.step / 2) / spacing)) * spacing
        values = [v + self.step / 2 for v in range(max(first, 0), int(maxVal) + 1, int(spacing))
                  if minVal <= v + self.step / 2 <= maxVal]
        return [(spacing, values)]

    def tickStrings(self, values, scale, spacing):
        return [str(int(round(v - self.step / 2))) for v in values]


def loose_title(plot: pg.PlotItem) -> None:
    """The plot's title never sets its minimum width (a long title is cut, the window stays narrow)."""
    label = plot.titleLabel
    fitted = label.updateMin

    def update_min():
        fitted()
        label.setMinimumWidth(0)
        label._sizeHint[Qt.SizeHint.MinimumSize] = (0, label._sizeHint[Qt.SizeHint.MinimumSize][1])
        label.updateGeometry()

    label.updateMin = update_min
    update_min()


def matrix_plot(title: str) -> tuple[pg.PlotItem, pg.ImageItem]:
    """A plot holding one matrix image: rows down, columns right, square pixels, ticks on the cells."""
    p = pg.PlotItem(axisItems={"bottom": IndexAxis("bottom"), "left": IndexAxis("left")})
    p.setTitle(title, size="10pt")
    loose_title(p)
    img = pg.ImageItem(axisOrder="row-major")
    p.addItem(img)
    p.invertY(True)
    p.setAspectLocked(True)
    p.setLabel("bottom", "column j")
    p.setLabel("left", "row i")
    p.hideButtons()
    return p, img


def set_matrix(img: pg.ImageItem, arr: np.ndarray, step: int, level: float) -> None:
    """Show a pooled array with symmetric levels; ``setRect`` maps pixels to real indices."""
    a = np.ascontiguousarray(arr, dtype=np.float32)
    img.setImage(a, levels=(-level, level), autoLevels=False)
    h, w = a.shape
    img.setRect(QRectF(0, 0, w * step, h * step))
    view = img.getViewBox()
    plot = view.parentItem() if view is not None else None
    for name, extent in (("bottom", w * step), ("left", h * step)):
        axis = plot.getAxis(name) if isinstance(plot, pg.PlotItem) else None
        if isinstance(axis, IndexAxis):
            axis.step, axis.extent = step, extent
            axis.picture = None
            axis.update()


def strip_rgba(values: np.ndarray, colors: list[QColor]) -> np.ndarray:
    """(n,) integer codes -> (1, n, 4) uint8 image; code -1 is transparent."""
    out = np.zeros((1, values.size, 4), dtype=np.uint8)
    for code in np.unique(values):
        if code < 0:
            continue
        c = colors[int(code) % len(colors)]
        out[0, values == code] = (c.red(), c.green(), c.blue(), 255)
    return out


def cluster_colors(n: int) -> list[QColor]:
    return [pg.intColor(i, hues=max(n, 1), values=1, maxValue=230, minValue=150, sat=200) for i in range(max(n, 1))]


def add_strip(plot: pg.PlotItem, rgba: np.ndarray, length: float, side: str) -> pg.ImageItem:
    """A coloured strip along the left (rows) or top (columns) edge of a matrix of ``length`` entries."""
    width = max(length * 0.035, 1.0)
    item = pg.ImageItem(axisOrder="row-major")
    if side == "left":
        item.setImage(np.ascontiguousarray(rgba.transpose(1, 0, 2)))
        item.setRect(QRectF(-1.4 * width, 0, width, length))
    else:
        item.setImage(np.ascontiguousarray(rgba))
        item.setRect(QRectF(0, -1.4 * width, length, width))
    plot.addItem(item)
    return item


def block_text(name: str, r: int, c: int, step: int, value: float, index=None, n: int | None = None) -> str:
    """Hover text for one pooled pixel: the real indices it covers and its value."""
    def span(p):
        lo, hi = p * step, p * step + step - 1
        if n is not None:
            hi = min(hi, n - 1)
        if index is not None:
            real = index[lo:hi + 1]
            return str(int(real[0])) if len(real) == 1 else f"{len(real)} indices ({int(real[0])}, …)"
        return str(lo) if lo == hi else f"{lo}–{hi}"

    pooled = "" if step == 1 else f" (max-abs of a {step}×{step} block)"
    return f"{name}  (i, j) = ({span(r)}, {span(c)})  value {value:+.4g}{pooled}"


def png_export(item, path: Path) -> Path:
    """Write a plot (a scene, layout or PlotItem) to PNG with pyqtgraph's ImageExporter."""
    pyqtgraph.exporters.ImageExporter(item).export(str(path))
    return Path(path)


def matrices_png(page, path: Path, side: int = 420, extra: int = 130) -> Path:
    """A matrix page's panels as a PNG, each drawn square at about ``side`` pixels and fitted to its data,
    whatever the window's size: a twin of the page, never shown on screen and kept for the next export,
    draws the same layer with the same options at that size (the window's own view stays as it is)."""
    twin = getattr(page, "_export_twin", None)
    if twin is None:
        twin = page._export_twin = type(page)()
        twin.setParent(page, Qt.WindowType.Window)     # a window of its own, deleted with the page
        twin.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
    twin.copy_options(page)
    n = len(twin.plots)
    twin.resize(n * side + extra, side + 90)
    twin.show()
    twin.set_result(page.result)
    QApplication.processEvents()            # the layout follows the size before the picture is taken
    for p in twin.plots:
        p.autoRange(padding=0.02)
    return png_export(twin.glw.scene(), path)


class PlotPage(QWidget):
    """A page that shows a message until there is something to draw."""

    def __init__(self, view: QWidget, empty_text: str, parent=None):
        super().__init__(parent)
        self.view = view
        self.empty_text = empty_text
        self.result = None
        self.message = QLabel(empty_text)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self._stack = QStackedLayout()
        self._stack.addWidget(self.message)
        self._stack.addWidget(view)
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(2, 2, 2, 2)
        self.body.addLayout(self._stack, 1)
        self.hover = QLabel(" ")
        self.hover.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hover.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.body.addWidget(self.hover)

    def accept(self, res, nothing: str) -> bool:
        """Keep ``res``; show a message and return False when it has nothing to draw.

        ``nothing`` says what is missing when the layer's method made no pictures.
        """
        self.result = res
        self.hover.setText(" ")     # what the pointer read on the layer shown before
        if res is None:
            self.show_message(self.empty_text)
            return False
        if res.views is None:
            self.show_message(f"{res.name}: the {res.method} method {nothing}")
            return False
        return True

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self._stack.setCurrentIndex(0)

    def show_view(self) -> None:
        self._stack.setCurrentIndex(1)

    @property
    def showing_view(self) -> bool:
        return self._stack.currentIndex() == 1

    def restyle(self) -> None:
        for w in self.findChildren(pg.GraphicsView):
            theme.style_plot_widget(w)

    def copy_options(self, other) -> None:
        """Take another page's display options (a twin drawn for export); a page with none has nothing to do."""


def figure(res, name: str):
    """One of the layer's figures by its name in the run report (None where its method has none)."""
    return res.diagnostics.figures().get(name) if res.diagnostics is not None else None


def setting(res, name: str):
    """One of the layer's parameters by name (None where its method has none)."""
    return res.settings.to_dict().get(name)
