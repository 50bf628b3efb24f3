"""Light and dark themes (following the system where Qt can tell) for widgets and plots."""

from __future__ import annotations

from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication


@dataclass(frozen=True)
class Colors:
    dark: bool
    background: str
    foreground: str
    base: str          # spectrum of the base model
    target: str        # spectrum of the distilled target
    merged: str        # spectrum of base + LoRA
    accent: str        # selection, thresholds
    dominant: str      # dominant rows / columns
    capped: str        # capped entries
    bars: str
    error_bg: str
    error_fg: str
    info_bg: str


LIGHT = Colors(False, "#ffffff", "#202020", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
               "#8e44ad", "#111111", "#4c72b0", "#fde2e1", "#7a1010", "#e3effc")
DARK = Colors(True, "#1e1f22", "#dcdcdc", "#5fa8e8", "#f0605d", "#5cc96b", "#ffa54f",
              "#c58af0", "#f5f5f5", "#6f9ad8", "#4a2020", "#ffd6d6", "#1f3347")

_current = LIGHT


def system_is_dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    try:
        return app.styleHints().colorScheme() == Qt.ColorScheme.Dark
    except AttributeError:  # Qt < 6.5 cannot tell
        return app.palette().color(QPalette.ColorRole.Window).lightness() < 128


def resolve(name: str) -> Colors:
    if name == "dark":
        return DARK
    if name == "light":
        return LIGHT
    return DARK if system_is_dark() else LIGHT


def current() -> Colors:
    return _current


def apply(app: QApplication, name: str = "system") -> Colors:
    """Set the Qt palette and pyqtgraph's defaults; returns the colours in use."""
    global _current
    c = resolve(name)
    _current = c
    app.setStyle("Fusion")
    app.setPalette(_palette(c) if c.dark else app.style().standardPalette())
    pg.setConfigOptions(background=c.background, foreground=c.foreground, antialias=True,
                        imageAxisOrder="row-major")
    return c


def _palette(c: Colors) -> QPalette:
    p = QPalette()
    win, base, text = QColor("#2b2d30"), QColor(c.background), QColor(c.foreground)
    R = QPalette.ColorRole
    for role, col in ((R.Window, win), (R.WindowText, text), (R.Base, base), (R.AlternateBase, QColor("#26282b")),
                      (R.ToolTipBase, win), (R.ToolTipText, text), (R.Text, text), (R.Button, QColor("#35373b")),
                      (R.ButtonText, text), (R.BrightText, QColor("#ff6b6b")), (R.Highlight, QColor("#2f65ca")),
                      (R.HighlightedText, QColor("#ffffff")), (R.Link, QColor("#6aa7ff")),
                      (R.PlaceholderText, QColor("#8a8a8a"))):
        p.setColor(role, col)
    for role in (R.Text, R.ButtonText, R.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7a7a7a"))
    return p


def style_plot_widget(w: pg.GraphicsView) -> None:
    """Re-colour an existing plot widget after a theme change."""
    c = current()
    w.setBackground(c.background)
    for item in w.items():
        if isinstance(item, pg.AxisItem):
            item.setPen(c.foreground)
            item.setTextPen(c.foreground)
            item.labelStyle = {**item.labelStyle, "color": c.foreground}
            item._updateLabel()
        elif isinstance(item, pg.LabelItem) and item.text:
            # titles keep their text and size, in the new colour (they were drawn in the old one)
            item.setText(item.text, **{**item.opts, "color": c.foreground})
