"""PEFT: ``lora_A`` / ``lora_B`` pairs (the naming diffusers, FastVideo and most trainers adopted),
the ``base_model.model.`` prefix, and an adapter folder whose config holds the scale.

``base_model.model.blocks.0.attn1.to_q.lora_A.weight`` + ``adapter_config.json`` (``r``,
``lora_alpha``, ``use_rslora``, ``alpha_pattern``, ``rank_pattern``).
"""

from __future__ import annotations

import json
import math
import time
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
    """PEFT's LoRA scale: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA.

    ValueError unless ``alpha`` is positive and finite and ``r`` a positive rank.
    """
    alpha, r = float(alpha), float(r)
    if not (math.isfinite(alpha) and alpha > 0 and math.isfinite(r) and r > 0):
        raise ValueError(f"alpha {alpha:g}, r {r:g}")
    return alpha / math.sqrt(r) if rslora else alpha / r


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


# The rank_pattern / alpha_pattern keys of a config are regular expressions from a downloaded file;
# a catastrophic one (nested repetition) can backtrack for hours on one module name. The ``regex``
# package stops a match at a timeout, and all matches of one config share this many seconds
# (hundreds of layers against ordinary patterns take milliseconds).
PATTERN_SECONDS = 2.0
TABLES = ("alpha_pattern", "rank_pattern")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Patterns:
    """A config's ``rank_pattern`` / ``alpha_pattern``, checked and compiled once; matches bounded in time."""

    def __init__(self, cfg: dict, weights_name: str):
        import regex

        self.where = f"{CONFIG} beside {weights_name}"
        self.left = PATTERN_SECONDS
        self.tables: dict[str, list] = {}
        for name in TABLES:
            table = cfg.get(name) or {}
            if not isinstance(table, dict):
                raise CasaError(f"{name} in {self.where} is a {type(table).__name__}, not a map of module "
                                "patterns to numbers", f"fix {name} in the adapter config")
            compiled = []
            for pat, value in table.items():
                if not _number(value) or not math.isfinite(value) or value <= 0:
                    raise CasaError(f"{name} entry {pat[:60]!r} in {self.where} is {str(value)[:40]}, not a "
                                    "positive number", f"fix {name} in the adapter config")
                try:
                    rx = regex.compile(rf"(.*\.)?(?:{pat})")
                except (regex.error, RecursionError, OverflowError):
                    raise CasaError(f"{name} entry {pat[:60]!r} in {self.where} is not a valid regular expression",
                                    f"fix {name} in the adapter config") from None
                compiled.append((pat, rx, value))
            self.tables[name] = compiled

    def value(self, name: str, module: str, default):
        """The value of the first pattern of table ``name`` that matches ``module``, else ``default``."""
        for pat, rx, value in self.tables[name]:
            t0 = time.perf_counter()
            try:
                hit = rx.fullmatch(module, timeout=max(self.left, 1e-3))
            except TimeoutError:
                raise CasaError(f"{name} entry {pat[:60]!r} in {self.where} takes too long to match module names "
                                f"(over {PATTERN_SECONDS:g} s; a pathological regular expression)",
                                f"fix {name} in the adapter config") from None
            finally:
                self.left -= time.perf_counter() - t0
            if hit:
                return value
        return default


def scale(cfg: dict, module: str, rank: int, kind: str, weights_name: str, patterns: Patterns | None = None) -> float:
    """The scale of one layer (``module``: its prefix-free name): ``lora_alpha / r``, patterns applied.

    PEFT's LoHa / LoKr divide their ``alpha`` by the configured ``r``.
    """
    patterns = patterns or Patterns(cfg, weights_name)
    try:
        if kind == "lora":
            alpha = patterns.value("alpha_pattern", module, cfg.get("lora_alpha", 8))
            return lora_scale(alpha, float(rank), bool(cfg.get("use_rslora")))
        alpha = patterns.value("alpha_pattern", module, cfg.get("alpha", 8))
        return lora_scale(alpha, patterns.value("rank_pattern", module, cfg.get("r", 8)), False)
    except (TypeError, ValueError, OverflowError):
        raise CasaError(f"{CONFIG} beside {weights_name} has unusable r / alpha values for {module} (they must "
                        "be positive numbers)", "fix the adapter config (r, lora_alpha, alpha_pattern)") from None
