"""The Export panel: format, rank, dtype and path; writes through the core exporter."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
)

from casa_core.api import DTYPES, FORMATS

from .settings_panel import rank_combo, set_text_quietly

FORMAT_LABELS = {"same": "Same as input", "comfy": "ComfyUI", "kohya": "kohya", "diffusers": "diffusers"}


class ExportPanel(QGroupBox):
    """Format, rank, dtype and file, bound to the shared state; loads and saves its own settings."""

    export_clicked = Signal()
    note = Signal(str, str)             # kind, text: for the window's message bar

    def __init__(self, gs, state, parent=None):
        super().__init__("4 · Export", parent)
        self.state = state
        self.export_dir = gs.export_dir
        self.format = QComboBox()
        for f in FORMATS:
            self.format.addItem(FORMAT_LABELS[f], f)
        self.format.setCurrentIndex(max(0, self.format.findData(gs.out_format)))
        self.dtype = QComboBox()
        self.dtype.addItems(DTYPES)
        self.dtype.setCurrentText(gs.out_dtype)
        self.rank = rank_combo(state.rank)
        self.path = QLineEdit()
        self.path.setPlaceholderText("converted LoRA .safetensors")
        browse = QToolButton(text="…", toolTip="Choose where to write the converted LoRA")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("Rank", self.rank)
        form.addRow("Dtype", self.dtype)
        form.addRow("File", path_row)
        self.export_btn = QPushButton("Export")
        self.export_btn.setToolTip("Write the converted LoRA (atomic, with provenance metadata) (Ctrl+E)")
        self.export_btn.clicked.connect(self.export_clicked)
        self.open_btn = QPushButton("Open folder")
        self.open_btn.setEnabled(False)
        self.open_btn.clicked.connect(self._open_folder)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.write_report = QCheckBox("Also write the run report (.report.json)")
        self.write_report.setChecked(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_btn, 1)
        buttons.addWidget(self.open_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.summary)
        lay.addWidget(self.write_report)
        self._written: Path | None = None
        self._suggested = ""            # the file name last proposed; replaced when the inputs change
        self._push_formats()
        self.format.currentIndexChanged.connect(self._push_formats)
        self.dtype.currentIndexChanged.connect(self._push_formats)
        self.path.textChanged.connect(lambda t: setattr(state, "output", t))
        state.output_changed.connect(lambda t: self.path.text() != t and self.path.setText(t))
        self.rank.currentTextChanged.connect(lambda t: setattr(state, "rank", t))
        state.rank_changed.connect(lambda t: set_text_quietly(self.rank, t))
        state.job_changed.connect(lambda _name: self.export_btn.setEnabled(not state.running))

    def _push_formats(self, *_args) -> None:
        self.state.out_format = self.format.currentData()
        self.state.out_dtype = self.dtype.currentText()

    def output(self) -> str:
        return self.path.text().strip()

    def wants_report(self) -> bool:
        return self.write_report.isChecked()

    def suggest_output(self, plan) -> None:
        """Once a plan is ready, propose ``<lora>-<target>-casa.safetensors``, in the folder of the file set or
        the last export folder; a name the user typed stays, one proposed for other inputs follows the new ones."""
        if plan is None:
            return
        current = self.output()
        if current and current != self._suggested:
            return
        lora = Path(plan.lora.path)
        if current:
            folder = Path(current).parent
        elif self.export_dir and Path(self.export_dir).is_dir():
            folder = Path(self.export_dir)
        else:
            folder = lora.parent
        if not os.access(folder, os.W_OK):
            folder = Path.home()
        self._suggested = str(folder / suggested_name(plan))
        self.path.setText(self._suggested)

    def remember_folder(self, output: str) -> None:
        self.export_dir = str(Path(output).parent)

    def save_settings(self, gs) -> None:
        gs.out_format = self.format.currentData()
        gs.out_dtype = self.dtype.currentText()
        gs.export_dir = self.export_dir

    def _browse(self) -> None:
        start = self.output() or str(Path.home() / "converted-lora.safetensors")
        path, _ = QFileDialog.getSaveFileName(self, "Write the converted LoRA", start, "Safetensors (*.safetensors)")
        if path:
            if not path.endswith(".safetensors"):
                path += ".safetensors"
            self.path.setText(path)

    def show_written(self, info, energies: list[float]) -> None:
        self._written = Path(info.path)
        mb = info.bytes / 1e6
        size = f"{mb:.1f} MB" if mb >= 0.1 else f"{info.bytes / 1e3:.1f} kB"
        e = (f"; energy kept min {min(energies):.3f}, mean {sum(energies) / len(energies):.3f}"
             if energies else "")
        self.summary.setText(f"Wrote <b>{self._written.name}</b>: {info.format}, {info.tensors} tensors, "
                             f"{size}{e} (per layer: Energy kept column, Overview tab).")
        self.open_btn.setEnabled(True)

    def _open_folder(self) -> None:
        if self._written is None:
            return
        folder = str(self._written.parent)
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(folder)):
            self.note.emit("info", f"No file manager could open the folder; the file is {self._written}")


def source_name(src) -> str:
    """A short name for a model or LoRA source: a file's stem, a folder's name (its parent's, for a diffusers
    ``transformer`` folder or a sharded checkpoint's index), a hub repo's name."""
    if getattr(src, "from_hub", False):
        return str(src.identity).split("@")[0].split(":")[0].rstrip("/").split("/")[-1]
    p = Path(src.path)
    if p.name.endswith(".index.json") or p.name in ("transformer", "model_index.json"):
        p = p.parent
        if p.name == "transformer":
            p = p.parent
    name = p.name
    for ext in (".safetensors", ".pt", ".pth", ".ckpt"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def suggested_name(plan) -> str:
    """``<lora>-<target>-casa.safetensors`` for a plan: the name follows the LoRA and the target."""
    lora, target = source_name(plan.lora), source_name(plan.target)
    return f"{lora}-{target}-casa.safetensors"
