"""Regenerate the documentation screenshots from a demo run: ``python -m casa_gui.screenshots docs/screenshots``."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

SHOTS = ("main-window", "heatmap-topk", "heatmap-full", "cluster-map", "spectra", "risk-histogram", "overview",
         "rank", "compare")


def make_screenshots(folder, layer: str = "blocks.0.cross_attn.o", theme_name: str = "light", scale: str | None = None):
    """Run the demo in a window and save one PNG per view into ``folder``; returns the paths."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if scale:
        os.environ["QT_SCALE_FACTOR"] = scale
    tmp = tempfile.TemporaryDirectory(prefix="casa-shots-")
    os.environ.setdefault("CASA_CONFIG_DIR", str(Path(tmp.name) / "config"))
    from PySide6.QtWidgets import QApplication

    from . import theme
    from .main_window import MainWindow
    from .self_test import wait_until
    from .settings_store import GuiSettings

    app = QApplication.instance() or QApplication(["casa-gui"])
    theme.apply(app, theme_name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    win = MainWindow(GuiSettings())
    win.resize(1366, 768)
    win.show()
    ctl = win.controller
    out = []
    try:
        win.open_demo()
        if not wait_until(app, lambda: ctl.session.plan is not None and not ctl.runner.busy, 60):
            raise RuntimeError(f"demo inspection failed: {win.messages.text()}")
        win.export.path.setText(str(Path(tmp.name) / "demo-casa.safetensors"))
        ctl.start_convert()
        if not wait_until(app, lambda: not ctl.runner.busy, 120) or not ctl.session.complete:
            raise RuntimeError(f"demo run failed: {win.messages.text()}")
        win.start_export()
        wait_until(app, lambda: not ctl.runner.busy, 60)
        win.state.select(layer)
        win.messages.hide()

        def settle():
            wait_until(app, lambda: False, 0.3)

        def save(widget, name):
            settle()
            path = folder / f"{name}.png"
            widget.grab().save(str(path), "PNG", 9)
            out.append(path)

        win.tabs.setCurrentWidget(win.heatmap)
        win.heatmap.set_region("top")
        save(win, "main-window")
        save(win.tabs, "heatmap-topk")
        win.heatmap.set_region("full")
        save(win.tabs, "heatmap-full")
        win.heatmap.set_region("top")
        for page, name in ((win.clusters, "cluster-map"), (win.spectra, "spectra"), (win.risk, "risk-histogram"),
                           (win.overview, "overview"), (win.tabs.rank, "rank")):
            win.tabs.setCurrentWidget(page)
            save(win.tabs, name)
        compare = win.tabs.compare
        compare.first.setCurrentIndex(compare.first.findData("casa"))
        compare.second.setCurrentIndex(compare.second.findData("restore"))
        win.tabs.setCurrentWidget(compare)
        ctl.start_compare(compare.chosen())
        wait_until(app, lambda: not ctl.runner.busy and bool(ctl.session.compared.get("restore")), 120)
        save(win.tabs, "compare")
        win.tabs.setCurrentWidget(win.heatmap)
    finally:
        win.close()
        tmp.cleanup()
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    paths = make_screenshots(args[0] if args else "docs/screenshots", *(args[1:2] or []))
    for p in paths:
        print(f"{p}  {p.stat().st_size / 1e3:.0f} kB")
