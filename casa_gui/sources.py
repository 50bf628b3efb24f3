"""The three source slots (base, target, LoRA): free text, file/folder dialogs, drag and drop, recents."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .settings_store import ROLES

LABELS = {"base": "Base model", "target": "Distilled target", "lora": "LoRA"}
HINTS = {
    "base": "base .safetensors, sharded index.json, diffusers folder or HF repo id",
    "target": "distilled model: file, folder or HF repo id",
    "lora": "LoRA .safetensors trained on the base",
}


class SourceSlot(QWidget):
    """One input: an editable combo (any text, e.g. a Hugging Face repo id) with recents."""

    changed = Signal(str, str)      # role, text (Enter, a pick from the list or a dialog, a drop)
    edited = Signal(str, str)       # role, text (the field lost the focus with new text: maybe not done yet)

    def __init__(self, role: str, recent: list[str], parent=None):
        super().__init__(parent)
        self.role = role
        self.setAcceptDrops(True)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(18)
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.combo.lineEdit().setPlaceholderText(HINTS[role])
        self.combo.setToolTip(f"{LABELS[role]}: {HINTS[role]}.\nType a path, drop a file here, "
                              "or pick one of the recent entries.")
        self.combo.addItems(recent)
        self.combo.setCurrentIndex(-1)
        self.combo.lineEdit().returnPressed.connect(lambda: self._emit(again=True))
        self.combo.lineEdit().editingFinished.connect(lambda: self._emit(quiet=True))
        self.combo.activated.connect(lambda _i: self._emit())
        file_btn = QToolButton(text="File…", toolTip=f"Pick the {LABELS[role].lower()} file")
        file_btn.clicked.connect(self._pick_file)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo, 1)
        lay.addWidget(file_btn)
        if role != "lora":
            dir_btn = QToolButton(text="Folder…", toolTip="Pick a diffusers or sharded model folder")
            dir_btn.clicked.connect(self._pick_dir)
            lay.addWidget(dir_btn)
        self._last = ""

    def text(self) -> str:
        return self.combo.currentText().strip()

    def set_text(self, text: str, emit: bool = True) -> None:
        self.combo.setEditText(text)
        if emit:
            self._emit()
        else:
            self._last = text.strip()

    def set_recent(self, recent: list[str]) -> None:
        cur = self.text()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(recent)
        self.combo.setEditText(cur)
        self.combo.blockSignals(False)

    def _emit(self, quiet: bool = False, again: bool = False) -> None:
        """Say the text changed (``again``: Enter, say it even if it did not, so the check is made in full)."""
        t = self.text()
        if t != self._last or again:
            self._last = t
            (self.edited if quiet else self.changed).emit(self.role, t)

    def _start_dir(self) -> str:
        t = self.text()
        return str(Path(t).parent) if t and Path(t).exists() else ""

    def _pick_file(self) -> None:
        filt = "Safetensors (*.safetensors *.safetensors.index.json);;All files (*)"
        path, _ = QFileDialog.getOpenFileName(self, f"Choose the {LABELS[self.role].lower()}", self._start_dir(), filt)
        if path:
            self.set_text(path)

    def _pick_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, f"Choose the {LABELS[self.role].lower()} folder",
                                                self._start_dir())
        if path:
            self.set_text(path)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() or event.mimeData().hasText():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        md = event.mimeData()
        urls = [u for u in md.urls() if u.isLocalFile()]
        text = urls[0].toLocalFile() if urls else md.text().strip()
        if text:
            self.set_text(text)
            event.acceptProposedAction()


class SourcesPanel(QGroupBox):
    """Three slots and a status line; asks for an inspection once all three are filled.

    Loads its last sources and recent lists from the settings and saves them back.
    """

    inspect_requested = Signal(str, str, str)
    inspect_quietly = Signal(str, str, str)     # all three filled, but the user may still be editing

    def __init__(self, gs, parent=None):
        super().__init__("1 · Sources", parent)
        self.gs = gs
        self.slots = {r: SourceSlot(r, gs.recent.get(r, [])) for r in ROLES}
        grid = QGridLayout()
        for row, r in enumerate(ROLES):
            lab = QLabel(LABELS[r])
            lab.setBuddy(self.slots[r].combo)
            grid.addWidget(lab, row, 0)
            grid.addWidget(self.slots[r], row, 1)
            self.slots[r].changed.connect(self._changed)
            self.slots[r].edited.connect(self._edited)
        self.demo_btn = QPushButton("Use demo inputs")
        self.demo_btn.setToolTip("Fill the three slots with the tiny bundled demo (a few seconds to convert)")
        self.inspect_btn = QPushButton("Inspect")
        self.inspect_btn.setToolTip("Match the three inputs and fill the layer table (no SVD)")
        self.inspect_btn.clicked.connect(self.request)
        self.status = QLabel("Pick a base model, its distilled target and a LoRA trained on the base.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addWidget(self.demo_btn)
        buttons.addStretch(1)
        buttons.addWidget(self.inspect_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        if gs.base or gs.target or gs.lora:
            self.set_values(gs.base, gs.target, gs.lora, inspect=False)

    def remember(self, *values: str) -> None:
        """Put the sources being inspected first in their recent lists."""
        for role, v in zip(ROLES, values, strict=True):
            self.gs.remember(role, v)
            self.slots[role].set_recent(self.gs.recent[role])

    def save_settings(self, gs) -> None:
        gs.base, gs.target, gs.lora = self.values()
        gs.recent = {r: list(v) for r, v in self.gs.recent.items()}

    def values(self) -> tuple[str, str, str]:
        return tuple(self.slots[r].text() for r in ROLES)

    def set_values(self, base: str, target: str, lora: str, inspect: bool = True) -> None:
        for r, v in zip(ROLES, (base, target, lora), strict=True):
            self.slots[r].set_text(str(v), emit=False)
        if inspect:
            self.request()

    def _changed(self, _role: str, _text: str) -> None:
        if all(self.values()):
            self.request()

    def _edited(self, _role: str, _text: str) -> None:
        if all(self.values()):
            self.request(quiet=True)

    def request(self, quiet: bool = False) -> None:
        """Ask for an inspection of the three inputs; ``quiet``: its problems are notes, not errors."""
        vals = self.values()
        missing = [LABELS[r] for r, v in zip(ROLES, vals, strict=True) if not v]
        if missing:
            self.show_status(f"Still missing: {', '.join(missing)}.", "" if quiet else "error")
            return
        (self.inspect_quietly if quiet else self.inspect_requested).emit(*vals)

    def show_status(self, text: str, kind: str = "") -> None:
        """The status line; ``kind`` 'error' shows it as one."""
        from . import theme

        c = theme.current()
        self.status.setText(text)
        self.status.setStyleSheet(f"QLabel {{ background: {c.error_bg}; color: {c.error_fg}; padding: 4px; "
                                  "border-radius: 3px; }" if kind == "error" else "")
