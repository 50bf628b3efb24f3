"""FastVideo: diffusers module names with no prefix, PEFT's ``lora_A`` / ``lora_B``, and a ``.lora_alpha`` per layer.

``blocks.0.attn1.to_q.lora_A.weight`` + ``.lora_alpha`` (scale ``lora_alpha / r``).
FastVideo reads only ``lora_alpha``, so a file kept in its own layout keeps it.
"""

from __future__ import annotations

from . import peft

PAIRS = (peft.PAIR,)
ALPHA = ".lora_alpha"
ALPHAS = (ALPHA,)
