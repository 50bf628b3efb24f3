"""``casa-gui --self-test OUT.png``: the window, the demo run and every view, offscreen.

Used by packaging smoke tests: exit 0 only when the demo converts, every view
renders something that is not blank, the export writes a file, and the
screenshot is saved.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def wait_until(app, cond, timeout_s: float = 60.0) -> bool:
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.005)
    return True


def not_blank(pixmap) -> bool:
    """True when an image has some spread of colours (a plot, not an empty canvas)."""
    img = pixmap.toImage()
    if img.isNull() or img.width() < 10 or img.height() < 10:
        return False
    seen = set()
    for y in range(0, img.height(), max(1, img.height() // 40)):
        for x in range(0, img.width(), max(1, img.width() // 40)):
            seen.add(img.pixel(x, y))
            if len(seen) > 8:
                return True
    return False


def run_self_test(out_png, theme_name: str = "light") -> int:
    tmp = tempfile.TemporaryDirectory(prefix="casa-gui-selftest-")
    # never read or write the user's settings from a smoke test
    os.environ.setdefault("CASA_CONFIG_DIR", str(Path(tmp.name) / "config"))
    from PySide6.QtWidgets import QApplication

    from . import theme
    from .main_window import MainWindow
    from .settings_store import GuiSettings

    app = QApplication.instance() or QApplication(["casa-gui"])
    theme.apply(app, theme_name)
    failures: list[str] = []

    def check(ok: bool, what: str) -> bool:
        print(f"self-test: {'ok  ' if ok else 'FAIL'} {what}", file=sys.stderr, flush=True)
        if not ok:
            failures.append(what)
        return ok

    win = MainWindow(GuiSettings())
    win.resize(1366, 768)
    win.show()
    ctl = win.controller
    try:
        win.open_demo()
        if check(wait_until(app, lambda: ctl.session.plan is not None or win.messages.text(), 60)
                 and ctl.session.plan is not None, "demo inputs inspected"):
            wait_until(app, lambda: not ctl.runner.busy, 60)
            win.export.path.setText(str(Path(tmp.name) / "selftest-out.safetensors"))
            t0 = time.perf_counter()
            check(ctl.start_convert(), "conversion started")
            check(wait_until(app, lambda: not ctl.runner.busy, 120) and ctl.session.complete,
                  f"demo converted ({len(ctl.session.results)} layers, {time.perf_counter() - t0:.1f} s)")
            if ctl.session.complete:
                win.state.select(ctl.session.plan.layers[0].module)
                for i in range(win.tabs.count()):
                    win.tabs.setCurrentIndex(i)
                    wait_until(app, lambda: False, 0.2)
                    page = win.tabs.widget(i)
                    check(page.showing_view and not_blank(page.grab()), f"view '{win.tabs.tabText(i)}' renders")
                win.heatmap.set_region("full")
                wait_until(app, lambda: False, 0.1)
                check(not_blank(win.heatmap.grab()), "full routing matrix renders")
                win.tabs.setCurrentIndex(0)
                check(win.start_export(), "export started")
                wait_until(app, lambda: not ctl.runner.busy, 60)
                out = Path(win.export.output())
                check(out.is_file() and out.stat().st_size > 0, f"export wrote {out.name}")
        wait_until(app, lambda: False, 0.2)
        shot = win.grab()
        check(shot.save(str(out_png)), f"screenshot saved to {out_png}")
    except Exception as exc:  # the smoke test reports, it does not crash
        import traceback

        traceback.print_exc()
        check(False, f"no exception ({type(exc).__name__}: {exc})")
    finally:
        win.close()
        tmp.cleanup()
    print(f"self-test: {'passed' if not failures else f'{len(failures)} failure(s)'}", file=sys.stderr)
    return 0 if not failures else 1
