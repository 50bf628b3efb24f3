"""The window's actions, shortcuts and menus; they are enabled from the shared state."""

from __future__ import annotations

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMessageBox

from casa_core.api import method_doc

PAPER = "https://arxiv.org/abs/2605.01929"


class Actions:
    """Builds every QAction of ``win`` (a MainWindow) and its menu bar."""

    def __init__(self, win):
        self.win = win
        ctl, state = win.controller, win.state

        def act(text, slot, shortcut=None, tip=None):
            a = QAction(text, win)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
                a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            if tip:
                a.setStatusTip(tip)
            a.triggered.connect(lambda _checked=False: slot())
            win.addAction(a)
            return a

        self.demo = act("Open &demo inputs", win.open_demo)
        self.convert = act("&Convert", ctl.start_convert, "Ctrl+R", "Run the transfer on every layer")
        self.cancel = act("C&ancel", ctl.cancel, "Esc", "Stop after the current layer")
        self.export = act("&Export LoRA", win.start_export, "Ctrl+E", "Write the converted LoRA")
        self.plots = act("Export &plots as PNG…", self.export_plots_dialog, "Ctrl+Shift+P")
        self.plots_all = act("Export the current &view of every layer shown…", self.export_filtered_dialog,
                             tip="The current plot page for each layer the table's filter shows, one PNG each")
        self.table_csv = act("Export the layer &table as CSV…", win.export_table_dialog)
        self.batch = act("&Batch queue…", win.open_batch, "Ctrl+B",
                         "Many LoRAs onto one or more targets in one run")
        self.next = act("&Next layer", lambda: win.table.step(+1), "Ctrl+Down")
        self.prev = act("&Previous layer", lambda: win.table.step(-1), "Ctrl+Up")
        self.next_tab = act("Next &plot", lambda: self.step_tab(+1), "Ctrl+PgDown")
        self.next_tab.setShortcuts([QKeySequence("Ctrl+PgDown"), QKeySequence("Ctrl+Tab")])
        self.prev_tab = act("Pre&vious plot", lambda: self.step_tab(-1), "Ctrl+PgUp")
        self.prev_tab.setShortcuts([QKeySequence("Ctrl+PgUp"), QKeySequence("Ctrl+Shift+Tab")])
        self.tab_actions = [act(f"{win.tabs.tabText(i)}", lambda i=i: win.tabs.setCurrentIndex(i), f"Alt+{i + 1}")
                            for i in range(win.tabs.count())]
        self.quit = act("&Quit", win.close, QKeySequence.StandardKey.Quit)
        bar = win.menuBar()
        m = bar.addMenu("&File")
        for a in (self.demo, self.export, self.plots, self.plots_all, self.table_csv, self.batch):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.quit)
        m = bar.addMenu("&Run")
        for a in (self.convert, self.cancel, self.next, self.prev):
            m.addAction(a)
        m = bar.addMenu("&View")
        tm = m.addMenu("&Theme")
        group = QActionGroup(win)
        for name in ("system", "light", "dark"):
            a = QAction(name.capitalize(), win, checkable=True)
            a.setChecked(win.gs.theme == name)
            a.triggered.connect(lambda _c=False, n=name: win.set_theme(n))
            group.addAction(a)
            tm.addAction(a)
        m.addAction(win.controls_dock.toggleViewAction())
        m.addAction(win.layers_dock.toggleViewAction())
        m.addAction(win.log_dock.toggleViewAction())
        m.addSeparator()
        m.addAction(self.next_tab)
        m.addAction(self.prev_tab)
        pm = m.addMenu("&Plots")
        for a in self.tab_actions:
            pm.addAction(a)
        m = bar.addMenu("&Help")
        m.addAction(act("What the &numbers mean", self.show_numbers, "F1",
                        tip="The table's columns, the verdict's thresholds and the plots, in the app"))
        m.addAction(act("How CASA &works", self.show_method, tip="The rule, the other methods, and where this "
                        "implementation departs from the authors' research code (docs/method.md)"))
        m.addAction(act("&About CASA Studio", self.show_about))
        state.job_changed.connect(self._job_changed)
        self._job_changed(state.job)

    def _job_changed(self, name: str) -> None:
        running = self.win.state.running
        self.convert.setEnabled(not running)
        self.export.setEnabled(not running)
        self.cancel.setEnabled(bool(name))

    def shortcuts(self) -> list[QKeySequence]:
        """Every shortcut of the window's actions but Esc (fields keep Esc for their own popups)."""
        return [seq for a in self.win.actions() for seq in a.shortcuts() if seq.toString() != "Esc"]

    def step_tab(self, delta: int) -> None:
        tabs = self.win.tabs
        tabs.setCurrentIndex((tabs.currentIndex() + delta) % tabs.count())

    def show_numbers(self) -> None:
        from .help_page import NumbersDialog

        if getattr(self, "_numbers", None) is None:
            self._numbers = NumbersDialog(self.win)
        self._numbers.show()
        self._numbers.raise_()

    def export_filtered_dialog(self) -> None:
        from PySide6.QtWidgets import QProgressDialog

        win = self.win
        mods = [m for m in win.table.visible_modules() if m in win.controller.session.results]
        if not mods:
            win.messages.show_error("Convert first: no layer the table shows has a result to draw.")
            return
        folder = QFileDialog.getExistingDirectory(win, f"Write the current view of {len(mods)} layers into",
                                                  win.export.export_dir or "")
        if not folder:
            return
        dlg = QProgressDialog("Writing the plots…", "Stop", 0, len(mods), win)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)

        def progress(i, n):
            dlg.setValue(i)
            return not dlg.wasCanceled()

        try:
            paths = win.tabs.export_current_view(folder, mods, win.controller.session.results, progress)
            win.messages.show_info(f"Wrote {len(paths)} plots to {folder}.")
        except OSError as exc:
            win.messages.show_error(f"Cannot write the plots: {exc}")
        finally:
            dlg.close()

    def show_about(self) -> None:
        import html

        from .diagnostics import runtime_summary
        from .settings_store import log_dir

        doc = method_doc()
        how = (f'<a href="{QUrl.fromLocalFile(str(doc)).toString()}">docs/method.md</a>' if doc is not None
               else "docs/method.md in the source repository")
        runtime = "<br>".join(html.escape(part) for part in runtime_summary().split("; "))
        QMessageBox.about(self.win, "About CASA Studio",
                          "<p>Moves a LoRA from a base video diffusion model onto a distilled variant "
                          "(CASA, closed form).</p>"
                          f"<p>How it works: {how}: the rule, the other methods, and where this implementation "
                          "departs from the authors' research code. Paper: "
                          f'<a href="{PAPER}">arXiv 2605.01929</a>.</p>'
                          f"<p>{runtime}</p><p>Logs: {html.escape(str(log_dir()))}</p>")

    def show_method(self) -> None:
        doc = method_doc()
        if doc is None or not QDesktopServices.openUrl(QUrl.fromLocalFile(str(doc))):
            QMessageBox.information(self.win, "How CASA works",
                                    f"The method notes are docs/method.md in the source repository, and {PAPER}.")

    def export_plots_dialog(self) -> None:
        win = self.win
        folder = QFileDialog.getExistingDirectory(win, "Write the plots into", win.export.export_dir or "")
        if folder:
            try:
                paths = win.tabs.export_plots(folder)
                win.messages.show_info(f"Wrote {len(paths)} plots to {folder}.")
            except OSError as exc:
                win.messages.show_error(f"Cannot write the plots: {exc}")
