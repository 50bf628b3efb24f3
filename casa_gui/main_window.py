"""The main window: the layout of the panels and views, and their wiring to the controller.

sources -> convert (background) -> see -> override -> export. The work is done by
``controller.Controller``; what the panels share lives in ``state.AppState``; the
menus are in ``actions``.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from casa_core.api import demo_inputs

from . import theme
from .actions import Actions
from .controller import Controller
from .export_panel import ExportPanel
from .layer_table import LayerTable
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
        self.tabs = ViewTabs(self.state)
        self.heatmap, self.clusters, self.spectra = self.tabs.heatmap, self.tabs.clusters, self.tabs.spectra
        self.risk, self.overview = self.tabs.risk, self.tabs.overview
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
        self.status = QLabel(self.state.status)
        self.statusBar().addWidget(self.status, 1)
        self.menus = Actions(self)
        self._wire()

        self.resize(1500, 950)
        self.resizeDocks([self.log_dock], [150], Qt.Orientation.Vertical)
        self._restore_layout()

    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _wire(self) -> None:
        ctl, st = self.controller, self.state
        # what the user asks for
        self.sources.inspect_requested.connect(ctl.inspect)
        self.sources.demo_btn.clicked.connect(self.open_demo)
        self.convert.convert_clicked.connect(ctl.start_convert)
        self.convert.cancel_clicked.connect(ctl.cancel)
        self.export.export_clicked.connect(self.start_export)
        self.override.apply_layer.connect(ctl.apply_override)
        self.override.apply_all.connect(ctl.apply_all)
        self.override.remove.connect(ctl.remove_override)
        # what the controller reports
        ctl.inspecting.connect(self.sources.remember)
        ctl.sources_note.connect(self.sources.show_status)
        ctl.plan_changed.connect(self.table.set_plan)
        ctl.plan_changed.connect(self.export.suggest_output)
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
        self.sources.set_values(str(d["base"]), str(d["target"]), str(d["lora"]))

    def start_export(self) -> bool:
        return self.controller.start_export(report=self.export.wants_report())

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
        geo, state, split = qs.value("geometry"), qs.value("state"), qs.value("splitter")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)
        if isinstance(state, QByteArray):
            self.restoreState(state)
        if isinstance(split, QByteArray):
            self.splitter.restoreState(split)
        self.tabs.restore_layout(qs)

    def _save_layout(self) -> None:
        qs = layout_settings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("state", self.saveState())
        qs.setValue("splitter", self.splitter.saveState())
        self.tabs.save_layout(qs)
        qs.sync()

    def closeEvent(self, event) -> None:
        self.controller.shutdown()
        for panel in (self.sources, self.convert, self.export):      # each writes its own part
            panel.save_settings(self.gs)
        self.gs.save()
        self._save_layout()
        self.log_pane.detach()
        super().closeEvent(event)
