"""Without a display, ``casa-gui --demo`` runs the same demo as a command-line conversion."""

from __future__ import annotations

import os
import sys

DEMO_OUTPUT = "casa-demo-output.safetensors"


def has_display() -> bool:
    """False on Linux with no X11/Wayland display and no QT_QPA_PLATFORM chosen."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def run_demo_cli(output: str = DEMO_OUTPUT) -> int:
    from casa_core import cli

    argv = ["convert", "--demo", "-o", output]
    print("casa-gui: no display found (DISPLAY / WAYLAND_DISPLAY unset), so the demo runs on the command line:\n"
          f"  casa {' '.join(argv)}\n"
          "(set QT_QPA_PLATFORM=offscreen to force the window, or run on a desktop to see it)", file=sys.stderr,
          flush=True)
    return cli.main(argv)
