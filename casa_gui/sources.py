"""The source slots (base, target and its distillation LoRAs, LoRA, the expert of a two-expert model):
free text, file/folder dialogs, drag and drop, recents."""

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
    QLineEdit,
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
    "target": "distilled model: file, folder or HF repo id (or leave empty: distillation LoRAs on the base)",
    "lora": "LoRA .safetensors trained on the base",
}
STACK_HINT = "distillation LoRAs: PATH[:STRENGTH]; PATH[:STRENGTH] ..."
NO_EXPERT = "(one transformer)"


def split_entries(text: str) -> list[str]:
    """The entries of a ``;``-separated list of distillation LoRAs (``PATH[:STRENGTH]`` each)."""
    return [part.strip() for part in (text or "").split(";") if part.strip()]


class TakesPaths:
    """A widget mixin: local files and folders dropped on it are announced by its ``dropped`` signal
    (a list of paths)."""

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.dropped.emit(paths)
            event.acceptProposedAction()


class DistillationSlot(TakesPaths, QWidget):
    """Distillation LoRAs (lightx2v, CausVid, Lightning ...) stacked on the target, each with a strength.

    Typed as ``PATH[:STRENGTH]`` entries separated by ``;`` (a strength of 1 may be left out), or added
    with the file dialog; with no target checkpoint they stack on the base.
    """

    changed = Signal()      # Enter, a file added or dropped
    edited = Signal()       # the field lost the focus with new text: maybe not done yet
    dropped = Signal(list)  # files dropped on it: added, each at strength 1

    def __init__(self, parent=None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(STACK_HINT)
        self.edit.setToolTip("Distillation LoRAs that make the target: stacked on the distilled target, or on the "
                             "base when the target is left empty.\nOne or more PATH[:STRENGTH] entries separated by "
                             "';' (strength 1 when left out), e.g. lightx2v_rank64.safetensors:1")
        self.edit.returnPressed.connect(self.changed.emit)
        self.edit.editingFinished.connect(self._finished)
        self._last: list[str] = []
        add = QToolButton(text="Add…", toolTip="Add distillation LoRA files (strength 1; edit it in the text)")
        add.clicked.connect(self._pick)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(add)
        self.setAcceptDrops(True)
        self.dropped.connect(self._add_all)

    def _finished(self) -> None:
        if self.entries() != self._last:
            self._last = self.entries()
            self.edited.emit()

    def entries(self) -> list[str]:
        return split_entries(self.edit.text())

    def set_entries(self, entries) -> None:
        """Fill the field; a focus change after it is no edit (nothing to inspect again)."""
        self.edit.setText("; ".join(entries))
        self._last = self.entries()

    def add(self, path: str, strength: float = 1.0) -> None:
        self.set_entries([*self.entries(), path if strength == 1 else f"{path}:{strength:g}"])
        self.changed.emit()

    def _add_all(self, paths: list[str]) -> None:
        for p in paths:
            self.add(p)

    def _pick(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Choose distillation LoRAs", "",
                                                "Safetensors (*.safetensors);;All files (*)")
        self._add_all(paths)


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

    # base, target, lora, distillation LoRAs (list of PATH[:STRENGTH]), expert (None: one transformer)
    inspect_requested = Signal(str, str, str, object, object)
    inspect_quietly = Signal(str, str, str, object, object)     # all filled, but the user may still be editing

    def __init__(self, gs, parent=None):
        super().__init__("1 · Sources", parent)
        self.gs = gs
        self.slots = {r: SourceSlot(r, gs.recent.get(r, [])) for r in ROLES}
        self.stack = DistillationSlot()
        self.stack.set_entries(gs.target_loras)
        self.stack.changed.connect(lambda: self._changed("target_loras", ""))
        self.stack.edited.connect(lambda: self._edited("target_loras", ""))
        self.expert = QComboBox()
        self.expert.addItems([NO_EXPERT, "high", "low"])
        self.expert.setToolTip("Two-expert models (Wan2.2 A14B): the expert the LoRA was trained for "
                               "(high-noise or low-noise); a LoRA pair converts once per expert")
        self.expert.activated.connect(lambda _i: self._changed("expert", ""))
        self.expert_label = QLabel("Expert")
        self.expert_label.setBuddy(self.expert)
        grid = QGridLayout()
        row = 0
        for r in ROLES:
            lab = QLabel(LABELS[r])
            lab.setBuddy(self.slots[r].combo)
            grid.addWidget(lab, row, 0)
            grid.addWidget(self.slots[r], row, 1)
            self.slots[r].changed.connect(self._changed)
            self.slots[r].edited.connect(self._edited)
            row += 1
            if r == "target":
                stack_label = QLabel("  + distillation LoRAs")
                stack_label.setBuddy(self.stack.edit)
                grid.addWidget(stack_label, row, 0)
                grid.addWidget(self.stack, row, 1)
                row += 1
        grid.addWidget(self.expert_label, row, 0)
        grid.addWidget(self.expert, row, 1, Qt.AlignmentFlag.AlignLeft)
        if gs.expert in ("high", "low"):
            self.expert.setCurrentText(gs.expert)
        self._show_expert()
        self.demo_btn = QPushButton("Use demo inputs")
        self.demo_btn.setToolTip("Fill the three slots with the tiny bundled demo (a few seconds to convert)")
        self.inspect_btn = QPushButton("Inspect")
        self.inspect_btn.setToolTip("Match the three inputs and fill the layer table (no SVD)")
        self.inspect_btn.clicked.connect(self.request)
        self.status = QLabel("Pick a base model, its distilled target (a checkpoint, distillation LoRAs, or both) "
                             "and a LoRA trained on the base.")
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
        gs.target_loras = self.stack.entries()
        gs.expert = self.chosen_expert() or ""
        gs.recent = {r: list(v) for r, v in self.gs.recent.items()}

    def values(self) -> tuple[str, str, str]:
        return tuple(self.slots[r].text() for r in ROLES)

    def chosen_expert(self) -> str | None:
        text = self.expert.currentText()
        return None if text == NO_EXPERT else text

    def set_values(self, base: str, target: str, lora: str, target_loras=None, expert: str | None = None, *,
                   inspect: bool = True) -> None:
        """Fill the slots (``target_loras`` / ``expert`` None: left as they are) and, with ``inspect``, ask."""
        for r, v in zip(ROLES, (base, target, lora), strict=True):
            self.slots[r].set_text(str(v), emit=False)
        if target_loras is not None:
            self.stack.set_entries([str(e) for e in target_loras])
        if expert is not None:
            self.expert.setCurrentText(expert or NO_EXPERT)
        self._show_expert()
        if inspect:
            self.request()

    def _experts(self) -> list[str]:
        from casa_core.api import expert_choices

        vals = self.values()
        return expert_choices(vals[0]) or expert_choices(vals[1])

    def _show_expert(self) -> None:
        """The expert choice is offered when a model given is a two-expert folder (or a repo asked for one)."""
        self.offer_expert(bool(self._experts()) or self.expert.currentText() != NO_EXPERT)

    def offer_expert(self, shown: bool = True) -> None:
        """Show the expert choice (e.g. an inspection said the sources hold two experts), or hide it."""
        self.expert.setVisible(shown)
        self.expert_label.setVisible(shown)

    def _ready(self) -> bool:
        base, target, lora = self.values()
        return bool(base and lora and (target or self.stack.entries()))

    def _changed(self, _role: str, _text: str) -> None:
        self._show_expert()
        if self._ready():
            self.request()

    def _edited(self, _role: str, _text: str) -> None:
        self._show_expert()
        if self._ready():
            self.request(quiet=True)

    def request(self, quiet: bool = False) -> None:
        """Ask for an inspection of the three inputs; ``quiet``: its problems are notes, not errors."""
        vals = self.values()
        missing = [LABELS[r] for r, v in zip(ROLES, vals, strict=True)
                   if not v and not (r == "target" and self.stack.entries())]
        if missing:
            self.show_status(f"Still missing: {', '.join(missing)}"
                             + (" (or distillation LoRAs on the base)" if not vals[1] else "") + ".",
                             "" if quiet else "error")
            return
        (self.inspect_quietly if quiet else self.inspect_requested).emit(*vals, self.stack.entries(),
                                                                          self.chosen_expert())

    def show_status(self, text: str, kind: str = "") -> None:
        """The status line; ``kind`` 'error' shows it as one."""
        from . import theme

        c = theme.current()
        self.status.setText(text)
        self.status.setStyleSheet(f"QLabel {{ background: {c.error_bg}; color: {c.error_fg}; padding: 4px; "
                                  "border-radius: 3px; }" if kind == "error" else "")
