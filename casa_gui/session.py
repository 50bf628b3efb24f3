"""What the window is working on: sources, plan, results, overrides (no Qt, no CASA math).

The job functions here are the generators the worker runs; each one is a thin
call into casa_core and honours the cancel flag between layers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from casa_core import pipeline
from casa_core.drift import layer_drift
from casa_core.errors import Cancelled
from casa_core.settings import RunOptions, TransferSettings

GUI_VIEW_SIZE = 128


@dataclass(frozen=True)
class PlanReady:
    plan: pipeline.Plan


@dataclass(frozen=True)
class DriftReady:
    module: str
    drift: float


@dataclass(frozen=True)
class Rearbitrated:
    module: str
    state_key: tuple
    state: object          # engine.LayerState
    result: object         # engine.LayerResult


@dataclass(frozen=True)
class StateReady:
    module: str
    state_key: tuple
    state: object          # engine.LayerState


@dataclass(frozen=True)
class Exported:
    info: object           # export.ExportInfo


@dataclass
class Session:
    """The plan of the open sources and everything computed from it."""
    plan: pipeline.Plan | None = None
    drift: dict[str, float] = field(default_factory=dict)
    results: dict = field(default_factory=dict)                 # module -> LayerResult
    overrides: dict[str, TransferSettings] = field(default_factory=dict)
    run_settings: TransferSettings | None = None                # what ``results`` were computed with
    run_options: RunOptions | None = None
    run_seconds: float | None = None                            # how long that run took
    state: tuple | None = None                                  # (state_key, LayerState) of one layer

    def reset(self) -> None:
        self.plan = None
        self.drift.clear()
        self.results.clear()
        self.overrides.clear()
        self.run_settings = self.run_options = self.run_seconds = None
        self.state = None

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


def state_key(options: RunOptions, module: str) -> tuple:
    return (module, options.precision, options.device)


# ---- jobs (run by worker.Job in a background thread) ----------------------

def inspect_job(base: str, target: str, lora: str, layers: str | None = None):
    """Open the sources and plan (headers only), then the drift of each layer (reads, no SVD)."""
    def run(cancel: threading.Event) -> Iterator:
        plan = pipeline.make_plan(*pipeline.open_sources(base, target, lora), layers=layers)
        yield PlanReady(plan)
        for lp in plan.layers:
            if cancel.is_set():
                raise Cancelled()
            yield DriftReady(lp.module, layer_drift(plan, lp))
    return run


def convert_job(plan, settings: TransferSettings, options: RunOptions):
    def run(cancel: threading.Event) -> Iterator:
        yield from pipeline.iter_transfer(plan, settings, options, cancel)
    return run


def rearbitrate_job(plan, module: str, settings: TransferSettings, options: RunOptions, cached=None):
    """Re-arbitrate one layer: the SVD only when ``cached`` (key, LayerState) does not fit."""
    from casa_core import engine

    def run(cancel: threading.Event) -> Iterator:
        key = state_key(options, module)
        if cached is not None and cached[0] == key:
            st = cached[1]
        else:
            st = pipeline.layer_state(plan, plan_layer(plan, module), options)
        if cancel.is_set():
            raise Cancelled()
        yield Rearbitrated(module, key, st, engine.conclude(st, settings.validate(), options.rank,
                                                           options.view_size))
    return run


def state_job(plan, module: str, options: RunOptions):
    """Read one layer and cache its spectral analysis (one SVD), so overrides on it are instant."""
    def run(cancel: threading.Event) -> Iterator:
        # one indivisible step: a cancel lets it finish, so the cache is never wasted
        yield StateReady(module, state_key(options, module),
                         pipeline.layer_state(plan, plan_layer(plan, module), options))
    return run


def export_job(plan, results: dict, output, settings: TransferSettings, options: RunOptions):
    def run(cancel: threading.Event) -> Iterator:
        yield Exported(pipeline.export_results(plan, dict(results), output, settings, options))
    return run


def write_report(plan, results: dict, settings: TransferSettings, options: RunOptions, info,
                 seconds: float | None) -> Path:
    """Write the run report beside the exported LoRA (``X.report.json``); returns its path.

    The one place the GUI builds a report: it goes once the core's conversion hands one back.
    """
    from casa_core.report import build_report
    from casa_core.report import write_report as write_json

    report = build_report(plan, [results[lp.module] for lp in plan.layers], settings, options, info, seconds,
                          str(pipeline.resolve_device(options.device)))
    path = Path(info.path).with_suffix(".report.json")
    write_json(report, path)
    return path


def plan_layer(plan, module: str):
    for lp in plan.layers:
        if lp.module == module:
            return lp
    raise KeyError(module)
