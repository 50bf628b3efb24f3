"""A method chooser and the form of its parameters, both made from the core's method registry.

Nothing here knows a method by name: the list is the registry, and each parameter's
spin box takes its label, bounds, step and help from the parameter's own description.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QWidget

from casa_core.api import TransferSettings, methods

# upper end of a spin box for a parameter with no upper bound
UNBOUNDED_MAX = 100.0


def method_combo(current: str | None = None) -> QComboBox:
    """Every registered method, by its label; the data is its name."""
    c = QComboBox()
    for m in methods.available():
        c.addItem(m.label, m.name)
        c.setItemData(c.count() - 1, m.title, Qt.ItemDataRole.ToolTipRole)
    c.setCurrentIndex(max(0, c.findData(current)))
    return c


def param_spin(info) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(info.minimum if info.minimum is not None else -UNBOUNDED_MAX,
               info.maximum if info.maximum is not None else UNBOUNDED_MAX)
    s.setDecimals(3)
    s.setSingleStep(info.step)
    s.setValue(info.default)
    s.setToolTip(info.help)
    s.setKeyboardTracking(False)
    return s


class ParamsForm(QWidget):
    """Spin boxes for every parameter any method takes; the chosen method's rows are shown."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.spins: dict[str, QDoubleSpinBox] = {}
        for name, info in methods.all_params().items():
            spin = param_spin(info)
            spin.valueChanged.connect(self.changed)
            self.form.addRow(info.label, spin)
            self.spins[name] = spin
        self.method = methods.names()[0]
        self.show_method(self.method)

    def show_method(self, name: str) -> None:
        """Show the rows of ``name``'s parameters only."""
        self.method = name
        own = {p.name for p in methods.get(name).Params.describe()}
        for pname, spin in self.spins.items():
            self.form.setRowVisible(spin, pname in own)

    def own(self) -> list[str]:
        return [p.name for p in methods.get(self.method).Params.describe()]

    def settings(self) -> TransferSettings:
        """The shown method with the shown values (validated: raises CasaError)."""
        return TransferSettings.of(self.method, **{n: self.spins[n].value() for n in self.own()})

    def show_settings(self, s: TransferSettings) -> None:
        """Show ``s`` without echoing it back as a change."""
        for spin in self.spins.values():
            spin.blockSignals(True)
        self.show_method(s.method)
        for name, value in s.params.to_dict().items():
            self.spins[name].setValue(value)
        for spin in self.spins.values():
            spin.blockSignals(False)

    def set_editable(self, editable: bool) -> None:
        for spin in self.spins.values():
            spin.setEnabled(editable)


def describe(s: TransferSettings) -> str:
    """``τ (tau) 0.3 · q_dom 0.5 ...`` (the method first when it is not the default)."""
    infos = {p.name: p for p in methods.get(s.method).Params.describe()}
    parts = [infos[k].text(v) for k, v in s.params.to_dict().items()]
    if s.method != methods.DEFAULT:
        parts.insert(0, methods.get(s.method).label)
    return " · ".join(parts) or methods.get(s.method).label
