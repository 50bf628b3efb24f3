"""Model families: which family a model's names belong to, and the facts only that family knows.

A family is a module (``wan.py``, ``hunyuan.py``) holding its canonical <-> diffusers name tables, the
linears the rule applies to and its sizes, with the functions every family provides:
``matches``, ``is_diffusers_name``, ``to_canonical``, ``to_diffusers``, ``split_param``,
``canonical_key``, ``is_transferable``, ``hidden_size``, ``is_i2v``, ``block_count``,
``collapse_block``, ``block_part``, ``layer_order``, ``size_name``, ``architecture``, ``model_name``
and ``model_architecture``; optionally ``fused_rows`` (a checkpoint's fused projections read as their
parts), ``split_fused_pair`` (a LoRA pair on a fused projection as pairs on its parts), ``spellings`` (a
module's names in every layout, for kohya names) and the two-expert facts (``expert_folders``,
``expert_of``, ``expert_hint``, ``EXPERT_TITLES``). A new family is one new module listed in ``FAMILIES``.
"""

from __future__ import annotations

from . import hunyuan, wan

# The first is the family of names no family claims, so they are matched (and refused) against
# its layers.
FAMILIES = (wan, hunyuan)
# Asked in this order: HunyuanVideo's block names are its own, while Wan claims some top-level
# names (``proj_out``) HunyuanVideo also has.
_ASKED = (hunyuan, wan)


def family_of(names):
    """The family of a model or LoRA, from its prefix-free tensor or module names."""
    names = list(names)
    return next((f for f in _ASKED if f.matches(names)), FAMILIES[0])


def size_name(dim: int | None, family=None) -> str | None:
    """The model a hidden size names in ``family`` (else the first family that knows it: ``Wan2.1 14B``), or None."""
    return next((n for f in ((family,) if family else FAMILIES) if (n := f.size_name(dim)) is not None), None)
