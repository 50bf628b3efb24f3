"""The Python package on its own: `python -m build` makes an sdist and a wheel that carry everything.

The fast tests build both (a few seconds; pip fetches setuptools for the isolated build), check
them with `twine check`, read their contents and metadata, and find the bundled resources in each
setting casa_core.resources serves. The slow one installs the wheel into a fresh venv and runs
`casa --version`, `casa convert --demo` and `casa-gui --self-test` from outside the repository
(one to three minutes, most of it pip): `.venv/bin/python -m pytest -m slow tests/packaging/test_wheel.py`.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "resources"
# What the app needs at run time, relative to the resources folder.
NEEDED = ["demo/base.safetensors", "demo/lora.safetensors", "demo/target/model_index.json",
          "demo/target/transformer/config.json", "demo/target/transformer/diffusion_pytorch_model.safetensors",
          "icons/casa-studio.png", "icons/casa-studio.ico", "icons/casa-studio-256.png", "casa-studio.desktop",
          "help/numbers.md"]
PROBE = ("from casa_core.resources import resource_dir, demo_inputs, method_doc; print(resource_dir()); "
         "print(demo_inputs()['base']); print(method_doc())")
METHOD_DOC = ROOT / "docs" / "method.md"
TORCH = os.environ.get("CASA_TEST_TORCH", "torch==2.13.0")  # the CPU build the README's commands use


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"python -m build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    (wheel,) = out.glob("casa_studio-*-py3-none-any.whl")
    (sdist,) = out.glob("casa_studio-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode())


def test_twine_check_passes(dist):
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wheel_metadata(dist):
    meta = _metadata(dist["wheel"])
    from casa_core import __version__

    assert meta["Name"] == "casa-studio" and meta["Version"] == __version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.10"
    assert set(meta.get_all("Provides-Extra")) >= {"gui", "test"}
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("torch") for r in requires)
    assert any(r.startswith("PySide6-Essentials") and 'extra == "gui"' in r for r in requires)
    assert any(r.startswith("pytest") and 'extra == "test"' in r for r in requires)
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3" in classifiers and len(classifiers) >= 5
    assert meta.get_all("Project-URL")
    assert meta["Description-Content-Type"] == "text/markdown"


def test_wheel_contents(dist):
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = set(z.namelist())
        for rel in NEEDED:  # byte for byte the repository's resources/
            assert z.read(f"casa_core/bundled/{rel}") == (RESOURCES / rel).read_bytes(), rel
        assert z.read("casa_core/bundled/method.md") == METHOD_DOC.read_bytes()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {"casa_core/cli.py", "casa_core/sources/hub.py", "casa_gui/app.py", "casa_gui/plots/__init__.py"} <= names
    # Every code package of the working tree is in the wheel (setup.py discovers them).
    for init in [*ROOT.glob("casa_core/**/__init__.py"), *ROOT.glob("casa_gui/**/__init__.py")]:
        assert init.relative_to(ROOT).as_posix() in names, init
    assert not any(n.startswith(("tests/", "resources/", "docs/")) or "__pycache__" in n for n in names)
    assert "casa = casa_core.cli:main" in entry_points and "casa-gui = casa_gui.app:main" in entry_points


def test_sdist_contents(dist):
    with tarfile.open(dist["sdist"]) as t:
        top = t.getnames()[0].split("/")[0]
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    needed = {"LICENSE", "README.md", "pyproject.toml", "setup.py", "docs/method.md", "tests/golden/README.md",
              "tests/core/golden.py"} | {f"resources/{rel}" for rel in NEEDED}
    assert needed <= names, sorted(needed - names)
    assert top.startswith("casa_studio-")
    assert any(n.startswith("tests/golden/") and n.endswith("expected.safetensors") for n in names)


def _probe(python: str | Path, *args: str, cwd: Path, path: list[Path] | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = PROBE if path is None else f"import sys; sys.path[:0] = {[str(p) for p in path]!r}; {PROBE}"
    proc = subprocess.run([str(python), *args, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_resources_from_an_unpacked_wheel(dist, tmp_path):
    """An installed wheel: casa_core.bundled in site-packages, found with importlib.resources."""
    site = tmp_path / "site"
    with zipfile.ZipFile(dist["wheel"]) as z:
        z.extractall(site)
    # -S: no site-packages, so neither the editable install nor the checkout can answer.
    found, base, doc = _probe(sys.executable, "-S", cwd=tmp_path, path=[site])
    assert Path(found) == site / "casa_core" / "bundled"
    assert Path(base).is_file()
    assert Path(doc) == site / "casa_core" / "bundled" / "method.md"
    assert all((Path(found) / rel).is_file() for rel in NEEDED)


def test_resources_in_a_source_checkout(tmp_path):
    """A checkout run without installing (`python -m casa_core` from the repository root)."""
    found, base, doc = _probe(sys.executable, "-S", cwd=tmp_path, path=[ROOT])
    assert Path(found) == RESOURCES
    assert Path(base) == RESOURCES / "demo" / "base.safetensors"
    assert Path(doc) == METHOD_DOC


def test_resources_in_this_interpreter():
    """The install the tests run under (editable per the README, or a wheel) finds every resource."""
    from casa_core import resources

    found = resources.resource_dir()
    assert resources._installed() == found, "casa_core.bundled is not importable here: reinstall (pip install -e .)"
    assert all((found / rel).is_file() for rel in NEEDED)
    assert resources.method_doc().read_text().startswith("# The method")
    if (ROOT / "casa_core" / "resources.py").samefile(resources.__file__):
        assert found == RESOURCES  # editable: the repository's folder itself
        assert resources.method_doc() == METHOD_DOC


def test_resources_in_a_frozen_bundle(tmp_path, monkeypatch):
    """PyInstaller: packaging/casa-studio.spec copies resources/ and docs/method.md to _internal/resources
    (sys._MEIPASS); test_build_linux.py checks the real bundle."""
    from casa_core import resources

    spec = (ROOT / "packaging" / "casa-studio.spec").read_text()
    assert 'datas=[(str(ROOT / "resources"), "resources"), (str(ROOT / "docs" / "method.md"), "resources")]' in spec
    shutil.copytree(RESOURCES, tmp_path / "resources")
    shutil.copy(METHOD_DOC, tmp_path / "resources")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resources.resource_dir() == tmp_path / "resources"
    assert resources.demo_inputs()["base"] == tmp_path / "resources" / "demo" / "base.safetensors"
    assert resources.method_doc() == tmp_path / "resources" / "method.md"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheel_installs_and_runs(dist, tmp_path):
    """pip install of the wheel into a fresh venv; the programs run from a folder outside the repository."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    py = bindir / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # torch first and pinned, so that the wheel's `torch>=2.2` never pulls a CUDA build.
    for what in ([TORCH], [f"{dist['wheel']}[gui]"]):
        proc = subprocess.run(pip + what, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"pip install {what} failed:\n{proc.stderr[-3000:]}"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"QT_QPA_PLATFORM": "offscreen", "CASA_CONFIG_DIR": str(tmp_path / "config"),
            "CASA_LOG_DIR": str(tmp_path / "logs")}

    def run(*cmd):
        proc = subprocess.run([str(bindir / cmd[0]), *cmd[1:]], capture_output=True, text=True, cwd=work, env=env,
                              timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}" \
                                     f"\n{proc.stderr[-2000:]}"
        return proc.stdout

    from casa_core import __version__

    assert run("casa", "--version").strip() == f"casa {__version__}"
    run("casa", "convert", "--demo", "-q", "-o", "out.safetensors")
    out = work / "out.safetensors"
    (header_len,) = struct.unpack("<Q", out.read_bytes()[:8])
    assert 0 < header_len < out.stat().st_size > 10_000
    run("casa-gui", "--self-test", "shot.png")
    png = (work / "shot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    found, base, doc = _probe(py, cwd=work)
    assert Path(found).parent.parent.name == "site-packages" and venv in Path(found).parents
    assert all((Path(found) / rel).is_file() for rel in NEEDED)
    assert Path(doc) == Path(found) / "method.md"
    # The window icon, as casa_gui/app.py loads it.
    icon = ("from PySide6.QtGui import QGuiApplication, QIcon; app = QGuiApplication([]); "
            "from casa_core.resources import resource_dir; "
            "print(QIcon(str(resource_dir() / 'icons' / 'casa-studio.png')).pixmap(64, 64).width())")
    proc = subprocess.run([str(py), "-c", icon], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "64", proc.stdout + proc.stderr
