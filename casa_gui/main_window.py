"""The main window: sources -> convert (background) -> see -> override -> export."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from casa_core.errors import CasaError
from casa_core.resources import demo_inputs

from . import session as jobs
from . import theme
from .export_panel import ExportPanel
from .layer_table import LayerTable
from .log_pane import LogPane
from .message_bar import MessageBar
from .overrides import OverridePanel
from .overview import OverviewView
from .plots.clusters import ClusterView
from .plots.heatmap import HeatmapView
from .plots.risk import RiskView
from .plots.spectra import SpectraView
from .qt_compat import pin_singletons
from .session import Session
from .settings_panel import ConvertPanel
from .settings_store import GuiSettings, layout_settings
from .sources import SourcesPanel
from .worker import Job, Runner

log = logging.getLogger("casa_gui")

BACKGROUND_JOBS = ("inspection", "layer cache")     # preempted by what the user asks for
TABS = (("routing", "Routing"), ("clusters", "Clusters"), ("spectra", "Spectra"), ("risk", "Risk"),
        ("overview", "Overview"))


class MainWindow(QMainWindow):
    """Everything the user drives; long work goes through ``self.runner`` (one job at a time)."""

    # Emitted once the job's thread has ended (the runner is free again). No bool payloads:
    # PySide6 6.12 on Python 3.11 drops a reference to True on every Python-side emit of it.
    inspected = Signal(str)         # 'ok' (a plan is ready) | 'failed'
    run_finished = Signal(str)      # 'succeeded' | 'cancelled' | 'failed'
    rearbitrated = Signal(str)      # module
    exported = Signal(object)       # ExportInfo

    def __init__(self, gs: GuiSettings | None = None, parent=None):
        pin_singletons()
        super().__init__(parent)
        self.gs = gs if gs is not None else GuiSettings.load()
        self.session = Session()
        self.runner = Runner(self)
        self.selected: str | None = None
        self._export_after_run = False
        self._run_t0 = 0.0
        self._pending: dict = {}
        self._outcome: tuple | None = None      # (signal, value) to emit when the job has ended
        self.setWindowTitle("CASA Studio")

        self.sources = SourcesPanel(self.gs.recent)
        self.convert = ConvertPanel(self.gs)
        self.override = OverridePanel()
        self.export = ExportPanel(self.gs)
        self.write_report = QCheckBox("Also write the run report (.report.json)")
        self.write_report.setChecked(True)
        self.export.layout().addWidget(self.write_report)
        controls = QWidget()
        cl = QVBoxLayout(controls)
        for w in (self.sources, self.convert, self.override, self.export):
            cl.addWidget(w)
        cl.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(controls.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 6)
        self.controls_dock = QDockWidget("Controls", self)
        self.controls_dock.setObjectName("controls")
        self.controls_dock.setWidget(scroll)
        self.controls_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                       | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.controls_dock)

        self.log_pane = LogPane()
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("log")
        self.log_dock.setWidget(self.log_pane)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)

        self.table = LayerTable()
        self.heatmap = HeatmapView()
        self.clusters = ClusterView()
        self.spectra = SpectraView()
        self.risk = RiskView()
        self.overview = OverviewView()
        self.pages = {"routing": self.heatmap, "clusters": self.clusters, "spectra": self.spectra,
                      "risk": self.risk, "overview": self.overview}
        self.tabs = QTabWidget()
        for key, label in TABS:
            self.tabs.addTab(self.pages[key], label)
        self.messages = MessageBar()
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("central-splitter")
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 5)
        central = QWidget()
        vl = QVBoxLayout(central)
        vl.setContentsMargins(4, 4, 4, 4)
        vl.addWidget(self.messages)
        vl.addWidget(self.splitter, 1)
        self.setCentralWidget(central)
        self.status = QLabel("Ready.")
        self.statusBar().addWidget(self.status, 1)

        self._make_actions()
        self._overview_timer = QTimer(self, singleShot=True, interval=150, timeout=self._refresh_overview)
        self._prefetch_timer = QTimer(self, singleShot=True, interval=0, timeout=self._prefetch_state)

        self.sources.inspect_requested.connect(self.inspect)
        self.sources.demo_btn.clicked.connect(self.open_demo)
        self.convert.convert_clicked.connect(self.start_convert)
        self.convert.cancel_clicked.connect(self.cancel)
        self.convert.changed.connect(self._settings_changed)
        self.convert.rank.currentTextChanged.connect(lambda t: self._sync_rank(self.export.rank, t))
        self.export.rank.currentTextChanged.connect(lambda t: self._sync_rank(self.convert.rank, t))
        self.export.export_clicked.connect(self.start_export)
        self.override.apply_layer.connect(self.apply_override)
        self.override.apply_all.connect(self.apply_all)
        self.override.remove.connect(self.remove_override)
        self.table.layer_selected.connect(self.select_layer)
        self.overview.layer_clicked.connect(self.select_layer)
        self.runner.stopped.connect(self._job_stopped)

        self.resize(1500, 950)
        self.resizeDocks([self.log_dock], [150], Qt.Orientation.Vertical)
        self._restore_layout()
        if self.gs.base or self.gs.target or self.gs.lora:
            self.sources.set_values(self.gs.base, self.gs.target, self.gs.lora, inspect=False)
        self._set_busy(False)

    # ---- actions, menus, shortcuts -------------------------------------------

    def _make_actions(self) -> None:
        def act(text, slot, shortcut=None, tip=None):
            a = QAction(text, self)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
                a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            if tip:
                a.setStatusTip(tip)
            a.triggered.connect(slot)
            self.addAction(a)
            return a

        self.act_demo = act("Open &demo inputs", self.open_demo)
        self.act_convert = act("&Convert", self.start_convert, "Ctrl+R", "Run the transfer on every layer")
        self.act_cancel = act("C&ancel", self.cancel, "Esc", "Stop after the current layer")
        self.act_export = act("&Export LoRA", self.start_export, "Ctrl+E", "Write the converted LoRA")
        self.act_plots = act("Export &plots as PNG…", self.export_plots_dialog, "Ctrl+Shift+P")
        self.act_next = act("&Next layer", lambda: self.table.step(+1), "Ctrl+Down")
        self.act_prev = act("&Previous layer", lambda: self.table.step(-1), "Ctrl+Up")
        self.act_quit = act("&Quit", self.close, QKeySequence.StandardKey.Quit)
        m = self.menuBar().addMenu("&File")
        for a in (self.act_demo, self.act_export, self.act_plots):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = self.menuBar().addMenu("&Run")
        for a in (self.act_convert, self.act_cancel, self.act_next, self.act_prev):
            m.addAction(a)
        m = self.menuBar().addMenu("&View")
        tm = m.addMenu("&Theme")
        group = QActionGroup(self)
        for name in ("system", "light", "dark"):
            a = QAction(name.capitalize(), self, checkable=True)
            a.setChecked(self.gs.theme == name)
            a.triggered.connect(lambda _c=False, n=name: self.set_theme(n))
            group.addAction(a)
            tm.addAction(a)
        m.addAction(self.controls_dock.toggleViewAction())
        m.addAction(self.log_dock.toggleViewAction())
        m = self.menuBar().addMenu("&Help")
        m.addAction(act("&About CASA Studio", self.show_about))

    def show_about(self) -> None:
        from .diagnostics import runtime_summary
        from .settings_store import log_dir

        text = runtime_summary().replace("; ", "\n")
        QMessageBox.about(self, "About CASA Studio",
                          "Moves a LoRA from a base video diffusion model onto a distilled variant "
                          f"(CASA, closed form).\n\n{text}\n\nLogs: {log_dir()}")

    def set_theme(self, name: str) -> None:
        self.gs.theme = name
        app = QApplication.instance()
        if app is not None:
            theme.apply(app, name)
        for page in self.pages.values():
            page.restyle()
        self._show_layer(self.selected)
        self._refresh_overview()

    # ---- sources and inspection ---------------------------------------------

    def open_demo(self) -> None:
        d = demo_inputs()
        self.sources.set_values(str(d["base"]), str(d["target"]), str(d["lora"]))

    def inspect(self, base: str, target: str, lora: str) -> None:
        if not self._preempt():
            self.messages.show_error("A job is running; cancel it (Esc) before changing the sources.")
            return
        for role, v in zip(("base", "target", "lora"), (base, target, lora), strict=True):
            self.gs.remember(role, v)
            self.sources.slots[role].set_recent(self.gs.recent[role])
        self.session.reset((base, target, lora))
        self.selected = None
        self.table.set_plan(None)
        self.override.set_overrides({})
        self._show_layer(None)
        self._refresh_overview()
        self.messages.hide()
        self.sources.show_status("Inspecting…")
        log.info("inspecting base=%s target=%s lora=%s", base, target, lora)
        job = Job("inspection", jobs.inspect_job(base, target, lora))
        job.yielded.connect(self._on_inspect_item)
        job.failed.connect(self._on_inspect_failed)
        job.succeeded.connect(self._on_inspect_done)
        job.cancelled.connect(self._on_inspect_done)
        self.runner.start(job)
        self._set_busy(True)

    def _on_inspect_item(self, item) -> None:
        if isinstance(item, jobs.PlanReady):
            plan = item.plan
            self.session.plan = plan
            self.table.set_plan(plan)
            desc = plan.describe()
            n_pass = len(plan.passed) + len(plan.lora.other_keys)
            self.sources.show_status(
                f"{len(plan.layers)} layers will transfer, {n_pass} keys pass through unchanged. "
                f"Base: {desc['base']['layout']} layout; target: {desc['target']['layout']} layout; "
                f"LoRA: {desc['lora']['format']} format.")
            log.info("plan: %d layers to transfer, %d LoRA layers pass through", len(plan.layers), len(plan.passed))
            for p in plan.passed[:20]:
                log.info("  passes through: %s (%s)", p.prefix, p.reason)
            if not self.export.output():
                self.export.path.setText(str(self._default_output(plan)))
            self._outcome = (self.inspected, "ok")
            if plan.layers:
                self.table.select_module(plan.layers[0].module)
            self._refresh_overview()
        elif isinstance(item, jobs.DriftReady):
            self.session.drift[item.module] = item.drift
            self.table.model_.set_drift(item.module, item.drift)
            self._overview_timer.start()

    def _default_output(self, plan) -> Path:
        lora = Path(plan.lora.path)
        folder = Path(self.gs.export_dir) if self.gs.export_dir and Path(self.gs.export_dir).is_dir() else lora.parent
        import os

        if not os.access(folder, os.W_OK):
            folder = Path.home()
        return folder / f"{lora.stem}-casa.safetensors"

    def _on_inspect_failed(self, message: str) -> None:
        self.sources.show_status(message, error=True)
        self.messages.show_error(f"These inputs cannot be converted: {message}")
        self._outcome = (self.inspected, "failed")

    def _on_inspect_done(self) -> None:
        if self.session.drift:
            log.info("drift read for %d layers", len(self.session.drift))

    # ---- convert -------------------------------------------------------------

    def _options(self):
        return self.convert.options(self.export.format.currentData(), self.export.dtype.currentText())

    def start_convert(self) -> bool:
        """Start the background run; False (with a message) when it cannot start."""
        if self.session.plan is None:
            self.messages.show_error("Pick the three sources first; the layer table shows what will transfer.")
            return False
        if not self._preempt():     # a stopped inspection: the drift column fills in from the results
            self.messages.show_error("A job is already running.")
            return False
        try:
            settings = self.convert.settings()
            options = self.session.options(self._options())
        except CasaError as exc:
            self.messages.show_error(str(exc))
            return False
        self.messages.hide()
        plan = self.session.plan
        self.session.results.clear()
        self.session.run_settings = self.session.run_options = None
        self.table.model_.clear_results()
        self._pending = {"settings": settings, "options": options}
        n = len(plan.layers)
        self.convert.progress.setRange(0, n)
        self.convert.progress.setValue(0)
        self.convert.progress.setFormat(f"layer 0/{n}")
        self.convert.eta.setText("starting…")
        log.info("converting %d layers: %s, rank %s, device %s, precision %s, %d per-layer overrides",
                 n, settings.to_dict(), options.rank or "same as input", options.device, options.precision,
                 len(options.overrides))
        job = Job("conversion", jobs.convert_job(plan, settings, options), total=n)
        job.yielded.connect(self._on_result)
        job.progress.connect(self._on_progress)
        job.succeeded.connect(self._on_run_succeeded)
        job.cancelled.connect(self._on_run_cancelled)
        job.failed.connect(self._on_run_failed)
        self._run_t0 = time.perf_counter()
        self.runner.start(job)
        self._set_busy(True)
        return True

    def cancel(self) -> None:
        if self.runner.busy:
            log.info("cancel requested; stopping after the current layer")
            self.status.setText("Cancelling after the current layer…")
            self.runner.cancel()

    def _on_result(self, res) -> None:
        self.session.results[res.name] = res
        self.table.model_.set_result(res)
        i = self.session.index_of(res.name)
        log.info("[%d/%d] %s %s k=%d clusters=%d dominant=%.2f capped=%d energy=%.3f %.2fs", i + 1,
                 len(self.session.plan.layers), res.name, "x".join(map(str, res.shape)), res.k, res.n_clusters,
                 res.dominant_share, res.n_capped, res.energy_kept, res.seconds)
        if self.selected is None or self.selected == res.name:
            if self.selected is None:
                self.table.select_module(res.name)
            else:
                self._show_layer(res.name)
        self._overview_timer.start()

    def _on_progress(self, done: int, total: int, eta: float) -> None:
        self.convert.progress.setValue(done)
        self.convert.progress.setFormat(f"layer {done}/{total}")
        self.convert.eta.setText(f"ETA {eta:.0f} s" if done < total else "finishing…")

    def _on_run_succeeded(self) -> None:
        p = self._pending
        self.session.run_settings, self.session.run_options = p["settings"], p["options"]
        secs = time.perf_counter() - self._run_t0
        res = list(self.session.results.values())
        mean_e = sum(r.energy_kept for r in res) / len(res) if res else float("nan")
        self.convert.eta.setText(f"done in {secs:.1f} s")
        self.status.setText(f"Converted {len(res)} layers in {secs:.1f} s; mean energy kept {mean_e:.3f}.")
        log.info("converted %d layers in %.1f s; mean energy kept %.3f", len(res), secs, mean_e)
        self._run_seconds = secs
        self._refresh_overview()
        self._show_layer(self.selected)
        self._outcome = (self.run_finished, "succeeded")

    def _on_run_cancelled(self) -> None:
        self._export_after_run = False
        self._outcome = (self.run_finished, "cancelled")
        self.convert.eta.setText("cancelled")
        self.messages.show_info(f"Cancelled after {len(self.session.results)} of {len(self.session.plan.layers)} "
                                "layers; nothing was written. Convert again to finish.")

    def _on_run_failed(self, message: str) -> None:
        self._export_after_run = False
        self.convert.eta.setText("failed")
        self.messages.show_error(message)
        self._outcome = (self.run_finished, "failed")

    def _job_stopped(self, name: str) -> None:
        self._set_busy(False)
        outcome, self._outcome = self._outcome, None
        if name == "conversion" and self._export_after_run:
            self._export_after_run = False
            if outcome == (self.run_finished, "succeeded"):
                self.start_export()
        if outcome is not None:
            outcome[0].emit(outcome[1])
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

    def _set_busy(self, busy: bool) -> None:
        name = self.runner.job.name if busy and self.runner.job is not None else ""
        running = busy and name not in BACKGROUND_JOBS
        self.convert.set_running(running)
        self.act_convert.setEnabled(not running)
        self.act_cancel.setEnabled(busy)
        self.export.export_btn.setEnabled(not running)
        self.act_export.setEnabled(not running)
        self.override.set_enabled(not running)
        self.sources.setEnabled(not running)
        if not busy:
            if self.status.text().startswith("Cancelling"):
                self.status.setText("Cancelled; nothing was written.")
            elif self.status.text().endswith("(Esc cancels)"):
                self.status.setText("Ready.")
        elif running:
            self.status.setText(f"{name.capitalize()} running… (Esc cancels)")

    def _settings_changed(self) -> None:
        opts = self.convert.options_or_none()
        if opts is None or self.session.run_settings is None:
            return
        if self.session.stale(self.convert.settings(), replace(self.session.run_options, rank=opts.rank,
                                                               device=opts.device, precision=opts.precision)):
            self.status.setText("Settings changed since the last run: Convert (Ctrl+R) applies them to every layer.")

    def _sync_rank(self, other, text: str) -> None:
        if other.currentText() != text:
            other.blockSignals(True)
            other.setEditText(text)
            other.blockSignals(False)
            if other is self.convert.rank:
                self._settings_changed()

    # ---- layers and views ---------------------------------------------------

    def select_layer(self, module: str) -> None:
        if module == self.selected:
            return
        self.selected = module
        self.table.select_module(module)
        self.overview.select(module)
        self._show_layer(module)
        self._prefetch_timer.start()

    def _prefetch_state(self) -> None:
        """Cache the selected layer's spectra in the background, so tuning it needs no new SVD."""
        m = self.selected
        res = self.session.results.get(m) if m else None
        if res is None or res.views is None or self.runner.busy or self.session.run_options is None:
            return
        options = replace(self.session.run_options, overrides={})
        if self.session.state is not None and self.session.state[0] == jobs.state_key(options, m):
            return
        job = Job("layer cache", jobs.state_job(self.session.plan, m, options))
        job.yielded.connect(self._on_state)
        job.failed.connect(self._on_state_failed)
        self.runner.start(job)
        self._set_busy(True)

    def _on_state(self, item) -> None:
        self.session.state = (item.state_key, item.state)

    def _on_state_failed(self, message: str) -> None:
        log.warning("could not cache the spectra of %s: %s", self.selected, message)

    def _show_layer(self, module: str | None) -> None:
        res = self.session.results.get(module) if module else None
        for key in ("routing", "clusters", "spectra", "risk"):
            self.pages[key].set_result(res)
        if module is None:
            self.override.set_layer(None, self.convert.settings(), False)
            return
        base = self.session.run_settings or self.convert.settings()
        self.override.set_layer(module, self.session.settings_for(module, base),
                                res is not None and self.session.run_options is not None,
                                module in self.session.overrides)

    def _refresh_overview(self) -> None:
        plan = self.session.plan
        self.overview.set_data([lp.module for lp in plan.layers] if plan else [], self.session.results,
                               self.session.drift, self.selected)

    # ---- overrides -----------------------------------------------------------

    def apply_override(self, module: str, settings) -> bool:
        """Re-arbitrate one layer with its own thresholds (cached spectra, no new SVD when cached)."""
        return self._rearbitrate(module, settings, add=True)

    def remove_override(self, module: str) -> bool:
        return self._rearbitrate(module, self.session.run_settings, add=False)

    def _rearbitrate(self, module: str, settings, add: bool) -> bool:
        if self.runner.busy and self.runner.job.name == "layer cache":
            self.runner.stop()          # lets the SVD finish: its result is the cache we need
        if self.runner.busy or self.session.run_options is None or module not in self.session.results:
            self.messages.show_error("Convert first (and wait for the run to finish) to tune a single layer.")
            return False
        options = replace(self.session.run_options, overrides={})
        cached = self.session.state
        hit = cached is not None and cached[0] == jobs.state_key(options, module)
        log.info("%s: re-arbitrating with tau=%g q_dom=%g q_act=%g (%s)", module, settings.tau, settings.q_dom,
                 settings.q_act, "cached spectra, no new SVD" if hit else "computing its spectra once")
        job = Job("re-arbitration", jobs.rearbitrate_job(self.session.plan, module, settings, options, cached))
        self._pending_override = (module, settings, add)
        job.yielded.connect(self._on_rearbitrated)
        job.failed.connect(self.messages.show_error)
        self.runner.start(job)
        self._set_busy(True)
        return True

    def _on_rearbitrated(self, item) -> None:
        module, settings, add = self._pending_override
        self.session.state = (item.state_key, item.state)
        self.session.results[module] = item.result
        if add:
            self.session.overrides[module] = settings
        else:
            self.session.overrides.pop(module, None)
        self.session.run_options = replace(self.session.run_options, overrides=dict(self.session.overrides))
        self.table.model_.set_result(item.result)
        self.table.model_.set_override(module, self.session.overrides.get(module))
        self.override.set_overrides(self.session.overrides)
        r = item.result
        log.info("%s: clusters=%d dominant=%.2f capped=%d energy=%.3f", module, r.n_clusters, r.dominant_share,
                 r.n_capped, r.energy_kept)
        if module == self.selected:
            self._show_layer(module)
        self._overview_timer.start()
        self._outcome = (self.rearbitrated, module)

    def apply_all(self, settings) -> bool:
        """Make ``settings`` the global thresholds and rerun every layer (overrides are kept)."""
        self.convert.set_thresholds(settings)
        return self.start_convert()

    # ---- export --------------------------------------------------------------

    def start_export(self) -> bool:
        if self.session.plan is None:
            self.messages.show_error("Pick the sources and convert first.")
            return False
        if not self._preempt():
            self.messages.show_error("Wait for the running job to finish before exporting.")
            return False
        out = self.export.output()
        if not out:
            self.messages.show_error("Choose where to write the converted LoRA (Export › File).")
            return False
        try:
            settings = self.convert.settings()
            options = self._options()
        except CasaError as exc:
            self.messages.show_error(str(exc))
            return False
        if self.session.stale(settings, options):
            log.info("results are missing or were made with other settings: converting before the export")
            self._export_after_run = True
            return self.start_convert()
        options = self.session.options(options)
        self.gs.export_dir = str(Path(out).parent)
        log.info("exporting to %s (format %s, dtype %s)", out, options.out_format, options.out_dtype)
        job = Job("export", jobs.export_job(self.session.plan, self.session.results, out,
                                            self.session.run_settings, options))
        self._pending_export = (settings, options)
        job.yielded.connect(self._on_exported)
        job.failed.connect(self.messages.show_error)
        self.runner.start(job)
        self._set_busy(True)
        return True

    def _on_exported(self, item) -> None:
        info = item.info
        self.session.last_export = info
        plan = self.session.plan
        energies = [self.session.results[lp.module].energy_kept for lp in plan.layers]
        self.export.show_written(info, energies)
        log.info("wrote %s (%s, %d tensors, %d bytes)", info.path, info.format, info.tensors, info.bytes)
        for lp in plan.layers:
            log.info("  %-32s energy kept %.4f", lp.module, self.session.results[lp.module].energy_kept)
        if self.write_report.isChecked():
            self._write_report(info)
        self.messages.show_info(f"Wrote {info.path}.")
        self._outcome = (self.exported, info)

    def _write_report(self, info) -> None:
        from casa_core.pipeline import resolve_device
        from casa_core.report import build_report, write_report

        settings, options = self._pending_export
        plan = self.session.plan
        try:
            device = str(resolve_device(options.device))
            rep = build_report(plan, [self.session.results[lp.module] for lp in plan.layers],
                               self.session.run_settings, options, info, getattr(self, "_run_seconds", None), device)
            path = Path(info.path).with_suffix(".report.json")
            write_report(rep, path)
            log.info("wrote the run report %s", path)
        except (OSError, CasaError) as exc:
            self.messages.show_error(f"The LoRA was written, but not its report: {exc}")

    def export_plots(self, folder) -> list[Path]:
        """Write each view of the selected layer (and the overview) as PNG into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = (self.selected or "model").replace("/", "_")
        out = []
        for key, page in self.pages.items():
            if page.showing_view:
                name = "overview" if key == "overview" else f"{stem}-{key}"
                out.append(page.export_png(folder / f"{name}.png"))
        log.info("wrote %d plots to %s", len(out), folder)
        return out

    def export_plots_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Write the plots into", self.gs.export_dir or "")
        if folder:
            try:
                paths = self.export_plots(folder)
                self.messages.show_info(f"Wrote {len(paths)} plots to {folder}.")
            except OSError as exc:
                self.messages.show_error(f"Cannot write the plots: {exc}")

    # ---- settings, layout, closing -------------------------------------------

    def _store_settings(self) -> None:
        gs = self.gs
        base, target, lora = self.sources.values()
        gs.base, gs.target, gs.lora = base, target, lora
        gs.method = self.convert.method.currentData()
        gs.tau, gs.q_dom, gs.q_act = self.convert.tau.value(), self.convert.q_dom.value(), self.convert.q_act.value()
        gs.rank = self.convert.rank_text()
        gs.device = self.convert.device.currentData()
        gs.precision = self.convert.precision.currentText()
        gs.out_format = self.export.format.currentData()
        gs.out_dtype = self.export.dtype.currentText()
        gs.save()

    def _restore_layout(self) -> None:
        qs = layout_settings()
        geo, state, split = qs.value("geometry"), qs.value("state"), qs.value("splitter")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)
        if isinstance(state, QByteArray):
            self.restoreState(state)
        if isinstance(split, QByteArray):
            self.splitter.restoreState(split)
        tab = qs.value("tab")
        if tab is not None:
            self.tabs.setCurrentIndex(int(tab))

    def _save_layout(self) -> None:
        qs = layout_settings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("state", self.saveState())
        qs.setValue("splitter", self.splitter.saveState())
        qs.setValue("tab", self.tabs.currentIndex())
        qs.sync()

    def closeEvent(self, event) -> None:
        if self.runner.busy:
            log.info("closing during %s: cancelling and waiting for the worker", self.runner.job.name)
            self.runner.stop()
        self._store_settings()
        self._save_layout()
        self.log_pane.detach()
        super().closeEvent(event)
