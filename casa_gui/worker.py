"""The one adapter between casa_core's generators and Qt: a QObject run in a QThread.

A job is a callable ``fn(cancel: threading.Event) -> iterator``. Every item it
yields is forwarded with a queued ``yielded`` signal; progress is throttled to
visible changes; the end is exactly one of ``succeeded`` / ``cancelled`` /
``failed``, then ``done``. Cancelling sets the event the core checks between
layers; threads are stopped with quit() + wait(), never terminate().
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread, Signal, Slot

from casa_core.errors import Cancelled, CasaError

log = logging.getLogger("casa_gui")

GPU_HINT = "Pick CPU under Device, or float32 under Precision, and run again."


def user_message(exc: BaseException) -> str:
    """One line for the user (a CasaError's own text; OOM gets the GUI's hint)."""
    text = str(exc)
    oom = "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError"
    if oom and not isinstance(exc, CasaError):
        text = "the GPU ran out of memory"
    if oom:
        # the core's hint names CLI flags; say it in the window's words
        what = exc.what if isinstance(exc, CasaError) else text
        return f"{what}. {GPU_HINT}"
    return text


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

    def cancel(self) -> None:
        self.cancel_event.set()

    @Slot()
    def run(self) -> None:
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
            self.failed.emit(user_message(exc))
        except Exception as exc:  # a bug or an OS error: log the stack, show one line
            log.error("%s failed:\n%s", self.name, traceback.format_exc())
            self.failed.emit(user_message(exc) if "out of memory" in str(exc).lower()
                             else f"{self.name} failed: {type(exc).__name__}: {exc}")
        else:
            self.succeeded.emit()
        finally:
            # hand the job back to the GUI thread, so Python deletes it there once dropped
            self.moveToThread(QCoreApplication.instance().thread())
            self.done.emit()


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

    def stop(self, timeout_ms: int = -1) -> bool:
        """Cancel and wait for the thread (the core stops within one layer)."""
        if self.thread is None:
            return True
        self.job.cancel()
        thread = self.thread
        # QThread.wait() holds the GIL in PySide6 6.12, so the worker could never finish
        # its layer; poll with the GIL released instead
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while not thread.isFinished() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)
        ok = thread.isFinished() and thread.wait(1000)
        if ok:
            # deliver what the job emitted before it ended, so no stale item arrives later
            QCoreApplication.sendPostedEvents(None, QEvent.Type.MetaCall)
            self._finished()
        return ok

    @Slot()
    def _finished(self) -> None:
        if self.thread is None:
            return
        # 'finished' is emitted just before the thread ends; never drop a QThread still running
        while not self.thread.isFinished():
            time.sleep(0.001)
        self.job = self.thread = None       # Python owns both; they are deleted here, in this thread
        self.stopped.emit(self._name)
