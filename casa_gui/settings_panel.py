"""The Convert panel: method, thresholds, output rank, device, precision; Convert and Cancel."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from casa_core.errors import CasaError
from casa_core.settings import PRECISIONS, RunOptions, TransferSettings, parse_rank

from .devices import list_devices

RANKS = ("same", "4", "8", "16", "32", "64", "128", "full")
TIPS = {
    "tau": "cluster linking threshold: how strongly two routing directions must couple to share a cluster",
    "q_dom": "dominance quantile: clusters above it make their rows and columns dominant",
    "q_act": "capping quantile of the risk score: entries above it are capped",
    "rank": "output rank: 'same' keeps the LoRA's rank, 'full' is exact (large files)",
}


def threshold_spin(value: float, maximum: float, tip: str) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(0.0, maximum)
    s.setDecimals(3)
    s.setSingleStep(0.05)
    s.setValue(value)
    s.setToolTip(tip)
    s.setKeyboardTracking(False)
    return s


def rank_combo(value: str) -> QComboBox:
    c = QComboBox()
    c.setEditable(True)
    c.addItems(RANKS)
    c.setEditText(value or "same")
    c.setToolTip(TIPS["rank"])
    return c


class ConvertPanel(QGroupBox):
    """Global settings and the run controls."""

    convert_clicked = Signal()
    cancel_clicked = Signal()
    changed = Signal()

    def __init__(self, gs, parent=None):
        super().__init__("2 · Convert", parent)
        self.method = QComboBox()
        self.method.addItem("CASA (spectral arbitration)", "casa")
        self.method.addItem("Direct (reuse the LoRA as is)", "direct")
        self.method.setCurrentIndex(max(0, self.method.findData(gs.method)))
        self.tau = threshold_spin(gs.tau, 100.0, TIPS["tau"])
        self.q_dom = threshold_spin(gs.q_dom, 1.0, TIPS["q_dom"])
        self.q_act = threshold_spin(gs.q_act, 1.0, TIPS["q_act"])
        self.rank = rank_combo(gs.rank)
        self.device = QComboBox()
        for d in list_devices():
            self.device.addItem(d.label, d.id)
        self.device.setCurrentIndex(max(0, self.device.findData(gs.device)))
        self.device.setToolTip("where the SVDs run; every CUDA device is listed with its free memory")
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setCurrentText(gs.precision)
        self.precision.setToolTip("auto: float32 with exact checks; float64 is slower and exact")
        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow("τ (tau)", self.tau)
        form.addRow("q_dom", self.q_dom)
        form.addRow("q_act", self.q_act)
        form.addRow("Output rank", self.rank)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        self.convert_btn = QPushButton("Convert")
        self.convert_btn.setToolTip("Run the transfer on every layer (Ctrl+R)")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop after the current layer; nothing is written (Esc)")
        self.cancel_btn.setEnabled(False)
        self.convert_btn.clicked.connect(self.convert_clicked)
        self.cancel_btn.clicked.connect(self.cancel_clicked)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.eta = QLabel("")
        buttons = QHBoxLayout()
        buttons.addWidget(self.convert_btn, 1)
        buttons.addWidget(self.cancel_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.eta)
        for w in (self.tau, self.q_dom, self.q_act):
            w.valueChanged.connect(self.changed)
        for w in (self.method, self.device, self.precision):
            w.currentIndexChanged.connect(self.changed)
        self.rank.currentTextChanged.connect(self.changed)
        self.method.currentIndexChanged.connect(self._method_changed)
        self._method_changed()

    def _method_changed(self) -> None:
        casa = self.method.currentData() == "casa"
        for w in (self.tau, self.q_dom, self.q_act):
            w.setEnabled(casa)

    def settings(self) -> TransferSettings:
        return TransferSettings(self.method.currentData(), self.tau.value(), self.q_dom.value(),
                                self.q_act.value()).validate()

    def set_thresholds(self, s: TransferSettings) -> None:
        for w, v in ((self.tau, s.tau), (self.q_dom, s.q_dom), (self.q_act, s.q_act)):
            w.blockSignals(True)
            w.setValue(v)
            w.blockSignals(False)
        self.changed.emit()

    def rank_text(self) -> str:
        return self.rank.currentText().strip()

    def options(self, out_format: str = "same", out_dtype: str = "same") -> RunOptions:
        """The run options; raises CasaError for a rank that is not a number, 'same' or 'full'."""
        return RunOptions(rank=parse_rank(self.rank_text()), device=self.device.currentData(),
                          precision=self.precision.currentText(), out_format=out_format,
                          out_dtype=out_dtype).validate()

    def options_or_none(self):
        try:
            return self.options()
        except CasaError:
            return None

    def set_running(self, running: bool) -> None:
        self.convert_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        for w in (self.method, self.tau, self.q_dom, self.q_act, self.rank, self.device, self.precision):
            w.setEnabled(not running and (w not in (self.tau, self.q_dom, self.q_act)
                                          or self.method.currentData() == "casa"))
