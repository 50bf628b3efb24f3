"""diffusers: the family's diffusers module names behind ``transformer.``, PEFT's ``lora_A`` / ``lora_B``.

``transformer.blocks.0.attn1.to_q.lora_A.weight``; scale 1 in the file, or PEFT's
``lora_alpha`` / ``r`` in the header's ``lora_adapter_metadata`` JSON. diffusers' layout
has a bias update (``lora_B.bias``) but no form for a full diff, and refuses the whole file
when any key lacks ``lora``.
"""

from __future__ import annotations

import json

from .. import names
from ..errors import CasaError
from . import comfy, peft

NAME = "diffusers"
PREFIX = "transformer."
PAIRS = (peft.PAIR,)
ALPHAS: tuple[str, ...] = ()
METADATA = "lora_adapter_metadata"
BIAS = ".lora_B.bias"
WRITES = (*peft.PAIR, None)                # (down, up, alpha) endings of a written layer


def owns(prefix: str, family) -> bool:
    """True for a key prefix spelled with the family's diffusers names."""
    return family.is_diffusers_name(names.strip_prefix(prefix))


def metadata_scale(metadata: dict[str, str]) -> float | None:
    """Scale from the ``lora_adapter_metadata`` header entry, if any; an unusable one is refused."""
    blob = metadata.get(METADATA)
    if not blob:
        return None
    try:
        cfg = json.loads(blob)
        return peft.lora_scale(cfg["lora_alpha"], cfg["r"], bool(cfg.get("use_rslora")))
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        shown = blob if len(blob) <= 60 else blob[:60] + "..."
        raise CasaError(f"the LoRA's {METADATA} header entry ({shown}) has no usable r and lora_alpha "
                        "(positive numbers)", "the LoRA file is damaged; re-save it") from None


def key_prefix(module: str, family) -> str:
    """The key prefix a canonical module is written under."""
    return PREFIX + family.to_diffusers(module)


def passthrough(key: str) -> str | None:
    """A renamed pass-through key as written: a bias update becomes ``lora_B.bias``; None drops the key."""
    if key.endswith(comfy.DIFF_B):
        return key[: -len(comfy.DIFF_B)] + BIAS
    return key if "lora" in key else None


def header(ranks) -> dict[str, str]:
    """diffusers needs no header entries."""
    return {}
