"""An inline message strip above the views: errors and hints, never a traceback."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton

from . import theme


class MessageBar(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(text="✕", toolTip="Dismiss")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        lay.addWidget(self.label, 1)
        lay.addWidget(close)
        self.kind = ""
        self.hide()

    def show_message(self, kind: str, text: str) -> None:
        """``kind`` 'error' or 'info' shows ``text``; '' hides the bar."""
        if kind:
            self._show(text, kind)
        else:
            self.hide()

    def show_error(self, text: str) -> None:
        self._show(text, "error")

    def show_info(self, text: str) -> None:
        self._show(text, "info")

    def _show(self, text: str, kind: str) -> None:
        c = theme.current()
        bg, fg = (c.error_bg, c.error_fg) if kind == "error" else (c.info_bg, c.foreground)
        self.kind = kind
        self.setStyleSheet(f"MessageBar {{ background: {bg}; border-radius: 4px; }} QLabel {{ color: {fg}; }}")
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""
