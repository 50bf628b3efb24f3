"""What the user reads when something goes wrong (no Qt needed)."""

import logging
import sys
import threading


def test_the_window_shows_the_cores_message_as_it_is():
    """The core names settings, not CLI flags: the window needs no rewriting of its own."""
    from casa_core.api import OutOfMemory
    from casa_gui.worker import user_message

    msg = user_message(OutOfMemory("blocks.3.ffn.0"))
    assert msg.startswith("the GPU ran out of memory on blocks.3.ffn.0; use the cpu device")
    assert "--" not in msg


def test_session_is_qt_free():
    import subprocess

    code = ("import sys, casa_gui.session, casa_gui.settings_store; "
            "sys.exit(1 if [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')] else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def test_uncaught_exception_shows_dialog_with_the_log_path(monkeypatch, tmp_path):
    from casa_gui import diagnostics

    shown = []
    monkeypatch.setattr(diagnostics, "show_error_dialog", lambda summary, path: shown.append((summary, path)))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    log_path = diagnostics.setup_logging()
    assert log_path.parent == tmp_path / "logs"
    diagnostics.install_excepthook(log_path)
    try:
        raise ValueError("unexpected")
    except ValueError:
        sys.excepthook(*sys.exc_info())
    assert shown == [("ValueError: unexpected", log_path)]
    for h in logging.getLogger("casa_gui").handlers:
        h.flush()
    assert "ValueError: unexpected" in log_path.read_text()
    for h in list(logging.getLogger("casa_gui").handlers):
        if getattr(h, "baseFilename", "").startswith(str(tmp_path)):
            logging.getLogger("casa_gui").removeHandler(h)
            h.close()
