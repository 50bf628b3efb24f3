"""What the panels share, one field each, each with its own change signal.

The selected layer, the global transfer settings, the run and export options and the
name of the running job live here and nowhere else: panels write the fields their
widgets edit and follow the fields they show; the controller reads them to start jobs.
Setting a field to the value it has emits nothing, so two-way bindings do not loop.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from casa_core.api import CasaError, RunOptions, TransferSettings, parse_rank

from .qt_compat import pin_singletons

# jobs the user did not ask for: what the user asks for next stops them
BACKGROUND_JOBS = ("inspection", "layer cache")


def _field(name: str):
    def get(self):
        return self._values[name]

    def put(self, value) -> None:
        if self._values[name] != value:
            self._values[name] = value
            getattr(self, f"{name}_changed").emit(value)

    return property(get, put, doc=f"the shared {name}; setting it emits {name}_changed")


class AppState(QObject):
    """The evented state of one window."""

    # payloads may be None (no layer): qt_compat keeps that safe on PySide6 6.12 / Python 3.11
    selected_changed = Signal(object)       # module | None
    settings_changed = Signal(object)       # TransferSettings (method and thresholds; not validated)
    rank_changed = Signal(str)              # 'same', 'full' or a number, as typed
    device_changed = Signal(str)
    precision_changed = Signal(str)
    out_format_changed = Signal(str)
    out_dtype_changed = Signal(str)
    output_changed = Signal(str)            # where the export writes
    job_changed = Signal(str)               # the running job's name, '' when idle
    status_changed = Signal(str)            # the status line

    selected = _field("selected")
    settings = _field("settings")
    rank = _field("rank")
    device = _field("device")
    precision = _field("precision")
    out_format = _field("out_format")
    out_dtype = _field("out_dtype")
    output = _field("output")
    job = _field("job")
    status = _field("status")

    def __init__(self, parent: QObject | None = None):
        pin_singletons()
        super().__init__(parent)
        self._values = {"selected": None, "settings": TransferSettings(), "rank": "same", "device": "auto",
                        "precision": "auto", "out_format": "same", "out_dtype": "same", "output": "",
                        "job": "", "status": "Ready."}

    @property
    def running(self) -> bool:
        """A job the user asked for runs (background work does not count)."""
        return bool(self.job) and self.job not in BACKGROUND_JOBS

    def select(self, module: str | None) -> None:
        self.selected = module

    def run_options(self) -> RunOptions:
        """The run and export options; raises CasaError for a rank that is not a number, 'same' or 'full'."""
        return RunOptions(rank=parse_rank(self.rank.strip()), device=self.device, precision=self.precision,
                          out_format=self.out_format, out_dtype=self.out_dtype).validate()

    def run_options_or_none(self) -> RunOptions | None:
        try:
            return self.run_options()
        except CasaError:
            return None
