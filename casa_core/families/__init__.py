"""Model families: which family a model's names belong to, and the facts only that family knows.

A family is a module (``wan.py``) holding its canonical <-> diffusers name tables, the
linears the rule applies to and its sizes, with the functions every family provides:
``matches``, ``is_diffusers_name``, ``to_canonical``, ``to_diffusers``, ``split_param``,
``canonical_key``, ``is_transferable``, ``hidden_size``, ``is_i2v``, ``block_count``,
``collapse_block``, ``block_part``, ``layer_order``, ``size_name`` and ``architecture``. A new family
is one new module
listed in ``FAMILIES``.
"""

from __future__ import annotations

from . import wan

# Asked in order; the first is also the family of names no family claims, so they are
# matched (and refused) against its layers.
FAMILIES = (wan,)


def family_of(names):
    """The family of a model or LoRA, from its prefix-free tensor or module names."""
    names = list(names)
    return next((f for f in FAMILIES if f.matches(names)), FAMILIES[0])


def size_name(dim: int | None) -> str | None:
    """The model a hidden size names in any family (``Wan2.1 14B``), or None."""
    return next((n for f in FAMILIES if (n := f.size_name(dim)) is not None), None)
