"""TEMPORARY: the core's error hints name `casa` command-line flags; the window says them in its own words.

This module is the only place the GUI rewrites a core message. Delete it (and let
``worker.user_message`` return ``str(exc)``) once casa_core stops naming CLI flags in
its hints. Qt-free, so it is tested without a display.
"""

from __future__ import annotations

from casa_core.errors import CasaError

GPU_HINT = "Pick CPU under Device, or float32 under Precision, and run again."


def in_window_words(exc: BaseException) -> str | None:
    """The message for a GPU out-of-memory error, with the window's controls for the CLI's flags; else None."""
    text = str(exc)
    if "out of memory" not in text.lower() and type(exc).__name__ != "OutOfMemoryError":
        return None
    what = exc.what if isinstance(exc, CasaError) else "the GPU ran out of memory"
    return f"{what}. {GPU_HINT}"
