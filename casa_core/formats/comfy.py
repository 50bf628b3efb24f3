"""ComfyUI / original (diffusion-pipe, ai-toolkit, most Civitai Wan LoRAs): canonical names behind ``diffusion_model.``.

``diffusion_model.blocks.0.self_attn.q.lora_A.weight`` / ``.lora_B.weight`` (or kohya's
``.lora_down`` / ``.lora_up``), an optional ``.alpha`` (scale ``alpha / r``, else 1), and
full updates ``.diff`` (of a weight or norm) and ``.diff_b`` (of a bias) that pass through.
Written with ``lora_A`` / ``lora_B`` and no alpha: the layout every loader reads.
"""

from __future__ import annotations

from . import kohya, peft

NAME = "comfy"
PREFIX = "diffusion_model."
PAIRS = (peft.PAIR, kohya.PAIR)
ALPHAS = (kohya.ALPHA,)
DIFF_B = ".diff_b"
EXTRAS = (DIFF_B, ".diff")                 # full updates, passed through
WRITES = (*peft.PAIR, None)                # (down, up, alpha) endings of a written layer


def key_prefix(module: str, family) -> str:
    """The key prefix a canonical module is written under."""
    return PREFIX + module


def passthrough(key: str) -> str | None:
    """A renamed pass-through key as written: ComfyUI reads every key as it is."""
    return key


def header(ranks) -> dict[str, str]:
    """ComfyUI needs no header entries."""
    return {}
