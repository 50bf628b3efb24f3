"""Two event filters that keep the mouse wheel and the window's shortcuts where the user means them.

- ``WheelGuard``: a combo box or spin box takes a wheel turn only when it has the focus (a
  click or Tab gives it); otherwise the turn scrolls the panel around it, so scrolling the
  Controls panel never changes a setting on the way.
- ``ShortcutKeeper``: text fields claim some key combinations for themselves (on Linux Ctrl+E
  moves to the end of the line); the window's own shortcuts (export, convert, next tab ...)
  win over that while a field has the focus.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit, QWidget


class WheelGuard(QObject):
    """Wheel events reach a field only when it has the focus; else they go on to its parent (the scroll area)."""

    def install(self, root: QWidget) -> None:
        for w in root.findChildren(QWidget):
            if isinstance(w, (QComboBox, QAbstractSpinBox)):
                w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)      # a wheel turn does not give it the focus
                w.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Wheel and isinstance(obj, QWidget) and not obj.hasFocus():
            event.ignore()          # not accepted: Qt passes it on to the parent widgets
            return True
        return False


class ShortcutKeeper(QObject):
    """The window's shortcuts fire even while a text field that would take the same keys has the focus."""

    def __init__(self, sequences, parent=None):
        super().__init__(parent)
        self.sequences = {QKeySequence(s).toString() for s in sequences if QKeySequence(s).count()}

    def install(self, root: QWidget) -> None:
        for w in root.findChildren(QWidget):
            if isinstance(w, (QLineEdit, QAbstractSpinBox)):
                w.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride:
            seq = QKeySequence(event.keyCombination()).toString()
            if seq in self.sequences:
                event.ignore()      # the field does not claim it, so the window's shortcut runs
                return True
        return False
