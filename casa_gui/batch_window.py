"""The batch queue: many LoRAs onto one or more targets in one layer-major run (``casa batch``).

LoRAs and targets are added by picking, dropping or from a folder; the run uses the main
window's method, parameters and options; each output's status, progress and result show
in the table as the batch reports them; Cancel keeps the outputs already finished; a
finished output opens in the main window (the same views as a single conversion).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from casa_core.api import (
    BatchProgress,
    BatchSpec,
    BatchSummary,
    CasaError,
    LoraSpec,
    OutputEntry,
    TargetSpec,
    expand_loras,
    parse_weighted,
)

from . import session as jobs
from .sources import TakesPaths, split_entries
from .worker import Job, Runner

log = logging.getLogger("casa_gui")
COLUMNS = ("LoRA", "Target", "Status", "Result")


class _DropList(TakesPaths, QListWidget):
    """The LoRAs: files and folders dropped on it are added (a folder's LoRA files)."""

    dropped = Signal(list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)


class _TargetTable(TakesPaths, QTableWidget):
    """The targets: a name (editable), a model (a checkpoint, or empty for the base) and the distillation
    LoRAs stacked on it (editable, ``PATH[:STRENGTH]; ...``); model files or folders dropped on it are added."""

    dropped = Signal(list)

    def __init__(self, parent=None):
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Name", "Model", "Distillation LoRAs"])
        self.horizontalHeaderItem(2).setToolTip("LoRAs stacked on the model (on the base when the model is empty): "
                                                "PATH[:STRENGTH], several separated by ';'")
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)


