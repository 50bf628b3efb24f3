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
    """The demo conversion, printed as the command line would: the same core call, no window."""
    from casa_core.api import CasaError, Conversion, RunOptions, TransferSettings, demo_inputs

    print("casa-gui: no display found (DISPLAY / WAYLAND_DISPLAY unset), so the demo runs on the command line,\n"
          f"as `casa convert --demo -o {output}` would:\n"
          "(set QT_QPA_PLATFORM=offscreen to force the window, or run on a desktop to see it)", file=sys.stderr,
          flush=True)
    d = demo_inputs()
    try:
        conv = Conversion.open(d["base"], d["target"], d["lora"])
        report = conv.convert(output, TransferSettings(), RunOptions(view_size=0),
                              on_result=lambda i, n, res: print(f"[{i + 1}/{n}] {res.name} {res.summary()}",
                                                                file=sys.stderr, flush=True))
    except CasaError as exc:
        print(f"casa-gui: error: {exc}", file=sys.stderr)
        return 2
    out, t = report.output, report.totals
    print(f"wrote {out.path} ({out.format}, {out.tensors} tensors): {t.layers} layers in {t.seconds:.1f}s, "
          f"mean energy kept {t.mean_energy_kept:.3f}", file=sys.stderr)
    return 0
