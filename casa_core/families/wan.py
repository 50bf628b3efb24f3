"""Wan (2.1, 2.2): canonical <-> diffusers names, the blocks, the linears the rule applies to, the sizes.

Canonical names are the original Wan2.1 ones (``blocks.0.self_attn.q.weight``); the
diffusers layout spells the same modules differently (``blocks.0.attn1.to_q.weight``).
Nothing else in the project knows those spellings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

# Linears the method applies to (canonical module names): inside every block, and outside them.
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                 "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
                 "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")
TOP_LINEARS = ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
               "time_projection.1", "head.head", "img_emb.proj.1", "img_emb.proj.3")

# Parameters a block (or the head) holds directly, with no module of their own.
BARE_PARAMS = ("modulation", "scale_shift_table")

# Names that only the diffusers layout uses: their presence identifies it.
DIFFUSERS_MARKERS = ("attn1.", "attn2.", "ffn.net.", "condition_embedder.", "proj_out")

# Tensors whose presence or shape tell a model apart: the hidden size, image conditioning (I2V).
HIDDEN_PROBE = "blocks.0.self_attn.q.weight"
I2V_PROBE = "blocks.0.cross_attn.k_img.weight"


PATCH_PROBE = "patch_embedding.weight"
I2V_IN_CHANNELS = 36     # Wan2.1 I2V and Wan2.2 I2V-A14B read noise + the image latents (16 + 20)


@dataclass(frozen=True)
class Size:
    dim: int                # hidden size
    name: str               # as shown to users
    architecture: str       # ``modelspec.architecture`` of a LoRA for it


SIZES: tuple[Size, ...] = (
    Size(1536, "Wan2.1 1.3B", "wan2.1-t2v-1.3b/lora"),
    Size(5120, "Wan2.1 14B", "wan2.1-t2v-14b/lora"),
    Size(3072, "Wan2.2 TI2V-5B", "wan2.2-ti2v-5b/lora"),
)
ARCHITECTURE = "wan/lora"       # for a hidden size of no known model: a Wan-architecture model, no more

# Wan2.2 A14B (T2V and I2V): two transformers of the 14B shape, one for the high-noise steps, one
# for the low-noise steps. expert -> (its folder in the original layout, in the diffusers layout).
EXPERTS: dict[str, tuple[str, str]] = {"high": ("high_noise_model", "transformer"),
                                        "low": ("low_noise_model", "transformer_2")}
EXPERT_TITLES = {"high": "high-noise", "low": "low-noise"}
EXPERT_DIM = 5120
# what file names say about the expert (Wan2.2-Lightning's ..._HIGH_fp16, ComfyUI's ..._high_noise_14B_...):
# "high" / "low" then "noise", or alone at the end or before a precision, "lora", "model" or a version
# (not "high-quality", "low-rank")
EXPERT_HINTS = {e: re.compile(rf"(?<![a-z0-9]){e}(?:[_\-. ]?noise(?![a-z])|(?=$|[_\-. ](?:fp|bf|lora|model|expert|"
                              rf"v?\d|e\dm)))", re.IGNORECASE) for e in ("high", "low")}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)(?:\.(.+))?$")
_BLOCK_INDEX = re.compile(r"^blocks\.\d+\.")
_BLOCK_TO_CANON = {d: c for c, d in BLOCK_MODULES}
_BLOCK_TO_DIFF = {c: d for c, d in BLOCK_MODULES}
_TOP_TO_CANON = {d: c for c, d in TOP_MODULES}
_TOP_TO_DIFF = {c: d for c, d in TOP_MODULES}
_TOP_NAMES = {n for pair in TOP_MODULES for n in pair}
_SIZES = {s.dim: s for s in SIZES}


def matches(names) -> bool:
    """True when prefix-free tensor or module names are Wan's (a block, or a known top-level module)."""
    return any(_BLOCK_RE.match(split_param(n)[0]) or split_param(n)[0] in _TOP_NAMES for n in names)


def is_diffusers_name(name: str) -> bool:
    """True when a (prefix-free) module or tensor name is spelled the diffusers way."""
    return any(m in name for m in DIFFUSERS_MARKERS)


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
    if last in BARE_PARAMS or "." not in key:
        return key, ""
    return key.rsplit(".", 1)[0], last


def canonical_key(key: str, diffusers: bool) -> str:
    """Canonical tensor key (``module.param``) for a prefix-free key."""
    module, param = split_param(key)
    canon = to_canonical(module, diffusers)
    return f"{canon}.{param}" if param else canon


def is_transferable(module: str) -> bool:
    """True for canonical modules the method may apply to (2-D linears)."""
    m = _BLOCK_RE.match(module)
    if m and m.group(2) in BLOCK_LINEARS:
        return True
    return module in TOP_LINEARS


def hidden_size(model) -> int | None:
    """The hidden size of a model (its first query's width); None where it has no Wan blocks."""
    shape = model.shape(HIDDEN_PROBE) if HIDDEN_PROBE in model else ()
    return shape[0] if shape else None     # a 0-d probe (a damaged file) names no size; the matcher refuses it


def is_i2v(model) -> bool:
    """True for an image-to-video model (its cross-attention reads image keys)."""
    return I2V_PROBE in model


