"""Drive packaging/build-windows-wine.sh end to end: the Windows bundle and installer, built and
smoke-tested under Wine on Linux (freeze, smoke test, ISCC, silent install, installed casa.exe on
the demo, silent uninstall).

Slow (20-30 minutes on 2 cores, about 3.3 GB of disk under build/wine/): run with
`pytest -m slow tests/packaging`. It installs the Debian packages it needs when run as root (wine,
wine32:i386, xvfb, mingw-w64, npm) and is skipped where they are missing and cannot be installed.
CASA_WINE_REUSE_PREFIX=1 keeps an already set-up Wine prefix (build/wine/prefix) when its pins match.
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .scripts import run_build

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "build-windows-wine.sh"
WORK = ROOT / "build" / "wine"
STANDINS = {"ucrtbase.dll", "ucrtwine.dll", "icuuc.dll", "bcryptprimitives.dll"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not sys.platform.startswith("linux") or platform.machine() != "x86_64",
                       reason="builds the Windows installer under Wine on Linux x86_64"),
]


def _tools_missing() -> list[str]:
    tools = {"wine": "wine", "Xvfb": "xvfb", "x86_64-w64-mingw32-gcc-posix": "gcc-mingw-w64-x86-64-posix",
             "npm": "npm"}
    missing = [pkg for tool, pkg in tools.items() if shutil.which(tool) is None]
    if not Path("/usr/lib/wine/wine").exists():
        missing.append("wine32:i386")
    return missing


def _registries_reachable() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary", ":all:",
                            "--platform", "win_amd64", "--python-version", "3.11", "-d",
                            str(ROOT / "build" / "pip-probe"), "msvc-runtime"], capture_output=True, timeout=300)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def build() -> dict[str, str]:
    missing = _tools_missing()
    if missing and not (os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.skip(f"needs the Debian packages {' '.join(missing)} (the script installs them as root)")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if not _registries_reachable():
        pytest.skip("PyPI cannot be reached (the Windows wheels come from there)")
    args = ["bash", str(SCRIPT)]
    if os.environ.get("CASA_WINE_REUSE_PREFIX") == "1":
        args.append("--reuse-prefix")
    return run_build(args, ROOT, WORK, "build-windows-wine.sh")


def test_frozen_cli_answers_version(build):
    assert build["smoke_ok"] == "yes"
    assert build["smoke_casa_version_rc"] == "0"
    assert build["smoke_casa_version"].startswith("casa ")


def test_frozen_cli_converts_the_demo(build):
    assert build["smoke_convert_rc"] == "0"
    assert build["smoke_eigensolver"].startswith("LAPACKE")  # numpy's OpenBLAS found in the Windows bundle
    out = WORK / "smoke" / "demo-output.safetensors"
    assert out.stat().st_size > 1000
    (header_len,) = struct.unpack("<Q", out.read_bytes()[:8])  # a real safetensors file
    assert 0 < header_len < out.stat().st_size


def test_frozen_gui_self_test_screenshot(build):
    assert build["smoke_gui_rc"] == "0"
    png = (WORK / "smoke" / "shot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 200 and height >= 150
    assert len(png) > 5000  # not a blank image


def test_bundle_carries_no_wine_stand_in(build):
    bundle = ROOT / build["bundle_dir"]
    names = {p.name.lower() for p in bundle.rglob("*.dll")}
    assert not names & STANDINS
    assert {"msvcp140.dll", "vcruntime140.dll"} <= names  # the VC++ runtime that torch needs travels
    assert (bundle / "casa.exe").is_file() and (bundle / "casa-gui.exe").is_file()
    assert (bundle / "_internal" / "resources" / "demo" / "base.safetensors").is_file()
    for unwanted in ("diffusers", "transformers", "peft", "tkinter"):
        assert not (bundle / "_internal" / unwanted).exists(), unwanted


def test_installer_installs_runs_and_uninstalls(build):
    setup = ROOT / build["setup"]
    assert setup.name.endswith("-windows-x64-setup.exe")
    assert setup.stat().st_size == int(build["setup_bytes"]) > 10_000_000
    assert setup.read_bytes()[:2] == b"MZ"
    assert build["installed_casa_version"] == build["smoke_casa_version"]
    assert int(build["installed_convert_bytes"]) > 1000
    assert "CASA Studio.lnk" in build["installed_menu_entries"]
    assert build["uninstall_left"] == "nothing"
