"""Drive packaging/build-linux.sh end to end: freeze, .tar.gz, .deb, smoke test of the frozen programs.

Slow (minutes, about 1 GB of disk): run with `pytest -m slow tests/packaging`. It reuses
build/venv-pkg when present; CASA_PACKAGING_CLEAN=1 rebuilds the venv from scratch.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .scripts import run_build

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "build-linux.sh"
WORK = ROOT / "build" / "packaging"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds the Linux bundle"),
]


def _pyinstaller_installable() -> bool:
    venv_pyi = ROOT / "build" / "venv-pkg" / "bin" / "pyinstaller"
    if venv_pyi.exists():
        return True
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d",
                            str(ROOT / "build" / "pip-probe"), "pyinstaller"], capture_output=True, timeout=300)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def build() -> dict[str, str]:
    for tool in ("dpkg-deb", "tar", "gzip", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not _pyinstaller_installable():
        pytest.skip("PyInstaller cannot be installed here (no package index?)")
    args = ["bash", str(SCRIPT)]
    if os.environ.get("CASA_PACKAGING_CLEAN") == "1":
        args.append("--clean")
    return run_build(args, ROOT, WORK, "build-linux.sh")


def test_frozen_cli_answers_version(build):
    assert build["casa_version_rc"] == "0"
    assert build["casa_version"].startswith("casa ")
    assert build["deb_casa_version"] == build["casa_version"]


def test_frozen_cli_converts_the_demo(build):
    assert build["convert_rc"] == "0"
    out = WORK / "smoke" / "demo-output.safetensors"
    assert out.stat().st_size > 1000
    (header_len,) = struct.unpack("<Q", out.read_bytes()[:8])  # a real safetensors file
    assert 0 < header_len < out.stat().st_size


def test_frozen_gui_self_test_screenshot(build):
    if build["gui_rc"] == "skipped":
        pytest.skip("casa_gui/app.py with --self-test has not landed yet")
    assert build["gui_rc"] == "0"
    png = (WORK / "smoke" / "shot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 200 and height >= 150
    assert len(png) > 5000  # not a blank image


def test_packages_exist_and_are_sane(build):
    assert build["smoke_ok"] == "yes"
    deb = ROOT / build["deb"]
    tarball = ROOT / build["tarball"]
    assert deb.stat().st_size == int(build["deb_bytes"]) > 10_000_000
    assert tarball.stat().st_size == int(build["tarball_bytes"]) > 10_000_000
    info = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Depends"], capture_output=True, text=True,
                          check=True).stdout
    assert "libxcb-cursor0" in info and "libxkbcommon-x11-0" in info and "libegl1" in info
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in ("./opt/casa-studio/casa", "./opt/casa-studio/casa-gui", "./usr/bin/casa -> /opt/casa-studio/casa",
                 "./usr/share/applications/casa-studio.desktop",
                 "./usr/share/icons/hicolor/256x256/apps/casa-studio.png",
                 "./opt/casa-studio/_internal/resources/demo/base.safetensors",
                 "./opt/casa-studio/_internal/resources/icons/casa-studio.png",
                 "./opt/casa-studio/_internal/resources/method.md"):
        assert path in listing, path
    for unwanted in ("/diffusers/", "/transformers/", "/peft/", "/tkinter/", "/translations/", "torch/include/"):
        assert unwanted not in listing, unwanted
    assert all(" root/root " in line for line in listing.splitlines() if line)  # --root-owner-group
