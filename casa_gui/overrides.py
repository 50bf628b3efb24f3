"""The Override panel: a method's parameters for the selected layer only, or for all layers; the overrides."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from casa_core.api import CasaError, TransferSettings

from .params_form import ParamsForm, describe, method_combo


class OverridePanel(QGroupBox):
    """Edits a method and its parameters; applies them to one layer or as the global settings."""

    apply_layer = Signal(str, object)      # module, TransferSettings
    apply_all = Signal(object)             # TransferSettings
    remove = Signal(str)                   # module

    def __init__(self, state, parent=None):
        super().__init__("3 · Override", parent)
        self.module: str | None = None
        self._layer_ok = False
        self.base = TransferSettings()
        self.layer_label = QLabel("Select a layer (after a run) to tune it alone.")
        self.layer_label.setWordWrap(True)
        self.method = method_combo()
        self.params = ParamsForm()
        self.method.currentIndexChanged.connect(self._switch_method)
        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow(self.params)
        self.layer_btn = QPushButton("Apply to this layer")
        self.layer_btn.setToolTip("Re-arbitrate the selected layer from its cached spectra (no new SVD)")
        self.all_btn = QPushButton("Apply to all layers")
        self.all_btn.setToolTip("Make these the global thresholds and rerun every layer without an override")
        self.layer_btn.clicked.connect(self._apply_layer)
        self.all_btn.clicked.connect(lambda: self.apply_all.emit(self.values()))
        buttons = QHBoxLayout()
        buttons.addWidget(self.layer_btn)
        buttons.addWidget(self.all_btn)
        self.list = QListWidget()
        self.list.setToolTip("Per-layer overrides; they go into the run report and the output's metadata")
        self.list.setMaximumHeight(110)
        self.remove_btn = QPushButton("Remove override")
        self.remove_btn.clicked.connect(self._remove)
        self.list.itemSelectionChanged.connect(
            lambda: self.remove_btn.setEnabled(bool(self.list.selectedItems()) and self._enabled))
        self.remove_btn.setEnabled(False)
        lay = QVBoxLayout(self)
        lay.addWidget(self.layer_label)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(QLabel("Per-layer overrides:"))
        lay.addWidget(self.list)
        lay.addWidget(self.remove_btn)
        self._enabled = True
        self._show(None, TransferSettings(), False, False)
        state.job_changed.connect(lambda _name: self.set_enabled(not state.running))

    def values(self) -> TransferSettings:
        """The shown method and values (raises CasaError when the method refuses them)."""
        return self.params.settings()

    def _switch_method(self, *_args) -> None:
        method = self.method.currentData()
        self.params.show_settings(self.base if method == self.base.method else self.base.with_(method=method))

    def show_layer(self, info) -> None:
        """Show the selected layer (a controller.LayerInfo) and the thresholds it runs with."""
        self._show(info.module, info.settings, info.tunable, info.overridden)

    def _show(self, module: str | None, settings: TransferSettings, has_result: bool, overridden: bool) -> None:
        self.module = module
        self.base = settings
        self.method.blockSignals(True)
        self.method.setCurrentIndex(max(0, self.method.findData(settings.method)))
        self.method.blockSignals(False)
        self.params.show_settings(settings)
        if module is None:
            self.layer_label.setText("Select a layer (after a run) to tune it alone.")
        else:
            self.layer_label.setText(f"<b>{module}</b>" + (" (overridden)" if overridden else ""))
        self._layer_ok = module is not None and has_result
        self._refresh_enabled()

    def set_enabled(self, enabled: bool) -> None:
        self._enabled = enabled
        self._refresh_enabled()

    def _refresh_enabled(self) -> None:
        self.layer_btn.setEnabled(self._enabled and self._layer_ok)
        self.all_btn.setEnabled(self._enabled)
        self.remove_btn.setEnabled(self._enabled and bool(self.list.selectedItems()))

    def set_overrides(self, overrides: dict[str, TransferSettings]) -> None:
        self.list.clear()
        for module, s in sorted(overrides.items()):
            item = QListWidgetItem(f"{module}: {describe(s)}")
            item.setData(Qt.ItemDataRole.UserRole, module)
            self.list.addItem(item)
        self._refresh_enabled()

    def _apply_layer(self) -> None:
        if self.module is None:
            return
        try:
            s = self.values()
        except CasaError as exc:
            self.layer_label.setText(str(exc))
            return
        self.apply_layer.emit(self.module, s)

    def _remove(self) -> None:
        for item in self.list.selectedItems():
            self.remove.emit(item.data(Qt.ItemDataRole.UserRole))
