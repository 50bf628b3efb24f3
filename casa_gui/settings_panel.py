"""The Convert panel: method, thresholds, output rank, device, precision; Convert and Cancel."""

from __future__ import annotations

from dataclasses import replace

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

from casa_core.settings import PRECISIONS, TransferSettings

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
    """Global settings and the run controls, bound to the shared state; loads and saves its own settings."""

    convert_clicked = Signal()
    cancel_clicked = Signal()

    def __init__(self, gs, state, parent=None):
        super().__init__("2 · Convert", parent)
        self.state = state
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
        # widgets -> state, then state -> widgets
        self._push_settings()
        state.rank = self.rank.currentText()
        self._push_device()
        for w in (self.tau, self.q_dom, self.q_act):
            w.valueChanged.connect(self._push_settings)
        self.method.currentIndexChanged.connect(self._push_settings)
        self.device.currentIndexChanged.connect(self._push_device)
        self.precision.currentIndexChanged.connect(self._push_device)
        self.rank.currentTextChanged.connect(lambda t: setattr(state, "rank", t))
        state.settings_changed.connect(self._show_settings)
        state.rank_changed.connect(lambda t: set_text_quietly(self.rank, t))
        state.job_changed.connect(lambda _name: self.set_running(state.running))
        self._method_changed()

    def _push_settings(self, *_args) -> None:
        self.state.settings = replace(self.state.settings, method=self.method.currentData(), tau=self.tau.value(),
                                      q_dom=self.q_dom.value(), q_act=self.q_act.value())
        self._method_changed()

    def _push_device(self, *_args) -> None:
        self.state.device = self.device.currentData()
        self.state.precision = self.precision.currentText()

    def _show_settings(self, s: TransferSettings) -> None:
        widgets = (self.method, self.tau, self.q_dom, self.q_act)
        for w in widgets:
            w.blockSignals(True)
        self.method.setCurrentIndex(max(0, self.method.findData(s.method)))
        for w, v in ((self.tau, s.tau), (self.q_dom, s.q_dom), (self.q_act, s.q_act)):
            w.setValue(v)
        for w in widgets:
            w.blockSignals(False)
        self._method_changed()

    def _method_changed(self) -> None:
        casa = self.method.currentData() == "casa"
        for w in (self.tau, self.q_dom, self.q_act):
            w.setEnabled(casa and not self.state.running)

    def rank_text(self) -> str:
        return self.rank.currentText().strip()

    def set_running(self, running: bool) -> None:
        self.convert_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        for w in (self.method, self.rank, self.device, self.precision):
            w.setEnabled(not running)
        self._method_changed()

    def show_progress(self, done: int, total: int, eta: float) -> None:
        """A run's progress; ``eta < 0``: it is starting."""
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"layer {done}/{total}")
        self.eta.setText("starting…" if eta < 0 else f"ETA {eta:.0f} s" if done < total else "finishing…")

    def save_settings(self, gs) -> None:
        s = self.state.settings
        gs.method, gs.tau, gs.q_dom, gs.q_act = s.method, s.tau, s.q_dom, s.q_act
        gs.rank = self.rank_text()
        gs.device = self.device.currentData()
        gs.precision = self.precision.currentText()


def set_text_quietly(combo: QComboBox, text: str) -> None:
    """Show ``text`` in an editable combo without echoing it back as a change."""
    if combo.currentText() != text:
        combo.blockSignals(True)
        combo.setEditText(text)
        combo.blockSignals(False)
