"""The one adapter between casa_core's generators and Qt: a QObject run in a QThread.

A job is a callable ``fn(cancel: threading.Event) -> iterator``. Every item it
yields is forwarded with a queued ``yielded`` signal; progress is throttled to
visible changes; the end is exactly one of ``succeeded`` / ``cancelled`` /
``failed``, then ``done``, which a ``finally`` always sends. Cancelling sets the
event the core checks between layers; threads are stopped with cancel + quit() and
a bounded wait, never terminate(): a worker that outlives the wait is logged and
left to end on its own, so closing the window never hangs.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread, Signal, Slot

from casa_core.api import Cancelled, CasaError

log = logging.getLogger("casa_gui")


# the most Runner.stop() waits: a layer normally ends in seconds, even a large one on the CPU
STOP_TIMEOUT_MS = 60_000
# threads that outlived stop(): kept referenced, as destroying a running QThread aborts the process
_abandoned: list[tuple[QThread, QObject]] = []


def user_message(exc: BaseException) -> str:
    """One line for the user: a CasaError's own text (the core names settings, never CLI flags)."""
    return str(exc)


class Job(QObject):
    """Runs one generator in a worker thread and forwards what it yields."""

    yielded = Signal(object)
    progress = Signal(int, int, float)      # done, total, eta seconds (throttled)
    succeeded = Signal()
    cancelled = Signal()
    failed = Signal(str)                    # one-line user message
    done = Signal()

    def __init__(self, name: str, fn: Callable[[threading.Event], Iterator], total: int = 0,
                 throttle_s: float = 0.1):
        super().__init__()
        self.name = name
        self._fn = fn
        self.total = total
        self.throttle_s = throttle_s
        self.cancel_event = threading.Event()
        self.ended = threading.Event()      # set when run() is done with the job, whatever the outcome
        self.error_setting: str | None = None   # the setting the CasaError it failed with names (before 'failed')

    def cancel(self) -> None:
        self.cancel_event.set()

    @Slot()
    def run(self) -> None:
        try:
            self._run()
        finally:
            self.ended.set()
            try:
                # hand the job back to the GUI thread, so Python deletes it there once dropped
                self.moveToThread(QCoreApplication.instance().thread())
            except Exception:  # never let this skip 'done': the thread only quits on it
                log.error("%s: could not hand the job back to the GUI thread:\n%s", self.name,
                          traceback.format_exc())
            finally:
                self.done.emit()

    def _run(self) -> None:
        t0 = last = time.perf_counter()
        n = 0
        try:
            for item in self._fn(self.cancel_event):
                n += 1
                self.yielded.emit(item)
                now = time.perf_counter()
                if self.total and (now - last >= self.throttle_s or n == self.total):
                    last = now
                    self.progress.emit(n, self.total, (now - t0) / n * (self.total - n))
            if self.cancel_event.is_set():
                raise Cancelled()
        except Cancelled:
            log.info("%s cancelled after %d of %d steps; nothing was written", self.name, n, self.total)
            self.cancelled.emit()
        except CasaError as exc:
            log.warning("%s failed: %s", self.name, exc)
            self.error_setting = exc.setting
            self.failed.emit(user_message(exc))
        except Exception as exc:  # a bug or an OS error: log the stack, show one line
            log.error("%s failed:\n%s", self.name, traceback.format_exc())
            self.failed.emit(f"{self.name} failed: {type(exc).__name__}: {exc}")
        else:
            self.succeeded.emit()


class Runner(QObject):
    """Owns at most one running Job and its QThread."""

    started = Signal(str)
    stopped = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.job: Job | None = None
        self.thread: QThread | None = None
        self._name = ""

    @property
    def busy(self) -> bool:
        return self.thread is not None

    def start(self, job: Job) -> Job:
        if self.busy:
            raise RuntimeError("a job is already running")
        thread = QThread()
        thread.setObjectName(f"casa-{job.name}")
        job.moveToThread(thread)
        thread.started.connect(job.run)
        # direct: quit() is thread-safe, and stop() may be waiting with no event loop running
        job.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._finished)
        self.job, self.thread, self._name = job, thread, job.name
        thread.start()
        self.started.emit(job.name)
        return job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def stop(self, timeout_ms: int | None = None) -> bool:
        """Cancel the job and wait, at most ``timeout_ms`` (``STOP_TIMEOUT_MS``), for its thread.

        The core stops within one layer, so this is normally quick. Returns False when the
        thread outlived the wait: that is logged, the thread is left to end on its own (its
        late signals are dropped) and the runner is free again.
        """
        if self.thread is None:
            return True
        job, thread, name = self.job, self.thread, self._name
        job.cancel()
        # Job.run runs inside 'started', before the thread's event loop starts: quit() now makes
        # that loop return as soon as the job does, even should its 'done' never come
        thread.quit()
        # Polled, not QThread.wait(): the PySide6 6.12 work-around for a hang here that was put
        # down to wait() holding the GIL. Measured with 6.12.0, wait() does release the GIL; that
        # hang was 'done' -> quit() queued to this blocked GUI thread, hence the direct connection
        # in start() and the quit() above. Polling stays: it bounds the wait and logs.
        limit_s = (STOP_TIMEOUT_MS if timeout_ms is None else max(timeout_ms, 0)) / 1000
        t0 = time.monotonic()
        said = False
        while not thread.isFinished() and time.monotonic() - t0 < limit_s:
            if not said and time.monotonic() - t0 > 2.0:
                log.info("waiting for %s to finish its current step (at most %.0f s)", name, limit_s)
                said = True
            time.sleep(0.01)
        if thread.isFinished() and thread.wait(1000):
            # deliver what the job emitted before it ended, so no stale item arrives later
            QCoreApplication.sendPostedEvents(None, QEvent.Type.MetaCall)
            self._release(thread)
            return True
        log.error("%s did not stop within %.0f s of being cancelled (%s); going on without it: "
                  "its results will be ignored", name, time.monotonic() - t0,
                  "the job's thread did not end" if job.ended.is_set() else "its current step is still running")
        self._abandon(thread)
        return False

    @Slot()
    def _finished(self) -> None:
        thread = self.sender()
        if thread is not None and thread is not self.thread:
            _reap_abandoned()               # a thread stop() gave up on has ended since
            return
        if self.thread is not None:
            self._release(self.thread)

    def _release(self, thread: QThread) -> None:
        if thread is not self.thread:       # stop() and the queued 'finished' may both get here
            return
        # 'finished' is emitted just before the thread ends; never drop a QThread still running
        t0 = time.monotonic()
        while not thread.isFinished():
            if time.monotonic() - t0 > 5.0:
                log.error("%s: its thread sent 'finished' but did not end; going on without it", self._name)
                self._abandon(thread)
                return
            time.sleep(0.001)
        self.job = self.thread = None       # Python owns both; they are deleted here, in this thread
        _reap_abandoned()
        self.stopped.emit(self._name)

    def _abandon(self, thread: QThread) -> None:
        """Free the runner of a thread that would not end; it is kept alive until it does."""
        job = self.job
        job.blockSignals(True)              # late items and outcomes belong to no run any more
        _abandoned.append((thread, job))
        self.job = self.thread = None
        self.stopped.emit(self._name)


def _reap_abandoned() -> None:
    _abandoned[:] = [(t, j) for t, j in _abandoned if not t.isFinished()]
