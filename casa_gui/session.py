"""What the window is working on: the open conversion, what the window shows of it, the overrides.

No Qt and no CASA math. The job functions here are the generators the worker runs; each
one is a thin call into the core's ``Conversion`` and honours the cancel flag between layers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from casa_core.api import Batch, Cancelled, CasaError, Conversion, RunOptions, TransferSettings

GUI_VIEW_SIZE = 128


@dataclass(frozen=True)
class PlanReady:
    conversion: Conversion


@dataclass(frozen=True)
class DriftReady:
    module: str
    drift: float


@dataclass(frozen=True)
class Rearbitrated:
    module: str
    result: object         # LayerResult


@dataclass(frozen=True)
class StateReady:
    module: str


@dataclass(frozen=True)
class Exported:
    info: object                        # ExportInfo
    report: Path | None = None          # the run report written beside it
    report_error: str | None = None     # why the report could not be written


@dataclass
class Session:
    """The open conversion and what the window shows of it.

    ``results`` is the window's own copy, filled on the GUI thread from what the jobs
    yield (the conversion fills its own in the worker thread); ``overrides`` are the
    user's per-layer settings, given to every run.
    """
    conversion: Conversion | None = None
    drift: dict[str, float] = field(default_factory=dict)
    results: dict = field(default_factory=dict)                 # module -> LayerResult
    overrides: dict[str, TransferSettings] = field(default_factory=dict)
    run_settings: TransferSettings | None = None                # what ``results`` were computed with
    run_options: RunOptions | None = None
    run_seconds: float | None = None                            # how long that run took
    compared: dict = field(default_factory=dict)                # method -> module -> LayerResult (Compare)
    inputs: tuple[str, str, str] | None = None                  # base, target, LoRA as they were inspected
    stack: tuple = ((), None)               # the target's distillation LoRAs and the expert, as inspected
    cancelled_run: tuple | None = None      # (settings, options) of a cancelled run whose results are kept

    @property
    def plan(self):
        return self.conversion.plan if self.conversion is not None else None

    def reset(self) -> None:
        self.conversion = None
        self.drift.clear()
        self.results.clear()
        self.overrides.clear()
        self.compared.clear()
        self.run_settings = self.run_options = self.run_seconds = None
        self.inputs = self.cancelled_run = None
        self.stack = ((), None)

    def resumable(self, settings: TransferSettings, options: RunOptions) -> dict:
        """The results a run with ``settings`` and ``options`` may keep: those of a cancelled run made with them."""
        if self.cancelled_run != (settings, options) or self.complete:
            return {}
        return dict(self.results)

    @property
    def complete(self) -> bool:
        return self.plan is not None and all(lp.module in self.results for lp in self.plan.layers)

    def index_of(self, module: str) -> int:
        for i, lp in enumerate(self.plan.layers if self.plan else []):
            if lp.module == module:
                return i
        return -1

    def settings_for(self, module: str, default: TransferSettings) -> TransferSettings:
        return self.overrides.get(module, default)

    def options(self, base: RunOptions) -> RunOptions:
        """``base`` with the GUI's view options and the current per-layer overrides."""
        return replace(base, spectra=True, view_size=GUI_VIEW_SIZE, overrides=dict(self.overrides))

    def stale(self, settings: TransferSettings, options: RunOptions) -> bool:
        """True when the results are missing or were computed with other global settings."""
        if not self.complete or self.run_settings is None:
            return True
        ro = self.run_options
        return (settings != self.run_settings or options.rank != ro.rank or options.precision != ro.precision
                or options.device != ro.device)

    def has_analysis(self, module: str, options: RunOptions, settings: TransferSettings) -> bool:
        """Whether the conversion keeps this layer's analysis (concluding it again needs no SVD)."""
        return self.conversion is not None and self.conversion.has_analysis(module, options, settings.method)


# ---- jobs (run by worker.Job in a background thread) ----------------------

def inspect_job(base: str, target: str, lora: str, layers: str | None = None, *, target_loras=(),
                expert: str | None = None):
    """Open the sources and plan (headers only), then the drift of each layer (reads, no SVD).
    ``target`` empty: the target is the base plus ``target_loras``."""
    def run(cancel: threading.Event) -> Iterator:
        conv = Conversion.open(base, target or None, lora, target_loras=target_loras, expert=expert,
                               layers=layers)
        yield PlanReady(conv)
        for lp in conv.plan.layers:
            if cancel.is_set():
                raise Cancelled()
            yield DriftReady(lp.module, conv.drift(lp.module))
    return run


def convert_job(conv: Conversion, settings: TransferSettings, options: RunOptions, resume: dict | None = None):
    """Every layer, or (``resume``) the layers a cancelled run with the same settings left."""
    def run(cancel: threading.Event) -> Iterator:
        yield from conv.layers(settings, options, cancel, resume=resume)
    return run


def compare_job(conv: Conversion, settings: list[TransferSettings], options: RunOptions):
    """Several methods in one pass (each layer decomposed once): yields {method: LayerResult} per layer."""
    def run(cancel: threading.Event) -> Iterator:
        yield from conv.compare_layers(settings, options, cancel)
    return run


def rearbitrate_job(conv: Conversion, module: str, settings: TransferSettings, options: RunOptions):
    """Conclude one layer again: its analysis kept by the conversion, or made once."""
    def run(cancel: threading.Event) -> Iterator:
        conv.analysis(module, options, settings.method)
        if cancel.is_set():
            raise Cancelled()
        yield Rearbitrated(module, conv.rearbitrate(module, settings.validate(), options))
    return run


def state_job(conv: Conversion, module: str, options: RunOptions, method: str):
    """Read one layer and keep its analysis (one SVD), so overrides on it are instant."""
    def run(cancel: threading.Event) -> Iterator:
        # one indivisible step: a cancel lets it finish, so the analysis is never wasted
        conv.analysis(module, options, method)
        yield StateReady(module)
    return run


def export_job(conv: Conversion, output, settings: TransferSettings, options: RunOptions, *, report: bool = True,
               seconds: float | None = None):
    """Write the LoRA, then (with ``report``) its run report beside it (``X.report.json``), in the worker."""
    def run(cancel: threading.Event) -> Iterator:
        info = conv.export(output, settings, options)
        if not report:
            yield Exported(info)
            return
        path = Path(info.path).with_suffix(".report.json")
        try:
            conv.report(info, options=options, seconds=seconds).write(path)
        except (OSError, CasaError) as exc:
            yield Exported(info, report_error=str(exc))
            return
        yield Exported(info, report=path)
    return run


def batch_job(spec):
    """A batch (``casa_core.api.Batch``) as a job: yields the planned outputs (a list of OutputEntry), then
    each ``BatchProgress`` as the batch reports it, then the ``BatchSummary``. The batch runs in a thread
    of its own, so that its progress reaches the job as it happens; the cancel flag stops it between
    layers, keeping the outputs of the passes already finished."""
    def run(cancel: threading.Event) -> Iterator:
        batch = Batch(spec)
        yield list(batch.prepare())
        q: queue.Queue = queue.Queue()
        end: dict = {}

        def work() -> None:
            try:
                end["summary"] = batch.run(cancel, q.put)
            except BaseException as exc:       # handed to the job's thread, which reports it
                end["error"] = exc
            finally:
                q.put(None)

        t = threading.Thread(target=work, name="casa-batch", daemon=True)
        t.start()
        while (item := q.get()) is not None:
            yield item
        t.join()
        if "error" in end:
            raise end["error"]
        yield end["summary"]

    return run
