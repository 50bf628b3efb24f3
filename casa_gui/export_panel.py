"""The Export panel: format, rank, dtype and path; writes through the core exporter."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
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

from casa_core.settings import DTYPES, FORMATS

from .settings_panel import rank_combo

FORMAT_LABELS = {"same": "Same as input", "comfy": "ComfyUI", "kohya": "kohya", "diffusers": "diffusers"}


class ExportPanel(QGroupBox):
    export_clicked = Signal()

    def __init__(self, gs, parent=None):
        super().__init__("4 · Export", parent)
        self.format = QComboBox()
        for f in FORMATS:
            self.format.addItem(FORMAT_LABELS[f], f)
        self.format.setCurrentIndex(max(0, self.format.findData(gs.out_format)))
        self.dtype = QComboBox()
        self.dtype.addItems(DTYPES)
        self.dtype.setCurrentText(gs.out_dtype)
        self.rank = rank_combo(gs.rank)
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
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_btn, 1)
        buttons.addWidget(self.open_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.summary)
        self._written: Path | None = None

    def output(self) -> str:
        return self.path.text().strip()

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
        if self._written is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._written.parent)))
