"""DiffSynth: canonical names and PEFT's pairs under the adapter name ``default``.

``blocks.0.self_attn.q.lora_A.default.weight`` / ``.lora_B.default.weight``; scale 1.
"""

from __future__ import annotations

PAIR = (".lora_A.default.weight", ".lora_B.default.weight")
PAIRS = (PAIR,)
ALPHAS: tuple[str, ...] = ()
