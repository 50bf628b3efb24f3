"""kohya / musubi-tuner: ``lora_unet_`` + the module name with underscores, ``lora_down`` / ``lora_up``, ``.alpha``.

``lora_unet_blocks_0_self_attn_q.lora_down.weight``, ``.lora_up.weight``, ``.alpha`` (scale
``alpha / r``); Wan-Fun writes ``lora_unet__`` (two underscores). The underscores are
ambiguous (``self_attn``, ``k_img``), so names resolve against the model's real modules.
"""

from __future__ import annotations

NAME = "kohya"
PAIR = (".lora_down.weight", ".lora_up.weight")
PAIRS = (PAIR,)
ALPHA = ".alpha"
ALPHAS = (ALPHA,)
PREFIX = "lora_unet_"
PREFIXES = ("lora_unet__", PREFIX)         # Wan-Fun's first: longest first
MARKERS = (".lora_down.", ".lora_up.", "lora_unet_")
WRITES = (*PAIR, ALPHA)                     # (down, up, alpha) endings of a written layer


def owns(prefix: str) -> bool:
    """True for a kohya key prefix."""
    return prefix.startswith(PREFIXES)


def stem(prefix: str) -> str:
    """A kohya key prefix without ``lora_unet_``: the module name with underscores."""
    p = next(p for p in PREFIXES if prefix.startswith(p))
    return prefix[len(p):]


def underscore_index(modules, family) -> dict[str, str]:
    """Map kohya spellings (dots replaced by underscores) to canonical module names.

    Built from the model's real module names in both spellings, so ambiguous
    underscores (``self_attn``, ``k_img``) are never guessed.
    """
    out: dict[str, str] = {}
    spellings = getattr(family, "spellings", None)     # a family whose canonical names are not the original ones
    for canon in modules:
        out[canon.replace(".", "_")] = canon
        out[family.to_diffusers(canon).replace(".", "_")] = canon
        for name in spellings(canon) if spellings else ():
            out.setdefault(name.replace(".", "_"), canon)
    return out


def key_prefix(module: str, family) -> str:
    """The key prefix a canonical module is written under."""
    return PREFIX + module.replace(".", "_")


def passthrough(key: str) -> str | None:
    """A renamed pass-through key as written: kohya files hold every key as it is."""
    return key


def header(ranks) -> dict[str, str]:
    """kohya's header entries: network dim and alpha (the scale is folded in, so alpha = dim)."""
    r = max(ranks) if ranks else 0
    return {"ss_network_dim": str(r), "ss_network_alpha": str(r)}
