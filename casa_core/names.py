"""Names around the module names, whatever the family: the prefixes and wrapper segments checkpoints add.

What a family calls its modules lives in ``families``; how a LoRA layout names a layer's
keys, and which prefix it writes, lives in ``formats``. Every prefix is stripped on reading.
"""

from __future__ import annotations

# Prefixes seen in the wild, longest first; stripped while every key shares one.
PREFIXES: tuple[str, ...] = (
    "model.diffusion_model.",
    "base_model.model.",
    "_fsdp_wrapped_module.",
    "diffusion_model.",
    "transformer.",
    "generator.",
    "module.",
    "model.",
)

# Wrapper modules (FSDP, activation checkpointing, torch.compile) insert these
# anywhere in a key, not only in front; they are removed wherever they appear.
WRAPPERS: tuple[str, ...] = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def common_prefix(keys) -> str:
    """The known prefix (possibly several stacked) that every key starts with."""
    keys = list(keys)
    prefix = ""
    while keys:
        for p in PREFIXES:
            if all(k.startswith(prefix + p) for k in keys):
                prefix += p
                break
        else:
            break
    return prefix


def strip_wrappers(name: str) -> str:
    """Remove wrapper-module segments (``_fsdp_wrapped_module.`` ...) wherever they sit in a name."""
    for w in WRAPPERS:
        if w in name:
            name = name.replace(w, "")
    return name


def strip_prefix(name: str) -> str:
    """Strip every known prefix from the front of one name."""
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if name.startswith(p):
                name = name[len(p):]
                changed = True
                break
    return name

