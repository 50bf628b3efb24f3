"""Where the bundled resources (demo inputs, icons, desktop entry) live: installed, editable, checkout or frozen.

The repository keeps them in its top-level ``resources/`` folder. A wheel (and an editable install)
carries that folder as the package ``casa_core.bundled`` (setup.py), found with ``importlib.resources``;
a source checkout run without installing (``python -m casa_core`` from the repository root) uses the
folder itself; the PyInstaller bundle copies it to ``_internal/resources`` (packaging/casa-studio.spec).
The method notes, ``docs/method.md`` in the repository, are copied next to them in a wheel and a bundle.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

PACKAGE = "casa_core.bundled"
CHECKOUT = Path(__file__).resolve().parent.parent / "resources"


def _installed() -> Path | None:
    try:
        found = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        return None
    # A regular package on disk gives a plain Path; anything else (a zip import) has no folder to hand out.
    return found if isinstance(found, Path) and found.is_dir() else None


def resource_dir() -> Path:
    """The folder holding ``demo/``, ``icons/`` and ``casa-studio.desktop``."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return _installed() or CHECKOUT


def demo_inputs() -> dict[str, Path]:
    """Paths of the bundled demo base, target and LoRA."""
    d = resource_dir() / "demo"
    return {"base": d / "base.safetensors", "target": d / "target", "lora": d / "lora.safetensors"}


def method_doc() -> Path | None:
    """The method notes (docs/method.md): the rule, the other methods, the departures from the authors' code."""
    for path in (resource_dir() / "method.md", CHECKOUT.parent / "docs" / "method.md"):
        if path.is_file():
            return path
    return None
