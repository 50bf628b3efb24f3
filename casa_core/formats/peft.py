"""PEFT: ``lora_A`` / ``lora_B`` pairs (the naming diffusers, FastVideo and most trainers adopted),
the ``base_model.model.`` prefix, and an adapter folder whose config holds the scale.

``base_model.model.blocks.0.attn1.to_q.lora_A.weight`` + ``adapter_config.json`` (``r``,
``lora_alpha``, ``use_rslora``, ``alpha_pattern``, ``rank_pattern``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import CasaError

PAIR = (".lora_A.weight", ".lora_B.weight")    # (down A: r x in, up B: out x r)
PAIRS = (PAIR,)
ALPHAS: tuple[str, ...] = ()
MARKERS = (".lora_A.", ".lora_B.")
DORA = ".lora_magnitude_vector"
CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def lora_scale(alpha: float, r: float, rslora: bool) -> float:
    """PEFT's LoRA scale: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    return alpha / (r ** 0.5) if rslora else alpha / r


def weights_in(folder: Path) -> Path | None:
    """The weights of a PEFT adapter folder; None where the folder is not one."""
    if not (folder / CONFIG).is_file():
        return None
    return next((folder / w for w in WEIGHTS if (folder / w).is_file()), None)


def read_config(weights: Path) -> dict | None:
    """The ``adapter_config.json`` beside ``adapter_model.*``, if there is one."""
    cfg = weights.parent / CONFIG
    if weights.name not in WEIGHTS or not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
        if not isinstance(data, dict):
            raise ValueError
    except (OSError, ValueError):
        raise CasaError(f"{cfg} is not a valid PEFT adapter config", "re-download the adapter folder") from None
    return data


def scale(cfg: dict, module: str, rank: int, kind: str, weights_name: str) -> float:
    """The scale of one layer (``module``: its prefix-free name): ``lora_alpha / r``, patterns applied.

    PEFT's LoHa / LoKr divide their ``alpha`` by the configured ``r``.
    """
    def pattern_value(table, default):
        for pat, value in (table or {}).items():
            if re.fullmatch(rf"(.*\.)?(?:{pat})", module):
                return value
        return default

    try:
        if kind == "lora":
            alpha = float(pattern_value(cfg.get("alpha_pattern"), cfg.get("lora_alpha", 8)))
            return lora_scale(alpha, float(rank), bool(cfg.get("use_rslora")))
        alpha = float(pattern_value(cfg.get("alpha_pattern"), cfg.get("alpha", 8)))
        return alpha / float(pattern_value(cfg.get("rank_pattern"), cfg.get("r", 8)))
    except (TypeError, ValueError, ZeroDivisionError, re.error):
        raise CasaError(f"{CONFIG} beside {weights_name} has unusable r / alpha values",
                        "fix the adapter config (r, lora_alpha, alpha_pattern)") from None
