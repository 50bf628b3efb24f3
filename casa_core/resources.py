"""Where the bundled resources (demo inputs, icons) live, installed or frozen."""

from __future__ import annotations

import sys
from pathlib import Path


def resource_dir() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def demo_inputs() -> dict[str, Path]:
    """Paths of the bundled demo base, target and LoRA."""
    d = resource_dir() / "demo"
    return {"base": d / "base.safetensors", "target": d / "target", "lora": d / "lora.safetensors"}
