"""Logging to a rotating file, faulthandler, and a dialog for uncaught exceptions."""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path

from .settings_store import log_dir

log = logging.getLogger("casa_gui")
_fault_file = None


def setup_logging() -> Path:
    """Log ``casa_gui`` to a rotating file in the user log dir; returns its path."""
    global _fault_file
    d = log_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / "casa-gui.log"
    handler = RotatingFileHandler(path, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if _fault_file is None:
        # a hard crash (segfault in a native library) still leaves stacks behind
        _fault_file = open(d / "casa-gui-crash.log", "a", encoding="utf-8")  # noqa: SIM115
        faulthandler.enable(_fault_file)
    return path


def runtime_summary() -> str:
    """Which app, torch build and compute device this process uses (for the About box and the log)."""
    import platform

    import torch
    from PySide6 import __version__ as pyside_version

    from casa_core.api import __version__, resolve_device

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    dev = resolve_device("auto")
    where = f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "CPU"
    return (f"CASA Studio {__version__}; torch {torch.__version__} ({build}); default device {where}; "
            f"PySide6 {pyside_version}; Python {platform.python_version()}")


def install_excepthook(log_path: Path) -> None:
    """Uncaught exceptions are logged and shown in a dialog; the app keeps running."""

    def hook(etype, value, tb):
        if issubclass(etype, KeyboardInterrupt):
            sys.__excepthook__(etype, value, tb)
            return
        text = "".join(traceback.format_exception(etype, value, tb))
        log.error("uncaught exception:\n%s", text)
        show_error_dialog(f"{etype.__name__}: {value}", log_path)

    def thread_hook(args):
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        log.error("uncaught exception in thread %s:\n%s", getattr(args.thread, "name", "?"), text)

    sys.excepthook = hook
    threading.excepthook = thread_hook


def show_error_dialog(summary: str, log_path: Path) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QMessageBox

    if QApplication.instance() is None:
        print(f"casa-gui: unexpected error: {summary} (details in {log_path})", file=sys.stderr)
        return
    box = QMessageBox(QMessageBox.Icon.Critical, "CASA Studio: unexpected error",
                      f"Something went wrong inside CASA Studio:\n\n{summary}\n\n"
                      f"The details are in the log file:\n{log_path}\n\nYou can keep working; "
                      "if this happens again, please report it with that file.")
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.exec()
