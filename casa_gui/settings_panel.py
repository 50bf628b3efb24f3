"""The Convert panel: method and its parameters, output rank, device, precision; Convert and Cancel."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from casa_core.api import PRECISIONS, CasaError, TransferSettings

from .devices import list_devices
from .params_form import ParamsForm, method_combo

RANKS = ("same", "4", "8", "16", "32", "64", "128", "full", "auto:0.9", "auto:0.95")
RANK_TIP = ("output rank: 'same' keeps the LoRA's rank, 'full' is exact (large files), 'auto:0.9' picks per layer "
            "the smallest rank keeping 90% of the update (at most 4x the LoRA's rank; the Rank page shows the curve)")


def rank_combo(value: str) -> QComboBox:
    c = QComboBox()
    c.setEditable(True)
    c.addItems(RANKS)
    c.setEditText(value or "same")
    c.setToolTip(RANK_TIP)
    return c


class ConvertPanel(QGroupBox):
    """Global settings and the run controls, bound to the shared state; loads and saves its own settings."""

    convert_clicked = Signal()
    cancel_clicked = Signal()

    def __init__(self, gs, state, parent=None):
        super().__init__("2 · Convert", parent)
        self.state = state
        start = gs.transfer_settings()
        self.method = method_combo(start.method)
        self.params = ParamsForm()
        self.params.show_settings(start)
        self._remembered = dict(gs.params)      # each method's last values, for switching back
        self.rank = rank_combo(gs.rank)
        self.device = QComboBox()
        for d in list_devices():
            self.device.addItem(d.label, d.id)
        self.device.setCurrentIndex(max(0, self.device.findData(gs.device)))
        self.device.setToolTip("where the SVDs run; every CUDA device is listed with its free memory")
        # a long CPU or GPU name must not widen the panel (the list shows it in full)
        self.device.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.device.setMinimumContentsLength(14)
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setCurrentText(gs.precision)
        self.precision.setToolTip("auto: float32 with exact checks; float64 is slower and exact")
        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow(self.params)
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
        self.params.changed.connect(self._push_settings)
        self.method.currentIndexChanged.connect(self._switch_method)
        self.device.currentIndexChanged.connect(self._push_device)
        self.precision.currentIndexChanged.connect(self._push_device)
        self.rank.currentTextChanged.connect(lambda t: setattr(state, "rank", t))
        state.settings_changed.connect(self._show_settings)
        state.rank_changed.connect(lambda t: set_text_quietly(self.rank, t))
        state.job_changed.connect(lambda _name: self.set_running(state.running))
        self._refresh_enabled()

    def _switch_method(self, *_args) -> None:
        """Another method: its remembered (or default) values."""
        self._remembered[self.state.settings.method] = self.state.settings.params.to_dict()
        method = self.method.currentData()
        try:
            s = TransferSettings.of(method, **self._remembered.get(method, {}))
        except CasaError:
            s = TransferSettings.of(method)
        self.params.show_settings(s)
        self._push_settings()

    def _push_settings(self, *_args) -> None:
        try:
            self.state.settings = self.params.settings()
        except CasaError:   # the spin boxes keep values in range; a method may still refuse a combination
            pass
        self._refresh_enabled()

    def _push_device(self, *_args) -> None:
        self.state.device = self.device.currentData()
        self.state.precision = self.precision.currentText()

    def _show_settings(self, s: TransferSettings) -> None:
        self.method.blockSignals(True)
        self.method.setCurrentIndex(max(0, self.method.findData(s.method)))
        self.method.blockSignals(False)
        self.params.show_settings(s)
        self._refresh_enabled()

    def _refresh_enabled(self) -> None:
        self.params.set_editable(not self.state.running)

    def rank_text(self) -> str:
        return self.rank.currentText().strip()

    def set_running(self, running: bool) -> None:
        self.convert_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        for w in (self.method, self.rank, self.device, self.precision):
            w.setEnabled(not running)
        self._refresh_enabled()

    def show_progress(self, done: int, total: int, eta: float) -> None:
        """A run's progress; ``eta < 0``: it is starting."""
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"layer {done}/{total}")
        self.eta.setText("starting…" if eta < 0 else f"ETA {eta:.0f} s" if done < total else "finishing…")

    def reset_progress(self, *_args) -> None:
        """No run for what is shown now (new inputs): the last run's 'layer 32/32, done' goes."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.eta.setText("")

    def save_settings(self, gs) -> None:
        gs.params = {**gs.params, **self._remembered}
        gs.keep_settings(self.state.settings)
        gs.rank = self.rank_text()
        gs.device = self.device.currentData()
        gs.precision = self.precision.currentText()


def set_text_quietly(combo: QComboBox, text: str) -> None:
    """Show ``text`` in an editable combo without echoing it back as a change."""
    if combo.currentText() != text:
        combo.blockSignals(True)
        combo.setEditText(text)
        combo.blockSignals(False)
