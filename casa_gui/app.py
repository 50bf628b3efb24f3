"""``casa-gui``: start the window (``--demo`` opens the bundled demo; ``--self-test OUT.png`` checks a build)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from casa_core.api import __version__


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="casa-gui", description="CASA Studio: move a LoRA onto a distilled model, "
                                 "and see what the rule does to every layer.")
    ap.add_argument("--version", action="version", version=f"casa-gui {__version__}")
    ap.add_argument("--demo", action="store_true", help="open the bundled demo inputs")
    ap.add_argument("--self-test", metavar="OUT.png",
                    help="build the window offscreen, convert the demo, render every view, save a screenshot; "
                         "exit non-zero on any failure")
    ap.add_argument("--theme", choices=("system", "light", "dark"), help="override the saved theme")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .headless import has_display, run_demo_cli

    if args.self_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from .self_test import run_self_test

        return run_self_test(args.self_test, theme_name=args.theme or "light")
    if not has_display():
        if args.demo:
            return run_demo_cli()
        print("casa-gui: no display found (DISPLAY / WAYLAND_DISPLAY unset). Use the `casa` command line, "
              "or `casa-gui --demo` to run the demo there.", file=sys.stderr)
        return 2

    from .qt_libs import missing_libraries, missing_message, uses_xcb

    if uses_xcb() and (missing := missing_libraries()):
        print(missing_message(missing), file=sys.stderr)
        return 2

    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from casa_core.api import resource_dir

    from . import theme
    from .diagnostics import install_excepthook, runtime_summary, setup_logging
    from .main_window import MainWindow
    from .qt_compat import pin_singletons
    from .settings_store import GuiSettings

    pin_singletons()
    log_path = setup_logging()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("CASA Studio")
    app.setOrganizationName("casa-studio")
    app.setDesktopFileName("casa-studio")
    app.setWindowIcon(QIcon(str(resource_dir() / "icons" / "casa-studio.png")))
    install_excepthook(log_path)
    logging.getLogger("casa_gui").info("%s", runtime_summary())
    gs = GuiSettings.load()
    if args.theme:
        gs.theme = args.theme
    theme.apply(app, gs.theme)
    win = MainWindow(gs)
    win.show()
    if args.demo:
        win.open_demo()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
