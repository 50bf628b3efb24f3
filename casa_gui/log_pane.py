"""The log pane: ``casa_gui`` log records, from any thread, shown in the window."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit

log = logging.getLogger("casa_gui")


class _Bridge(QObject):
    line = Signal(str)


class QtLogHandler(logging.Handler):
    """Forwards records as a queued signal, so worker threads never touch widgets."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.bridge = _Bridge()
        self.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))

    def emit(self, record) -> None:
        try:
            self.bridge.line.emit(self.format(record))
        except RuntimeError:  # the window is gone
            pass


class LogPane(QPlainTextEdit):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.handler = QtLogHandler()
        self.handler.bridge.line.connect(self.appendPlainText)
        log.addHandler(self.handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)

    def detach(self) -> None:
        log.removeHandler(self.handler)
