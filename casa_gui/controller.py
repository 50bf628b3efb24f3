"""The controller: the Session, the Runner and the life of every job. No widgets.

It reads what to run from the shared ``AppState`` and tells the views what happened
through signals. Each job is started with a ``Task``: the GUI-thread end of that job,
holding the context it was started with (settings, options, module, what to do
after), so nothing about a running job is kept anywhere else. All calls into
casa_core go through ``session``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from casa_core.api import CasaError, RunOptions, TransferSettings

from . import session as jobs
from .session import Session
from .state import BACKGROUND_JOBS, AppState
from .worker import Job, Runner

log = logging.getLogger("casa_gui")


@dataclass(frozen=True)
class Run:
    """What a conversion run was started with, and whether an export follows it."""
    settings: TransferSettings
    options: RunOptions
    t0: float
    export_after: bool = False
    report: bool = True
    resumed: int = 0                # layers kept from the cancelled run it resumes


@dataclass(frozen=True)
class Override:
    """A re-arbitration of one layer: ``settings`` becomes its override, or None removes it."""
    module: str
    settings: TransferSettings
    add: bool


@dataclass(frozen=True)
class Export:
    """What an export was started with: its options (format, dtype) and whether a report goes with it."""
    options: RunOptions
    report: bool


@dataclass(frozen=True)
class LayerInfo:
    """The selected layer as the views show it."""
    module: str | None
    result: object | None          # LayerResult
    settings: TransferSettings     # what it runs with (its override, or the global settings)
    tunable: bool                  # converted, so it can be re-arbitrated alone
    overridden: bool


class Task(QObject):
    """The GUI-thread end of one job: its context, its handlers and the outcome to announce.

    Living in the GUI thread, its slots receive the job's queued signals there. Each
    handler is called as ``handler(task, *args)``; ``setting`` is the setting a failed job's CasaError
    names (``expert``, ``device`` ...), None when it names none.
    """

    def __init__(self, job: Job, context, *, item: Callable | None = None, progress: Callable | None = None,
                 ok: Callable | None = None, cancelled: Callable | None = None, failed: Callable | None = None):
        super().__init__()
        self.context = context
        self.outcome: tuple | None = None           # (signal, value): emitted once the runner is free
        self.setting: str | None = None
        self._job = job
        self._handlers = {"item": item, "progress": progress, "ok": ok, "cancelled": cancelled, "failed": failed}
        job.yielded.connect(self._item)
        job.progress.connect(self._progress)
        job.succeeded.connect(self._ok)
        job.cancelled.connect(self._cancelled)
        job.failed.connect(self._failed)

    def _call(self, what: str, *args) -> None:
        handler = self._handlers[what]
        if handler is not None:
            handler(self, *args)

    @Slot(object)
    def _item(self, item) -> None:
        self._call("item", item)

    @Slot(int, int, float)
    def _progress(self, done: int, total: int, eta: float) -> None:
        self._call("progress", done, total, eta)

    @Slot()
    def _ok(self) -> None:
        self._call("ok")

    @Slot()
    def _cancelled(self) -> None:
        self._call("cancelled")

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.setting = self._job.error_setting
        self._call("failed", message)


class Controller(QObject):
    """Owns the Session and the Runner; starts, follows and ends inspect, convert, cache, override, export."""

    # outcomes, emitted once the job's thread has ended (the runner is free again); no bool payloads
    inspected = Signal(str)             # 'ok' (a plan is ready) | 'failed'
    run_finished = Signal(str)          # 'succeeded' | 'cancelled' | 'failed'
    rearbitrated = Signal(str)          # module
    exported = Signal(object)           # ExportInfo
    # what the views follow
    inspecting = Signal(str, str, str)  # base, target, lora
    plan_changed = Signal(object)       # Plan | None
    drift_ready = Signal(str, float)
    result_ready = Signal(object)       # LayerResult, from a run or a re-arbitration
    results_cleared = Signal()
    overrides_changed = Signal(object)  # {module: TransferSettings}
    layer_changed = Signal(object)      # LayerInfo of the selected layer
    overview_changed = Signal(object)   # (modules, results, drift, {module: (block, part)})
    compared_changed = Signal(object)   # (modules, {method: {module: LayerResult}})
    progress = Signal(int, int, float)  # done, total, eta seconds (< 0: starting)
    run_note = Signal(str)              # 'done in 1.2 s', 'cancelled', 'failed'
    message = Signal(str, str)          # kind ('error' | 'info' | '': hide), text
    sources_note = Signal(str, str)     # text, kind ('error' | '')
    expert_needed = Signal()            # an inspection failed for the expert (e.g. the model holds two)
    exporting = Signal(str)             # the output path an export starts writing
    written = Signal(object, object)    # ExportInfo, energy kept per layer

    def __init__(self, state: AppState, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.session = Session()
        self.runner = Runner(self)
        self._task: Task | None = None      # the running job's end (the runner runs one at a time)
        self._overview_timer = QTimer(self, singleShot=True, interval=150, timeout=self.refresh_overview)
        self._prefetch_timer = QTimer(self, singleShot=True, interval=0, timeout=self._prefetch_state)
        self.runner.started.connect(self._busy_changed)
        self.runner.stopped.connect(self._job_stopped)
        state.selected_changed.connect(self._selection_changed)
        for sig in (state.settings_changed, state.rank_changed, state.device_changed, state.precision_changed):
            sig.connect(self._settings_changed)

    # ---- running jobs ---------------------------------------------------------

    def _start(self, job: Job, context, **handlers) -> None:
        self._task = Task(job, context, **handlers)
        self.runner.start(job)

    def _job_stopped(self, _name: str) -> None:
        task, self._task = self._task, None
        self._busy_changed()
        if task is not None:
            run = task.context
            if isinstance(run, Run) and run.export_after and task.outcome == (self.run_finished, "succeeded"):
                self.start_export(report=run.report)
            if task.outcome is not None:
                task.outcome[0].emit(task.outcome[1])
        # deferred: whoever stopped this job may be about to start the next one
        self._prefetch_timer.start()

    def _preempt(self) -> bool:
        """Free the runner of background work (inspection, layer cache); False if a user job runs."""
        if not self.runner.busy:
            return True
        if self.runner.job.name not in BACKGROUND_JOBS:
            return False
        self.runner.stop()
        return True

    def _busy_changed(self, *_args) -> None:
        st = self.state
        st.job = self.runner.job.name if self.runner.busy else ""
        if not st.job:
            if st.status.startswith("Cancelling"):
                st.status = "Cancelled; nothing was written."
            elif st.status.endswith("(Esc cancels)"):
                st.status = "Ready."
        elif st.running:
            st.status = f"{st.job.capitalize()} running… (Esc cancels)"

    def _error(self, _task, message: str) -> None:
        self.message.emit("error", message)

    def cancel(self) -> None:
        if self.runner.busy:
            log.info("cancel requested; stopping after the current layer")
            self.state.status = "Cancelling after the current layer…"
            self.runner.cancel()

    def shutdown(self) -> None:
        if self.runner.busy:
            log.info("closing during %s: cancelling and waiting for the worker", self.runner.job.name)
            self.runner.stop()

    # ---- inspection -----------------------------------------------------------

    def inspect(self, base: str, target: str, lora: str, target_loras=(), expert: str | None = None,
                quiet: bool = False) -> bool:
        """Open and plan the sources; ``target_loras`` (``PATH[:STRENGTH]`` each) stack on the target (on
        the base where ``target`` is empty), ``expert`` picks one of two experts; ``quiet``: a failure is a
        plain note in the sources panel only (the user may still be typing), not an error."""
        if not self._preempt():
            self.message.emit("error", "A job is running; cancel it (Esc) before changing the sources.")
            return False
        self.inspecting.emit(base, target, lora)
        self.session.reset()
        self.session.inputs = (base, target, lora)
        self.session.stack = (tuple(target_loras or ()), expert)
        self.state.selected = None
        self.plan_changed.emit(None)
        self.overrides_changed.emit({})
        self.refresh_views()
        self.message.emit("", "")
        self.sources_note.emit("Inspecting…", "")
        log.info("inspecting base=%s target=%s lora=%s target_loras=%s expert=%s", base, target, lora,
                 list(target_loras or ()), expert)
        job = jobs.inspect_job(base, target, lora, target_loras=tuple(target_loras or ()), expert=expert)
        self._start(Job("inspection", job), quiet,
                    item=self._on_inspect_item, failed=self._on_inspect_failed, ok=self._on_inspect_done,
                    cancelled=self._on_inspect_done)
        return True

    def quiet_inspection(self) -> bool:
        """Whether the running job is an inspection started quietly (its failure would be a note only)."""
        return self._task is not None and self.runner.busy and self.runner.job.name == "inspection" \
            and bool(self._task.context)

    def _on_inspect_item(self, task: Task, item) -> None:
        if isinstance(item, jobs.PlanReady):
            self.session.conversion = item.conversion
            plan = item.conversion.plan
            self.plan_changed.emit(plan)
            desc = plan.describe()
            n_pass = len(plan.passed) + len(plan.lora.other_keys)
            stacked = desc["target"].get("distillation_loras", [])
            target = (f"{desc['target']['layout']} layout" + (
                f" + {len(stacked)} distillation LoRA{'s' * (len(stacked) != 1)} ("
                + ", ".join(f"{d['name']} x{d['strength']:g}" for d in stacked) + ")" if stacked else ""))
            expert = f", {desc['base']['expert']} expert" if desc["base"].get("expert") else ""
            self.sources_note.emit(
                f"{len(plan.layers)} layers will transfer, {n_pass} keys pass through unchanged. "
                f"Base: {desc['base']['layout']} layout{expert}; target: {target}; "
                f"LoRA: {desc['lora']['format']} format.", "")
            log.info("plan: %d layers to transfer, %d LoRA layers pass through", len(plan.layers), len(plan.passed))
            for p in plan.passed[:20]:
                log.info("  passes through: %s (%s)", p.prefix, p.reason)
            task.outcome = (self.inspected, "ok")
            if plan.layers:
                self.state.selected = plan.layers[0].module
            self.refresh_overview()
        elif isinstance(item, jobs.DriftReady):
            self.session.drift[item.module] = item.drift
            self.drift_ready.emit(item.module, item.drift)
            self._overview_timer.start()

    def _on_inspect_failed(self, task: Task, message: str) -> None:
        task.outcome = (self.inspected, "failed")
        if task.context:        # quiet: the user may not be done with the paths
            self.sources_note.emit(f"Not ready yet: {message} (Enter or Inspect checks again.)", "")
            return
        self.sources_note.emit(message, "error")
        if task.setting == "expert":
            self.expert_needed.emit()
        self.message.emit("error", f"These inputs cannot be converted: {message}")

    def _on_inspect_done(self, _task: Task) -> None:
        if self.session.drift:
            log.info("drift read for %d layers", len(self.session.drift))

    # ---- conversion -----------------------------------------------------------

    def start_convert(self, export_after: bool = False, report: bool = True) -> bool:
        """Start the background run; False (with a message) when it cannot start."""
        if self.session.plan is None:
            self.message.emit("error", "Pick the three sources first; the layer table shows what will transfer.")
            return False
        if not self._preempt():     # a stopped inspection: the drift column fills in from the results
            self.message.emit("error", "A job is already running.")
            return False
        try:
            settings = self.state.settings.validate()
            options = self.session.options(self.state.run_options())
        except CasaError as exc:
            self.message.emit("error", str(exc))
            return False
        self.message.emit("", "")
        s = self.session
        plan = s.plan
        kept = s.resumable(settings, options)
        s.cancelled_run = None
        s.run_settings = s.run_options = s.run_seconds = None
        if not kept:
            s.results.clear()
            self.results_cleared.emit()
        n, k = len(plan.layers), len(kept)
        self.progress.emit(k, n, -1.0)
        if kept:
            log.info("resuming the cancelled run: %d of %d layers are done, %d to go", k, n, n - k)
        log.info("converting %d layers: %s, rank %s, device %s, precision %s, %d per-layer overrides",
                 n - k, settings.to_dict(), options.rank or "same as input", options.device, options.precision,
                 len(options.overrides))
        self._start(Job("conversion", jobs.convert_job(s.conversion, settings, options, kept or None), total=n - k),
                    Run(settings, options, time.perf_counter(), export_after, report, resumed=k),
                    item=self._on_result, progress=self._on_run_progress, ok=self._on_run_succeeded,
                    cancelled=self._on_run_cancelled, failed=self._on_run_failed)
        return True

    def start_compare(self, names: list[str]) -> bool:
        """Convert every layer with each of ``names`` in one pass, for the Compare page (nothing is written)."""
        if self.session.plan is None:
            self.message.emit("error", "Pick the three sources first; the layer table shows what will transfer.")
            return False
        if not self._preempt():
            self.message.emit("error", "A job is already running.")
            return False
        try:
            settings = [self.state.settings.with_(method=n).validate() for n in names]
            options = replace(self.session.options(self.state.run_options()), overrides={})
        except CasaError as exc:
            self.message.emit("error", str(exc))
            return False
        self.message.emit("", "")
        self.session.compared = {n: {} for n in names}
        n = len(self.session.plan.layers)
        self.progress.emit(0, n, -1.0)
        log.info("comparing %s on %d layers", ", ".join(names), n)
        self._start(Job("comparison", jobs.compare_job(self.session.conversion, settings, options), total=n),
                    None, item=self._on_compared, progress=lambda _t, *a: self.progress.emit(*a),
                    ok=self._on_compare_done, cancelled=self._on_compare_done, failed=self._on_run_failed)
        return True

    def _on_compared(self, _task: Task, by_method) -> None:
        for method, res in by_method.items():
            self.session.compared.setdefault(method, {})[res.name] = res

    def _on_compare_done(self, _task: Task) -> None:
        plan = self.session.plan
        self.run_note.emit(f"compared {', '.join(self.session.compared)}")
        self.compared_changed.emit(([lp.module for lp in plan.layers] if plan else [], self.session.compared))

    def _on_run_progress(self, task: Task, done: int, total: int, eta: float) -> None:
        k = task.context.resumed
        self.progress.emit(done + k, total + k, eta)

    def _on_result(self, _task: Task, res) -> None:
        self.session.results[res.name] = res
        self.result_ready.emit(res)
        i = self.session.index_of(res.name)
        log.info("[%d/%d] %s %s", i + 1, len(self.session.plan.layers), res.name, res.summary())
        if self.state.selected is None:
            self.state.selected = res.name
        elif self.state.selected == res.name:
            self.show_layer()
        self._overview_timer.start()

    def _on_run_succeeded(self, task: Task) -> None:
        run: Run = task.context
        s = self.session
        s.run_settings, s.run_options = run.settings, run.options
        s.run_seconds = secs = time.perf_counter() - run.t0
        res = list(s.results.values())
        mean_e = sum(r.energy_kept for r in res) / len(res) if res else float("nan")
        self.run_note.emit(f"done in {secs:.1f} s")
        self.state.status = f"Converted {len(res)} layers in {secs:.1f} s; mean energy kept {mean_e:.3f}."
        log.info("converted %d layers in %.1f s; mean energy kept %.3f", len(res), secs, mean_e)
        self.refresh_views()
        task.outcome = (self.run_finished, "succeeded")

    def _on_run_cancelled(self, task: Task) -> None:
        run: Run = task.context
        task.outcome = (self.run_finished, "cancelled")
        self.session.cancelled_run = (run.settings, run.options)
        self.run_note.emit("cancelled")
        self.message.emit("info", f"Cancelled after {len(self.session.results)} of {len(self.session.plan.layers)} "
                                  "layers; nothing was written. Convert again to go on from there (with the same "
                                  "settings).")

    def _on_run_failed(self, task: Task, message: str) -> None:
        self.run_note.emit("failed")
        self.message.emit("error", message)
        task.outcome = (self.run_finished, "failed")

    def _settings_changed(self, *_args) -> None:
        opts = self.state.run_options_or_none()
        s = self.session
        if opts is None or s.run_settings is None:
            return
        if s.stale(self.state.settings, replace(s.run_options, rank=opts.rank, device=opts.device,
                                                precision=opts.precision)):
            self.state.status = "Settings changed since the last run: Convert (Ctrl+R) applies them to every layer."

    # ---- the selected layer ---------------------------------------------------

    def _selection_changed(self, _module) -> None:
        self.show_layer()
        self._prefetch_timer.start()

    def layer_info(self) -> LayerInfo:
        m, s = self.state.selected, self.session
        res = s.results.get(m) if m else None
        if m is None:
            return LayerInfo(None, None, self.state.settings, False, False)
        return LayerInfo(m, res, s.settings_for(m, s.run_settings or self.state.settings),
                         res is not None and s.run_options is not None, m in s.overrides)

    def show_layer(self) -> None:
        self.layer_changed.emit(self.layer_info())

    def refresh_overview(self) -> None:
        plan = self.session.plan
        layers = plan.layers if plan else []
        self.overview_changed.emit(([lp.module for lp in layers], self.session.results, self.session.drift,
                                    {lp.module: (lp.block, lp.part) for lp in layers}))

    def refresh_views(self) -> None:
        self.show_layer()
        self.refresh_overview()

    def _prefetch_state(self) -> None:
        """Cache the selected layer's spectra in the background, so tuning it needs no new SVD."""
        m, s = self.state.selected, self.session
        res = s.results.get(m) if m else None
        if res is None or res.views is None or self.runner.busy or s.run_options is None:
            return
        options = replace(s.run_options, overrides={})
        method = s.settings_for(m, s.run_settings).method
        if s.has_analysis(m, options, s.settings_for(m, s.run_settings)):
            return
        self._start(Job("layer cache", jobs.state_job(s.conversion, m, options, method)), m,
                    failed=self._on_state_failed)

    def _on_state_failed(self, task: Task, message: str) -> None:
        log.warning("could not cache the spectra of %s: %s", task.context, message)

    # ---- overrides ------------------------------------------------------------

    def apply_override(self, module: str, settings: TransferSettings) -> bool:
        """Re-arbitrate one layer with its own thresholds (cached spectra, no new SVD when cached)."""
        return self._rearbitrate(Override(module, settings, add=True))

    def remove_override(self, module: str) -> bool:
        return self._rearbitrate(Override(module, self.session.run_settings, add=False))

    def _rearbitrate(self, what: Override) -> bool:
        s = self.session
        if self.runner.busy and self.runner.job.name == "layer cache":
            self.runner.stop()          # lets the SVD finish: its result is the cache we need
        if self.runner.busy or s.run_options is None or what.module not in s.results:
            self.message.emit("error", "Convert first (and wait for the run to finish) to tune a single layer.")
            return False
        options = replace(s.run_options, overrides={})
        st = what.settings
        log.info("%s: re-arbitrating with %s (%s)", what.module, st.to_dict(),
                 "its analysis is kept: no new SVD" if s.has_analysis(what.module, options, st)
                 else "analysing it once")
        self._start(Job("re-arbitration", jobs.rearbitrate_job(s.conversion, what.module, st, options)), what,
                    item=self._on_rearbitrated, failed=self._error)
        return True

    def _on_rearbitrated(self, task: Task, item) -> None:
        what: Override = task.context
        s, module = self.session, what.module
        s.results[module] = item.result
        if what.add:
            s.overrides[module] = what.settings
        else:
            s.overrides.pop(module, None)
        s.run_options = replace(s.run_options, overrides=dict(s.overrides))
        self.result_ready.emit(item.result)
        self.overrides_changed.emit(dict(s.overrides))
        log.info("%s: %s", module, item.result.summary())
        if module == self.state.selected:
            self.show_layer()
        self._overview_timer.start()
        task.outcome = (self.rearbitrated, module)

    def apply_all(self, settings: TransferSettings) -> bool:
        """Make ``settings`` the global ones and rerun every layer (overrides are kept)."""
        self.state.settings = settings
        return self.start_convert()

    # ---- export ---------------------------------------------------------------

    def start_export(self, report: bool = True) -> bool:
        """Write the converted LoRA (and, with ``report``, its run report); converts first when needed."""
        s = self.session
        if s.plan is None:
            self.message.emit("error", "Pick the sources and convert first.")
            return False
        if not self._preempt():
            self.message.emit("error", "Wait for the running job to finish before exporting.")
            return False
        out = self.state.output.strip()
        if not out:
            self.message.emit("error", "Choose where to write the converted LoRA (Export › File).")
            return False
        try:
            settings = self.state.settings.validate()
            options = self.state.run_options()
        except CasaError as exc:
            self.message.emit("error", str(exc))
            return False
        if s.stale(settings, options):
            log.info("results are missing or were made with other settings: converting before the export")
            return self.start_convert(export_after=True, report=report)
        options = s.options(options)
        self.exporting.emit(out)
        log.info("exporting to %s (format %s, dtype %s)", out, options.out_format, options.out_dtype)
        self._start(Job("export", jobs.export_job(s.conversion, out, s.run_settings, options, report=report,
                                                  seconds=s.run_seconds)),
                    Export(options, report), item=self._on_exported, failed=self._error)
        return True

    def _on_exported(self, task: Task, item) -> None:
        info, s = item.info, self.session
        energies = [s.results[lp.module].energy_kept for lp in s.plan.layers]
        self.written.emit(info, energies)
        log.info("wrote %s (%s, %d tensors, %d bytes)", info.path, info.format, info.tensors, info.bytes)
        for lp in s.plan.layers:
            log.info("  %-32s energy kept %.4f", lp.module, s.results[lp.module].energy_kept)
        note = ("info", f"Wrote {info.path}.")
        if item.report is not None:
            log.info("wrote the run report %s", item.report)
        if item.report_error is not None:
            note = ("error", f"The LoRA was written, but not its report: {item.report_error}")
        self.message.emit(*note)
        task.outcome = (self.exported, info)
