"""The main window: the layout of the panels and views, and their wiring to the controller.

sources -> convert (background) -> see -> override -> export. The work is done by
``controller.Controller``; what the panels share lives in ``state.AppState``; the
menus are in ``actions``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from casa_core.api import demo_inputs, model_verdict

from . import theme
from .actions import Actions
from .controller import Controller
from .export_panel import ExportPanel
from .input_guard import ShortcutKeeper, WheelGuard
from .layer_table import VERDICT_COLORS, LayerPane, LayerTable
from .log_pane import LogPane
from .message_bar import MessageBar
from .overrides import OverridePanel
from .qt_compat import collect_in_gui_thread, pin_singletons
from .settings_panel import ConvertPanel
from .settings_store import GuiSettings, layout_settings
from .sources import SourcesPanel
from .state import AppState
from .views import ViewTabs


class MainWindow(QMainWindow):
    """Lays out the panels, the layer table and the views, and connects them to the controller."""

    def __init__(self, gs: GuiSettings | None = None, parent=None):
        pin_singletons()
        collect_in_gui_thread()
        super().__init__(parent)
        self.gs = gs if gs is not None else GuiSettings.load()
        self.state = AppState(self)
        self.controller = Controller(self.state, self)
        self.batch_window = None            # the batch queue, made when first asked for
        self.setWindowTitle("CASA Studio")

        self.sources = SourcesPanel(self.gs)
        self.convert = ConvertPanel(self.gs, self.state)
        self.override = OverridePanel(self.state)
        self.export = ExportPanel(self.gs, self.state)
        self.panels = (self.sources, self.convert, self.override, self.export)
        controls = QWidget()
        cl = QVBoxLayout(controls)
        for w in self.panels:
            cl.addWidget(w)
        cl.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(controls.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 6)
        self.controls_dock = self._dock("Controls", "controls", scroll, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.controls_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                       | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.log_pane = LogPane()
        self.log_dock = self._dock("Log", "log", self.log_pane, Qt.DockWidgetArea.BottomDockWidgetArea)

        self.table = LayerTable(self.state)
        self.layers_pane = LayerPane(self.table)
        # a dock: its edge to the plots drags, and it floats off into a window of its own (double-click its title)
        self.layers_dock = self._dock("Layers", "layers", self.layers_pane, Qt.DockWidgetArea.TopDockWidgetArea)
        self.layers_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                     | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        for corner in (Qt.Corner.TopLeftCorner, Qt.Corner.BottomLeftCorner):
            self.setCorner(corner, Qt.DockWidgetArea.LeftDockWidgetArea)   # the controls run the full height
        self.tabs = ViewTabs(self.state)
        self.heatmap, self.clusters, self.spectra = self.tabs.heatmap, self.tabs.clusters, self.tabs.spectra
        self.risk, self.overview = self.tabs.risk, self.tabs.overview
        self.messages = MessageBar()
        central = QWidget()
        vl = QVBoxLayout(central)
        vl.setContentsMargins(4, 4, 4, 4)
        vl.addWidget(self.messages)
        vl.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.status = QLabel(self.state.status)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)   # never widens the window
        self.statusBar().addWidget(self.status, 1)
        self.menus = Actions(self)
        self._wire()
        self.wheel_guard = WheelGuard(self)
        self.wheel_guard.install(controls)
        self.shortcut_keeper = ShortcutKeeper(self.menus.shortcuts(), self)
        self.shortcut_keeper.install(self)

        self.resize(1366, 768)
        self.resizeDocks([self.log_dock, self.layers_dock], [90, 250], Qt.Orientation.Vertical)
        self._restore_layout()
        if all(self.sources.values()):      # the last session's inputs: checked quietly once the window runs
            QTimer.singleShot(0, lambda: self.sources.request(quiet=True))

    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _wire(self) -> None:
        ctl, st = self.controller, self.state
        # what the user asks for
        self.sources.inspect_requested.connect(lambda b, t, lo, tl, ex: self.inspect_sources(b, t, lo, tl, ex))
        self.sources.inspect_quietly.connect(lambda b, t, lo, tl, ex: self.inspect_sources(b, t, lo, tl, ex,
                                                                                          quiet=True))
        self.layers_pane.csv_requested.connect(self.export_table_dialog)
        self.export.note.connect(self.messages.show_message)
        self.sources.demo_btn.clicked.connect(self.open_demo)
        self.convert.convert_clicked.connect(ctl.start_convert)
        self.convert.cancel_clicked.connect(ctl.cancel)
        self.export.export_clicked.connect(self.start_export)
        self.override.apply_layer.connect(ctl.apply_override)
        self.override.apply_all.connect(ctl.apply_all)
        self.override.remove.connect(ctl.remove_override)
        # what the controller reports
        ctl.inspected.connect(self._inspected)
        ctl.sources_note.connect(self.sources.show_status)
        ctl.expert_needed.connect(self.sources.offer_expert)
        ctl.plan_changed.connect(self.table.set_plan)
        ctl.plan_changed.connect(self.export.suggest_output)
        ctl.plan_changed.connect(self.convert.reset_progress)
        ctl.plan_changed.connect(self._show_verdict)
        ctl.result_ready.connect(self._show_verdict)
        ctl.results_cleared.connect(self._show_verdict)
        ctl.drift_ready.connect(self.table.model_.set_drift)
        ctl.result_ready.connect(self.table.model_.set_result)
        ctl.results_cleared.connect(self.table.model_.clear_results)
        ctl.overrides_changed.connect(self.table.model_.set_overrides)
        ctl.overrides_changed.connect(self.override.set_overrides)
        ctl.layer_changed.connect(self.tabs.show_layer)
        ctl.layer_changed.connect(self.override.show_layer)
        ctl.overview_changed.connect(self.tabs.show_overview)
        ctl.compared_changed.connect(self.tabs.show_compared)
        self.tabs.compare.compare_requested.connect(ctl.start_compare)
        ctl.progress.connect(self.convert.show_progress)
        ctl.run_note.connect(self.convert.eta.setText)
        ctl.exporting.connect(self.export.remember_folder)
        ctl.written.connect(self.export.show_written)
        ctl.message.connect(self.messages.show_message)
        st.status_changed.connect(self.status.setText)
        st.job_changed.connect(lambda _name: self.sources.setEnabled(not st.running))

    # ---- what the menus and tests drive ---------------------------------------

    def open_demo(self) -> None:
        d = demo_inputs()
        self.sources.set_values(str(d["base"]), str(d["target"]), str(d["lora"]), target_loras=[], expert="")

    def ask(self, title: str, text: str) -> bool:
        """A yes / no question (the tests answer it themselves)."""
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def inspect_sources(self, base: str, target: str, lora: str, target_loras=(), expert: str | None = None,
                        quiet: bool = False) -> bool:
        """Inspect new inputs; converted layers of the current ones are discarded only when the user agrees."""
        s, runner = self.controller.session, self.controller.runner
        same = s.inputs == (base, target, lora) and s.stack == (tuple(target_loras or ()), expert)
        if (runner.busy and runner.job.name == "inspection" and same
                and not self.controller.quiet_inspection()):
            return True         # these very inputs are being inspected (Enter reaches a combo's field twice)
        if s.results:
            n = len(s.results)
            if quiet:           # never on a focus change: a note at most
                if not same:
                    self.sources.show_status(f"New inputs: press Enter or Inspect to use them (this discards the "
                                             f"{n} converted layers).", "")
                return False
            which = "these inputs again" if same else "the new inputs"
            if not self.ask("Discard the converted layers?",
                            f"Inspecting {which} discards the {n} converted layers (nothing written is touched). "
                            "Go on?"):
                if s.inputs is not None:
                    self.sources.set_values(*s.inputs, s.stack[0], s.stack[1] or "", inspect=False)
                self.sources.show_status("Kept the converted layers and their inputs.", "")
                return False
        return self.controller.inspect(base, target, lora, target_loras, expert, quiet=quiet)

    def _inspected(self, outcome: str) -> None:
        inputs = self.controller.session.inputs
        if outcome == "ok" and inputs is not None:      # only inputs that worked go into the recent lists
            self.sources.remember(*inputs)

    def _show_verdict(self, *_args) -> None:
        v = model_verdict(self.table.model_.verdicts())
        self.layers_pane.show_verdict(v, VERDICT_COLORS)

    def open_batch(self):
        """The batch queue window (one per main window, made when first asked for)."""
        from .batch_window import BatchWindow

        if self.batch_window is None:
            self.batch_window = BatchWindow(self)
        self.batch_window.show()
        self.batch_window.raise_()
        return self.batch_window

    def start_export(self) -> bool:
        out = self.state.output.strip()
        if out and Path(out).exists() and not self.state.running:
            report = " and its run report" if self.export.wants_report() else ""
            if not self.ask("Replace the file?", f"{out} exists. Replace it{report} with this conversion?"):
                self.messages.show_info("Nothing was written; choose another file (Export › File) to keep both.")
                return False
        return self.controller.start_export(report=self.export.wants_report())

    def export_table_dialog(self) -> None:
        start = str(Path(self.export.export_dir or Path.home()) / "layers.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export the layer table", start, "CSV (*.csv)")
        if path:
            self.export_table(path)

    def export_table(self, path) -> Path | None:
        """The rows the table shows, in its order, as CSV."""
        try:
            out = self.table.model_.write_csv(path, self.table.visible_rows())
        except OSError as exc:
            self.messages.show_error(f"Cannot write the table: {exc}")
            return None
        self.messages.show_info(f"Wrote {len(self.table.visible_rows())} rows to {out}.")
        return out

    def set_theme(self, name: str) -> None:
        self.gs.theme = name
        app = QApplication.instance()
        if app is not None:
            theme.apply(app, name)
        self.tabs.restyle()
        self.controller.refresh_views()

    # ---- layout, settings, closing -------------------------------------------

    def _restore_layout(self) -> None:
        qs = layout_settings()
        geo, state = qs.value("geometry"), qs.value("state")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)
        if isinstance(state, QByteArray):
            self.restoreState(state)
        self.tabs.restore_layout(qs)

    def _save_layout(self) -> None:
        qs = layout_settings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("state", self.saveState())
        self.tabs.save_layout(qs)
        qs.sync()

    def closeEvent(self, event) -> None:
        if self.state.running and not self.ask("Stop the running job?",
                                               f"The {self.state.job} is still running. Stop it and close? "
                                               "Nothing of it is written."):
            event.ignore()
            return
        if self.batch_window is not None:
            self.batch_window.close()
        self.controller.shutdown()
        for panel in (self.sources, self.convert, self.export):      # each writes its own part
            panel.save_settings(self.gs)
        self.gs.save()
        self._save_layout()
        self.log_pane.detach()
        super().closeEvent(event)