def block_count(keys) -> int:
    """How many blocks canonical keys span."""
    return len({k.split(".")[1] for k in keys if k.startswith("blocks.")})


def collapse_block(key: str) -> str:
    """``blocks.N.x`` as ``blocks.*.x``; other names as they are."""
    return _BLOCK_INDEX.sub("blocks.*.", key)


# where a module sits in the network's order: what feeds the blocks, the blocks, the head
_BEFORE_BLOCKS = ("text_embedding", "time_embedding", "time_projection", "img_emb", "patch_embedding")
_BLOCK_ORDER = {c: i for i, (c, _d) in enumerate(BLOCK_MODULES)}
_TOP_ORDER = {c: i for i, (c, _d) in enumerate(TOP_MODULES)}


def block_part(module: str) -> tuple[int | None, str]:
    """``blocks.12.self_attn.q`` -> (12, ``self_attn.q``); a module outside the blocks -> (None, its name)."""
    m = _BLOCK_RE.match(module)
    if m and m.group(2):
        return int(m.group(1)), m.group(2)
    return None, module


def layer_order(module: str) -> tuple:
    """A sort key in the network's order: the embeddings, then block by block (by number, not as text)
    and inside a block in the order of ``BLOCK_MODULES`` (self-attention q, k, v, o, cross-attention,
    feed-forward), then the head; names this family does not know come last, as text."""
    block, part = block_part(module)
    if block is not None:
        return (1, block, _BLOCK_ORDER.get(part, len(_BLOCK_ORDER)), part)
    if module in _TOP_ORDER:
        return (0 if module.split(".")[0] in _BEFORE_BLOCKS else 2, 0, _TOP_ORDER[module], module)
    return (3, 0, 0, module)


def size_name(dim: int | None) -> str | None:
    """The model a hidden size names (``Wan2.1 14B``), or None."""
    return _SIZES[dim].name if dim in _SIZES else None


def architecture(dim: int | None) -> str:
    """``modelspec.architecture`` of a LoRA for a model of this hidden size."""
    return _SIZES[dim].architecture if dim in _SIZES else ARCHITECTURE


def expert_folders(folder) -> dict[str, object]:
    """expert -> its transformer folder, for a folder that holds a two-expert model (either layout);
    empty for any other folder. Experts the folder names but lacks (a partial hub download) are left out."""
    import json
    from pathlib import Path

    folder = Path(folder)
    out = {e: folder / orig for e, (orig, _) in EXPERTS.items() if (folder / orig).is_dir()}
    if out:
        return out
    index = folder / "model_index.json"
    second = EXPERTS["low"][1]
    named = False
    if index.is_file():
        try:
            named = bool(json.loads(index.read_text()).get(second))
        except (OSError, ValueError, AttributeError):
            named = False
    if named or (index.is_file() and (folder / second).is_dir()):
        return {e: folder / diff for e, (_, diff) in EXPERTS.items() if (folder / diff).is_dir()}
    return {}


def expert_hint(name: str) -> str | None:
    """The expert a file or folder name suggests (``high_noise_model``, ``..._HIGH_fp16``), or None."""
    name = str(name)
    if all(re.search(rf"(?<![a-z0-9]){e}(?![a-z])", name, re.IGNORECASE) for e in EXPERT_HINTS):
        return None     # both words: the name does not say
    hits = [e for e, rx in EXPERT_HINTS.items() if rx.search(name)]
    return hits[0] if len(hits) == 1 else None


def expert_of(path) -> str | None:
    """The expert a model's own file or folder is: one of a two-expert folder's transformers, or
    the one its name (or its folder's) suggests; None when nothing says."""
    from pathlib import Path

    path = Path(path)
    folder = path.parent if path.is_file() else path
    for e, f in expert_folders(folder.parent).items():
        if Path(f) == folder:
            return e
    return expert_hint(path.stem if path.is_file() else path.name)


def model_name(model) -> str:
    """What a model is, for people: ``Wan2.2 T2V-A14B high-noise expert``, ``Wan2.1 1.3B``,
    ``a Wan-architecture model (dim 64)``."""
    dim = hidden_size(model)
    expert = getattr(model, "expert", None)
    if dim == EXPERT_DIM and expert:
        return f"Wan2.2 {'I2V' if _image_channels(model) else 'T2V'}-A14B {EXPERT_TITLES[expert]} expert"
    name = size_name(dim)
    if name:
        name += " I2V" if dim != 3072 and is_i2v(model) else ""
    else:
        name = "a Wan-architecture model of no known size" if dim else "a Wan-architecture model"
    return name + (f", {EXPERT_TITLES[expert]} expert" if expert else "")


def model_architecture(model) -> str:
    """``modelspec.architecture`` of a LoRA for this model (``wan2.2-t2v-a14b-high-noise/lora``)."""
    dim = hidden_size(model)
    expert = getattr(model, "expert", None)
    if dim == EXPERT_DIM and expert:
        return f"wan2.2-{'i2v' if _image_channels(model) else 't2v'}-a14b-{EXPERT_TITLES[expert]}/lora"
    return architecture(dim)


def _image_channels(model) -> bool:
    """True when the patch embedding reads the image latents as well (I2V)."""
    return PATCH_PROBE in model and len(model.shape(PATCH_PROBE)) > 1 and \
        model.shape(PATCH_PROBE)[1] == I2V_IN_CHANNELS
