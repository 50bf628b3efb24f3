"""Cancel, close during a run, responsiveness, and the worker adapter itself."""

import threading
import time

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from casa_gui.worker import Job, Runner

from .conftest import worker_threads


def test_cancel_mid_run_leaves_no_output_and_no_thread(demo_window, qtbot, slow_layers, tmp_path):
    w = demo_window
    out = tmp_path / "never.safetensors"
    w.export.path.setText(str(out))
    assert w.start_export()                         # no results yet: converts, then would export
    qtbot.waitUntil(lambda: len(w.controller.session.results) >= 3, timeout=30_000)
    assert w.convert.cancel_btn.isEnabled() and not w.convert.convert_btn.isEnabled()
    t0 = time.perf_counter()
    with qtbot.waitSignal(w.controller.run_finished, timeout=10_000) as blocker:
        w.convert.cancel_btn.click()
    assert blocker.args == ["cancelled"]
    assert time.perf_counter() - t0 < 2.0           # within one layer
    assert 3 <= len(w.controller.session.results) < 32 and not w.controller.session.complete
    assert not w.controller.runner.busy and w.controller.runner.thread is None
    qtbot.waitUntil(lambda: not worker_threads(), timeout=5_000)
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    assert "nothing was written" in w.messages.text()
    assert w.convert.convert_btn.isEnabled() and not w.convert.cancel_btn.isEnabled()
    # the app stays usable: the next run completes
    with qtbot.waitSignal(w.controller.run_finished, timeout=50_000) as blocker:
        w.controller.start_convert()
    assert blocker.args == ["succeeded"] and w.controller.session.complete


def test_escape_cancels(demo_window, qtbot, slow_layers):
    from PySide6.QtCore import Qt

    w = demo_window
    w.controller.start_convert()
    qtbot.waitUntil(lambda: len(w.controller.session.results) >= 1, timeout=30_000)
    with qtbot.waitSignal(w.controller.run_finished, timeout=10_000) as blocker:
        qtbot.keyClick(w, Qt.Key.Key_Escape)
    assert blocker.args == ["cancelled"]


def test_close_during_run_cancels_and_waits(demo_window, qtbot, slow_layers, tmp_path):
    w = demo_window
    w.export.path.setText(str(tmp_path / "x.safetensors"))
    w.controller.start_convert()
    qtbot.waitUntil(lambda: len(w.controller.session.results) >= 2, timeout=30_000)
    assert w.controller.runner.busy
    t0 = time.perf_counter()
    w.close()
    assert time.perf_counter() - t0 < 5.0
    assert not w.controller.runner.busy
    qtbot.waitUntil(lambda: not worker_threads(), timeout=5_000)
    assert not list(tmp_path.glob("*.safetensors"))


def test_window_stays_responsive_during_a_run(demo_window, qtbot, slow_layers):
    w = demo_window
    ticks = []
    timer = QTimer(interval=20, timeout=lambda: ticks.append(time.perf_counter()))
    timer.start()
    w.controller.start_convert()
    qtbot.waitUntil(lambda: len(w.controller.session.results) >= 4, timeout=30_000)
    # switching layers, resizing and scrolling while the worker runs
    w.state.select(w.controller.session.plan.layers[1].module)
    w.resize(1100, 700)
    w.table.verticalScrollBar().setValue(5)
    assert w.heatmap.result is w.controller.session.results[w.controller.session.plan.layers[1].module]
    qtbot.waitUntil(lambda: not w.controller.runner.busy, timeout=50_000)
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 50 and max(gaps) < 1.0, max(gaps)


class _Receiver(QObject):
    def __init__(self):
        super().__init__()
        self.items, self.threads, self.ends = [], [], []

    def got(self, item):
        self.items.append(item)
        self.threads.append(QThread.currentThread())

    def end(self, *args):
        self.ends.append(args)


class _Holder(QObject):
    go = Signal()