class BatchWindow(QWidget):
    """The batch queue, beside the main window ``win`` (whose settings it runs with)."""

    finished = Signal(str)          # succeeded / cancelled / failed

    def __init__(self, win, parent=None):
        super().__init__(parent, Qt.WindowType.Window)
        self.win = win
        self.setWindowTitle("CASA Studio · Batch queue")
        self.runner = Runner(self)
        self.entries: list[OutputEntry] = []
        self.summary: BatchSummary | None = None
        self.last_spec: BatchSpec | None = None        # what the table's outputs were planned from
        self._rows: dict[tuple[int, int], int] = {}
        self._awaited = None    # (inputs, stack) of the main window's inspection a conversion follows

        self.base = QLineEdit(win.sources.values()[0])
        self.base.setPlaceholderText("base model the LoRAs were trained on")
        self.loras = _DropList()
        self.loras.dropped.connect(self.add_loras)
        self.targets = _TargetTable()
        self.targets.dropped.connect(self.add_targets)
        given_target = win.sources.values()[1]
        if given_target:
            self.add_targets([given_target])
        self.output_dir = QLineEdit()
        self.output_dir.setPlaceholderText("folder the outputs are written to")
        self.pattern = QLineEdit(BatchSpec.pattern)      # the core's default output names
        self.force = QCheckBox("Redo outputs already complete (otherwise they are skipped)")

        def button(text, slot, tip=""):
            b = QPushButton(text, toolTip=tip)
            b.clicked.connect(lambda _c=False: slot())
            return b

        def box(title, widget, *buttons):
            group = QGroupBox(title)
            v = QVBoxLayout(group)
            v.addWidget(widget, 1)
            row = QHBoxLayout()
            for b in buttons:
                row.addWidget(button(*b))
            v.addLayout(row)
            return group

        lora_box = box("LoRAs (pick, drop files or folders here)", self.loras, ("Add files…", self._pick_loras),
                       ("Add folder…", self._pick_lora_folder, "every .safetensors LoRA in a folder"),
                       ("Remove", lambda: self._remove(self.loras)))
        target_box = box("Targets (drop model files or folders here)", self.targets,
                         ("Add model file…", self._pick_target),
                         ("Add model folder…", self._pick_target_folder, "a diffusers folder"),
                         ("Add distillation LoRA…", self._pick_target_loras,
                          "a target given as the base plus distillation LoRAs (lightx2v, CausVid, ...)"),
                         ("Remove", self._remove_target))
        inputs = QHBoxLayout()
        inputs.addWidget(lora_box, 1)
        inputs.addWidget(target_box, 1)

        form = QFormLayout()
        for label, field, tip, pick in (("Base", self.base, "Choose the base model", self._pick_base),
                                        ("Output folder", self.output_dir, "Choose the output folder",
                                         self._pick_output)):
            row = QHBoxLayout()
            row.addWidget(field, 1)
            b = QToolButton(text="…", toolTip=tip)
            b.clicked.connect(pick)
            row.addWidget(b)
            form.addRow(label, row)
        form.addRow("File names", self.pattern)
        form.addRow("", self.force)
        form.addRow("", QLabel("Method, parameters, rank, device, format and dtype: the main window's."))

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.doubleClicked.connect(lambda _i: self.inspect_selected())
        self.progress = QProgressBar()
        self.note = QLabel("")
        self.run_btn = button("Run batch", self.start, "convert every LoRA for every target")
        self.cancel_btn = button("Cancel", self.cancel, "stop after the current layers; finished outputs stay")
        self.open_btn = button("Open output folder", self.open_results)
        self.inspect_btn = button("Inspect in main window", self.inspect_selected,
                                  "convert the selected output's LoRA and target in the main window, with its views")
        buttons = QHBoxLayout()
        for w in (self.run_btn, self.cancel_btn, self.open_btn, self.inspect_btn):
            buttons.addWidget(w)
        buttons.addStretch(1)

        v = QVBoxLayout(self)
        v.addLayout(inputs, 2)
        v.addLayout(form)
        v.addLayout(buttons)
        v.addWidget(self.progress)
        v.addWidget(self.note)
        v.addWidget(self.table, 3)
        self._set_running(False)
        self.resize(1100, 760)

    # ---- inputs --------------------------------------------------------------------------

    def lora_paths(self) -> list[str]:
        return [self.loras.item(i).text() for i in range(self.loras.count())]

    def add_loras(self, paths: list[str]) -> None:
        """Add LoRA files; a folder adds its LoRA files (a PEFT folder is one LoRA)."""
        try:
            found = expand_loras([str(p) for p in paths])
        except CasaError as exc:
            self.note.setText(str(exc))
            return
        have = set(self.lora_paths())
        for p in found:
            if p not in have:
                self.loras.addItem(p)
                have.add(p)

    def add_targets(self, paths: list[str]) -> None:
        have = {self.targets.item(r, 1).text() for r in range(self.targets.rowCount())}
        for p in paths:
            if p not in have:
                self._add_target_row(p, "")
                have.add(p)

    def add_target_loras(self, paths: list[str]) -> None:
        """One target: the base with these distillation LoRAs stacked on it (strength 1, editable)."""
        if paths:
            self._add_target_row("", "; ".join(paths))

    def _add_target_row(self, model: str, loras: str) -> None:
        r = self.targets.rowCount()
        self.targets.insertRow(r)
        self.targets.setItem(r, 0, QTableWidgetItem(TargetSpec(None, model or None, tuple(
            (p, 1.0) for p in split_entries(loras))).label))
        path = QTableWidgetItem(model)
        path.setFlags(path.flags() & ~Qt.ItemFlag.ItemIsEditable)
        path.setToolTip(model or "the base model")
        self.targets.setItem(r, 1, path)
        self.targets.setItem(r, 2, QTableWidgetItem(loras))

    def target_specs(self) -> list[TargetSpec]:
        """The table's targets (CasaError on a strength that is not a number)."""
        specs = []
        for r in range(self.targets.rowCount()):
            entries = split_entries(self.targets.item(r, 2).text())
            loras = tuple((w.spec, w.strength) for w in map(parse_weighted, entries))
            specs.append(TargetSpec(self.targets.item(r, 0).text().strip() or None,
                                    self.targets.item(r, 1).text().strip() or None, loras))
        return specs

    def _start_dir(self) -> str:
        return str(Path(self.base.text()).parent) if self.base.text() else ""

    def _pick(self, title: str, *, folder: bool = False, start: str | None = None,
              filter_: str = "Models (*.safetensors *.json *.pt *.pth *.ckpt)") -> str:
        """A file (or a folder) the user picks; '' when none."""
        start = self._start_dir() if start is None else start
        if folder:
            return QFileDialog.getExistingDirectory(self, title, start)
        return QFileDialog.getOpenFileName(self, title, start, filter_)[0]

    def _pick_lora_files(self, title: str) -> list[str]:
        """The LoRA files the user picks (none: [])."""
        return QFileDialog.getOpenFileNames(self, title, self._start_dir(), "LoRA (*.safetensors)")[0]

    def _pick_loras(self) -> None:
        self.add_loras(self._pick_lora_files("LoRAs"))

    def _pick_lora_folder(self) -> None:
        if path := self._pick("A folder of LoRAs", folder=True):
            self.add_loras([path])

    def _pick_target(self) -> None:
        if path := self._pick("Target model"):
            self.add_targets([path])

    def _pick_target_folder(self) -> None:
        if path := self._pick("Target model folder", folder=True):
            self.add_targets([path])

    def _pick_target_loras(self) -> None:
        self.add_target_loras(self._pick_lora_files("Distillation LoRAs (stacked on the base)"))

    def _pick_base(self) -> None:
        if path := self._pick("Base model"):
            self.base.setText(path)

    def _pick_output(self) -> None:
        if path := self._pick("Write the outputs into", folder=True, start=self.output_dir.text()):
            self.output_dir.setText(path)

    def _remove(self, widget: QListWidget) -> None:
        for item in widget.selectedItems():
            widget.takeItem(widget.row(item))

    def _remove_target(self) -> None:
        for r in sorted({i.row() for i in self.targets.selectedIndexes()}, reverse=True):
            self.targets.removeRow(r)

    # ---- running -----------------------------------------------------------------------

    def spec(self) -> BatchSpec:
        """The batch the fields describe, with the main window's settings (CasaError when incomplete)."""
        from dataclasses import replace

        if not self.base.text().strip():
            raise CasaError("no base model", "give the base model the LoRAs were trained on", setting="base")
        if not self.output_dir.text().strip():
            raise CasaError("no output folder", "choose the folder to write the outputs to", setting="output_dir")
        st = self.win.state
        options = replace(st.run_options(), view_size=0)
        return BatchSpec(self.base.text().strip(), self.target_specs(), [LoraSpec(p) for p in self.lora_paths()],
                         self.output_dir.text().strip(), st.settings.validate(), options,
                         pattern=self.pattern.text().strip() or BatchSpec.pattern,
                         force=self.force.isChecked()).validate()

    def start(self) -> bool:
        if self.runner.busy:
            return False
        try:
            spec = self.spec()
        except CasaError as exc:
            self.note.setText(str(exc))
            return False
        self.entries, self.summary, self._rows, self.last_spec = [], None, {}, spec
        self.table.setRowCount(0)
        self.progress.setValue(0)
        self.note.setText("Opening and planning…")
        job = Job("batch", jobs.batch_job(spec))
        # bound methods of this window (not lambdas): Qt queues them to the GUI thread, in order
        job.yielded.connect(self._item)
        job.succeeded.connect(self._succeeded)
        job.cancelled.connect(self._cancelled)
        job.failed.connect(self._failed)
        self._set_running(True)
        log.info("batch: %d LoRAs x %d targets into %s", len(spec.loras), len(spec.targets), spec.output_dir)
        self.runner.start(job)
        return True

    def cancel(self) -> None:
        self.runner.cancel()
        self.note.setText("Cancelling after the current layers; finished outputs stay…")

    def _item(self, item) -> None:
        if isinstance(item, list):               # the planned outputs
            self.entries = item
            self.table.setRowCount(len(item))
            for r, e in enumerate(item):
                self._rows[(e.lora_index, e.target_index)] = r
                self._show(e)
            self.note.setText(f"{len(item)} outputs planned.")
        elif isinstance(item, BatchProgress):
            if item.entry is not None:
                self._show(item.entry)
            for key in item.computing:              # the outputs of this pass, still being computed
                r = self._rows.get(key)
                status = self.table.item(r, 2) if r is not None else None
                if status is not None and status.text() in ("pending", "computing"):
                    status.setText("computing")
                    self.table.item(r, 3).setText(f"layer {item.layer} of {item.layers}")
            frac = (item.pass_index + item.layer / max(item.layers, 1)) / max(item.passes, 1)
            self.progress.setValue(int(round(100 * frac)))
            eta = "" if item.eta is None else f", about {item.eta:.0f} s left"
            self.note.setText(f"Pass {item.pass_index + 1} of {item.passes}: layer {item.layer} of {item.layers}; "
                              f"{item.outputs_done} of {item.outputs} outputs finished{eta}.")
        elif isinstance(item, BatchSummary):
            self.summary = item
            for e in item.entries:
                self._show(e)

    def _show(self, e: OutputEntry) -> None:
        r = self._rows.get((e.lora_index, e.target_index))
        if r is None:
            return
        result = e.error or (str(e.path) if e.status in ("written", "skipped") else "")
        for c, text in enumerate((e.lora, e.target, e.status, result)):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            self.table.setItem(r, c, item)

    def _succeeded(self) -> None:
        self._end("succeeded")

    def _cancelled(self) -> None:
        self._end("cancelled")

    def _failed(self, message: str) -> None:
        self._end("failed", message)

    def _end(self, outcome: str, message: str = "") -> None:
        self._set_running(False)
        if outcome == "succeeded" and self.summary is not None:
            s = self.summary
            self.progress.setValue(100)
            self.note.setText(f"Done in {s.seconds:.1f} s: {s.count('written')} written, {s.count('skipped')} "
                              f"complete already, {len(s.failed)} failed.")
        elif outcome == "cancelled":
            kept = sum(e.status == "written" for e in self.entries)
            for e in self.entries:      # the batch marked those it did not finish cancelled
                self._show(e)
            self.note.setText(f"Cancelled; finished outputs kept: {kept}; nothing partial was written.")
        else:
            self.note.setText(message)
        self.finished.emit(outcome)

    def _set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def selected_entry(self) -> OutputEntry | None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        if len(rows) != 1:
            return None
        r = rows.pop()
        return next((e for e in self.entries if self._rows.get((e.lora_index, e.target_index)) == r), None)

    def open_results(self) -> None:
        if self.output_dir.text():
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.output_dir.text()))

    def inspect_selected(self) -> bool:
        """Open the selected output's LoRA and target in the main window and convert them there once they
        are inspected: the same views as any single conversion. False when the main window does not
        inspect them (the user keeps its converted layers, or a job runs there)."""
        e, spec = self.selected_entry(), self.last_spec
        if e is None or spec is None:
            self.note.setText("Select one output to inspect.")
            return False
        target = spec.targets[e.target_index]
        win, src = self.win, self.win.sources
        self._forget_inspection()           # an output asked for before and not inspected yet: this one instead
        src.set_values(spec.base, target.path or "", spec.loras[e.lora_index].path,
                       target_loras=[f"{p}:{s:g}" for p, s in target.loras], expert="", inspect=False)
        win.raise_()
        win.activateWindow()
        if not win.inspect_sources(*src.values(), src.stack.entries(), src.chosen_expert()):
            return False
        s = win.controller.session
        self._awaited = (s.inputs, s.stack)
        win.controller.inspected.connect(self._convert_inspected)
        return True

    def _forget_inspection(self) -> None:
        if self._awaited is not None:
            self._awaited = None
            self.win.controller.inspected.disconnect(self._convert_inspected)

    def _convert_inspected(self, outcome: str) -> None:
        """Once, after the inspection ``inspect_selected`` started: convert in the main window."""
        awaited = self._awaited
        self._forget_inspection()
        if outcome == "ok":
            # deferred: an inspection stopped by a newer one ends while that one is being started
            QTimer.singleShot(0, lambda: self._convert(awaited))

    def _convert(self, awaited: tuple) -> None:
        ctl = self.win.controller
        if (ctl.session.inputs, ctl.session.stack) == awaited:     # still the inputs asked for
            ctl.start_convert()

    def closeEvent(self, event) -> None:
        if self.runner.busy:
            self.runner.stop()
        super().closeEvent(event)
