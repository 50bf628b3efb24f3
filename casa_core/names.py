"""The one table that maps every layout's tensor names onto canonical Wan2.1 names.

Canonical names are the original Wan2.1 ones (``blocks.0.self_attn.q.weight``).
Nothing else in the project knows the diffusers spellings or the prefixes.
"""

from __future__ import annotations

import re

# (canonical, diffusers) module names inside ``blocks.N.``
BLOCK_MODULES: tuple[tuple[str, str], ...] = (
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("cross_attn.k_img", "attn2.add_k_proj"),
    ("cross_attn.v_img", "attn2.add_v_proj"),
    ("cross_attn.norm_k_img", "attn2.norm_added_k"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    # diffusers swaps the names of the two affine norms
    ("norm3", "norm2"),
    ("modulation", "scale_shift_table"),
)

# (canonical, diffusers) module names outside the blocks
TOP_MODULES: tuple[tuple[str, str], ...] = (
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    ("patch_embedding", "patch_embedding"),
)

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

# Linears the method applies to (canonical module names; ``N`` is any block).
LINEAR_SUFFIXES = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                   "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
                   "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")

_BLOCK_TO_CANON = {d: c for c, d in BLOCK_MODULES}
_BLOCK_TO_DIFF = {c: d for c, d in BLOCK_MODULES}
_TOP_TO_CANON = {d: c for c, d in TOP_MODULES}
_TOP_TO_DIFF = {c: d for c, d in TOP_MODULES}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)(?:\.(.+))?$")

# Names that only the diffusers layout uses: their presence identifies it.
_DIFFUSERS_MARKERS = ("attn1.", "attn2.", "ffn.net.", "condition_embedder.", "proj_out")


def is_diffusers_name(name: str) -> bool:
    """True when a (prefix-free) module or tensor name is spelled the diffusers way."""
    return any(m in name for m in _DIFFUSERS_MARKERS)


def _map(module: str, block_table: dict, top_table: dict) -> str:
    m = _BLOCK_RE.match(module)
    if m:
        idx, rest = m.group(1), m.group(2)
        if rest is None:
            return module
        return f"blocks.{idx}.{block_table.get(rest, rest)}"
    return top_table.get(module, module)


def to_canonical(module: str, diffusers: bool) -> str:
    """Canonical module name for a prefix-free module name in the given layout."""
    if not diffusers:
        return module
    return _map(module, _BLOCK_TO_CANON, _TOP_TO_CANON)


def to_diffusers(module: str) -> str:
    """The diffusers spelling of a canonical module name (unknown names unchanged)."""
    return _map(module, _BLOCK_TO_DIFF, _TOP_TO_DIFF)


def split_param(key: str) -> tuple[str, str]:
    """Split a tensor key into (module, parameter).

    ``modulation`` / ``scale_shift_table`` are parameters held directly by a block
    (or the head), so they are treated as modules with an empty parameter.
    """
    last = key.rsplit(".", 1)[-1]
    if last in ("modulation", "scale_shift_table") or "." not in key:
        return key, ""
    return key.rsplit(".", 1)[0], last


def canonical_key(key: str, diffusers: bool) -> str:
    """Canonical tensor key (``module.param``) for a prefix-free key."""
    module, param = split_param(key)
    canon = to_canonical(module, diffusers)
    return f"{canon}.{param}" if param else canon


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


def is_transferable(module: str) -> bool:
    """True for canonical modules the method may apply to (2-D linears)."""
    m = _BLOCK_RE.match(module)
    if m and m.group(2) in LINEAR_SUFFIXES:
        return True
    return module in ("text_embedding.0", "text_embedding.2", "time_embedding.0",
                      "time_embedding.2", "time_projection.1", "head.head",
                      "img_emb.proj.1", "img_emb.proj.3")


def underscore_index(modules) -> dict[str, str]:
    """Map kohya spellings (dots replaced by underscores) to canonical module names.

    Built from the model's real module names in both spellings, so ambiguous
    underscores (``self_attn``, ``k_img``) are never guessed.
    """
    out: dict[str, str] = {}
    for canon in modules:
        out[canon.replace(".", "_")] = canon
        out[to_diffusers(canon).replace(".", "_")] = canon
    return out
