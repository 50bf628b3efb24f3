"""The entry point, the settings file, the headless fallback and module boundaries (no Qt needed)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from casa_gui.settings_store import GuiSettings

from .env import clean_env

ROOT = Path(__file__).resolve().parents[2]


def test_corrupt_settings_fall_back_to_defaults(private_config):
    private_config.mkdir(parents=True, exist_ok=True)
    (private_config / "settings.json").write_text("{not json")
    assert GuiSettings.load() == GuiSettings()
    (private_config / "settings.json").write_text(json.dumps({"tau": "high", "rank": 8, "nope": 1}))
    assert GuiSettings.load() == GuiSettings()


def test_recent_list_is_most_recent_first_and_bounded():
    gs = GuiSettings()
    for i in range(15):
        gs.remember("base", f"/m/{i}")
    gs.remember("base", "/m/3")
    assert gs.recent["base"][0] == "/m/3" and len(gs.recent["base"]) == 10 and gs.base == "/m/3"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux")
def test_demo_without_a_display_runs_the_cli_conversion(tmp_path):
    p = subprocess.run([sys.executable, "-c", "import sys; from casa_gui.app import main; sys.exit(main())",
                        "--demo"], cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "no display found" in p.stderr and "casa convert --demo" in p.stderr
    assert (tmp_path / "casa-demo-output.safetensors").is_file()


def test_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'casa-gui = "casa_gui.app:main"' in text


def test_casa_core_does_not_import_qt():
    code = ("import sys, casa_core.api, casa_core.conversion, casa_core.views, casa_core.export; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt', 'casa_gui')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def test_only_session_drives_the_conversion():
    """casa_gui imports casa_core.api only (the import-linter contract); of it, only session.py (the
    window's jobs) and headless.py (the demo without a window) take the Conversion, whose calls
    read weights and compute."""
    for path in sorted((ROOT / "casa_gui").rglob("*.py")):
        used = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("casa_core"):
                assert node.module in ("casa_core.api",), (path.name, node.module)
                used |= {a.name for a in node.names}
        if path.name not in ("session.py", "headless.py"):
            assert "Conversion" not in used, path.name


LDD_OUTPUT = """\
	linux-vdso.so.1 (0x00007ffd)
	libQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f)
	libxcb-icccm.so.4 => not found
	libxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f)
	libxcb-keysyms.so.1 => not found
	libxcb-icccm.so.4 => not found
"""


def test_missing_x11_libraries_are_named_with_their_packages():
    from casa_gui.qt_libs import PACKAGES, missing_message, parse_ldd

    libs = parse_ldd(LDD_OUTPUT)
    assert libs == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    msg = missing_message(libs)
    assert "\n" not in msg and "libxcb-icccm.so.4, libxcb-keysyms.so.1" in msg
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in msg
    # the README's package list for the pip route is the same list
    readme = (ROOT / "README.md").read_text()
    line = next(t for t in readme.splitlines() if t.startswith("`sudo apt install libegl1"))
    assert set(line.strip("`").split()[3:]) == set(PACKAGES.values())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb plugin is Linux's")
def test_what_the_xcb_plugin_lacks_on_this_machine():
    """On this machine: every library named missing is one the loader cannot find, and the message
    names the package of each (a machine with all of them installed has none to name)."""
    import ctypes

    from casa_gui.qt_libs import PACKAGES, missing_libraries, missing_message, uses_xcb, xcb_plugin

    assert xcb_plugin() is not None
    missing = missing_libraries()
    for lib in missing:
        with pytest.raises(OSError):
            ctypes.CDLL(lib)
        assert PACKAGES[lib] in missing_message(missing)
    assert uses_xcb({"DISPLAY": ":0"}) and not uses_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"})
    assert not uses_xcb({"WAYLAND_DISPLAY": "wayland-0"}) and uses_xcb({"QT_QPA_PLATFORM": "xcb"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb plugin is Linux's")
def test_start_up_names_the_missing_libraries_in_one_line(tmp_path, monkeypatch, capsys):
    from casa_gui import app, qt_libs

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    fake_ldd = tmp_path / "ldd"
    fake_ldd.write_text(f"#!/bin/sh\ncat <<'X'\n{LDD_OUTPUT}X\n")
    fake_ldd.chmod(0o755)
    monkeypatch.setattr(qt_libs.shutil, "which", lambda name: str(fake_ldd))
    assert app.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "libxcb-keysyms.so.1" in err and "apt install" in err
