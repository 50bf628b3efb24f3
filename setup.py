"""Which packages the distribution holds; everything else (metadata, dependencies, entry points) is in pyproject.toml.

The top-level ``resources/`` folder (demo inputs, icons, the desktop entry) stays where the
packaging scripts and the frozen bundle expect it, and is shipped in the wheel as the package
``casa_core.bundled``, so that ``casa_core.resources`` finds it with ``importlib.resources`` in an
installed wheel and in an editable install alike. pyproject.toml cannot both discover the code
packages and add a mapped one, hence this file: the code packages are still discovered, so a new
subpackage of ``casa_core`` or ``casa_gui`` needs no edit here. The wheel also carries
``docs/method.md`` there, so the app can open the method notes wherever it is installed.
"""

from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup
from setuptools.command.build_py import build_py

RESOURCES = "casa_core.bundled"
# Its subfolders (demo/, demo/target/, ...) are data, but Python could import them, so setuptools
# wants them listed as packages too.
DATA = [RESOURCES] + [f"{RESOURCES}.{p}" for p in find_namespace_packages(where="resources", exclude=["*__pycache__*"])]
DATA_FILES = ["*.desktop", "*.png", "*.ico", "*.safetensors", "*.json", "*.md"]

METHOD_DOC = "docs/method.md"


class BuildPy(build_py):
    """build_py, plus docs/method.md copied into casa_core.bundled (an editable install reads docs/ itself)."""

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            target = Path(self.build_lib, *RESOURCES.split("."), Path(METHOD_DOC).name)
            self.copy_file(METHOD_DOC, str(target))


setup(
    cmdclass={"build_py": BuildPy},
    packages=find_packages(include=["casa_core", "casa_core.*", "casa_gui", "casa_gui.*"]) + DATA,
    package_dir={RESOURCES: "resources"},
    package_data={p: DATA_FILES for p in DATA},
)
