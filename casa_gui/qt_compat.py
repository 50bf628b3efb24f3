"""Work-arounds for bugs of the Qt binding itself, applied once before any window exists.

PySide6 6.12 on CPython 3.11 loses references to the singletons ``True``, ``False``
and ``None`` when Python code emits them through signals (``Signal(bool)``, or inside
``Signal(object)`` payloads; pyqtgraph does this on every view-range change). After a
few thousand emits a refcount reaches zero and CPython aborts with "bool_dealloc:
deallocating True or False" (or "none_dealloc"). CPython 3.12+ makes these
singletons immortal; on older versions we give them the same effectively-infinite
refcount, which is harmless whether or not the binding has the bug.
"""

from __future__ import annotations

import sys

_PIN = 1 << 40
_done = False


def pin_singletons() -> bool:
    """Make True, False and None immortal on CPython < 3.12; returns whether it did."""
    global _done
    if _done or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    import ctypes

    for value in (True, False, None):
        # ob_refcnt is the first field of every object in a CPython release build
        ctypes.c_ssize_t.from_address(id(value)).value += _PIN
    _done = True
    return True


_collector = None


def collect_in_gui_thread() -> None:
    """Run Python's cyclic garbage collector only from the GUI thread's event loop.

    Left automatic, a collection starts in whichever thread allocates, worker threads
    included (the core's conversions allocate a great deal), and may then destroy Qt
    objects from there or in the middle of an event; the suite saw rare segfaults inside
    "Garbage-collecting". pyqtgraph's GarbageCollector disables the automatic collector
    and collects, generation by generation as the thresholds say, from a timer.
    """
    global _collector
    if _collector is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _collector = GarbageCollector(interval=1.0)
