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