def test_job_forwards_items_on_the_gui_thread_and_throttles_progress(qtbot, qapp):
    def gen(cancel: threading.Event):
        for i in range(50):
            time.sleep(0.004)
            yield i

    rec = _Receiver()
    progress = []
    runner = Runner()
    job = Job("count", gen, total=50, throttle_s=0.05)
    job.yielded.connect(rec.got)
    job.progress.connect(lambda *a: progress.append(a))
    job.succeeded.connect(rec.end)
    with qtbot.waitSignal(runner.stopped, timeout=10_000):
        runner.start(job)
    assert rec.items == list(range(50))
    assert all(t is qapp.thread() for t in rec.threads)     # queued onto the GUI thread
    assert rec.ends == [()]
    assert 1 <= len(progress) < 50 and progress[-1][:2] == (50, 50)
    assert not runner.busy


def test_job_reports_errors_as_one_line(qtbot):
    from casa_core.api import OutOfMemory

    def bad(cancel):
        yield 1
        raise OutOfMemory("blocks.0.ffn.0")

    def bug(cancel):
        raise ZeroDivisionError("boom")
        yield

    for fn, expect in ((bad, "the GPU ran out of memory on blocks.0.ffn.0; use the cpu device"),
                       (bug, "ZeroDivisionError: boom")):
        rec = _Receiver()
        runner = Runner()
        job = Job("test", fn)
        job.failed.connect(rec.end)
        with qtbot.waitSignal(runner.stopped, timeout=10_000):
            runner.start(job)
        assert len(rec.ends) == 1 and expect in rec.ends[0][0]
        assert "Traceback" not in rec.ends[0][0]


def _until_cancelled(cancel: threading.Event):
    while not cancel.is_set():
        time.sleep(0.01)
        yield 0


def test_stop_ends_the_thread_even_without_done(qtbot):
    """stop() quits the thread itself: a lost 'done' (or a queued quit) cannot keep it waiting."""
    runner = Runner()
    job = runner.start(Job("lost done", _until_cancelled))
    qtbot.wait(50)
    job.blockSignals(True)                          # 'done' never reaches the thread
    t0 = time.perf_counter()
    assert runner.stop(timeout_ms=10_000)
    assert time.perf_counter() - t0 < 2.0 and not runner.busy


def test_done_is_sent_even_if_handing_the_job_back_fails(qtbot, monkeypatch):
    from casa_gui import worker

    class NoApp:
        """Stands in for QCoreApplication in worker.py: instance() fails."""

        sendPostedEvents = staticmethod(worker.QCoreApplication.sendPostedEvents)

        @staticmethod
        def instance():
            raise RuntimeError("no application")

    monkeypatch.setattr(worker, "QCoreApplication", NoApp)
    rec = _Receiver()
    runner = Runner()
    job = Job("count", lambda cancel: iter(range(3)))
    job.succeeded.connect(rec.end)
    with qtbot.waitSignal(runner.stopped, timeout=10_000):
        runner.start(job)
    assert rec.ends == [()] and not runner.busy


def test_stop_gives_up_after_its_bound_and_logs_it(qtbot, caplog):
    from casa_gui import worker

    release = threading.Event()

    def stuck(cancel):
        yield 0
        release.wait(30)                            # one step that ignores cancel
        yield 1

    rec = _Receiver()
    runner = Runner()
    job = Job("stuck job", stuck)
    job.yielded.connect(rec.got)
    with qtbot.waitSignal(runner.stopped, timeout=5_000):
        runner.start(job)
        qtbot.waitUntil(lambda: rec.items == [0], timeout=5_000)
        t0 = time.perf_counter()
        assert not runner.stop(timeout_ms=300)
    assert time.perf_counter() - t0 < 2.0
    assert not runner.busy and "stuck job did not stop within" in caplog.text
    assert [t for t, _ in worker._abandoned if t.objectName() == "casa-stuck job"]
    release.set()                                   # the thread ends on its own, and is dropped then
    qtbot.waitUntil(lambda: not worker._abandoned, timeout=10_000)
    qtbot.wait(50)
    assert rec.items == [0]                         # its late item went nowhere
