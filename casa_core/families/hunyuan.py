"""HunyuanVideo: its canonical names, the original layout's spellings and fused projections, its sizes.

Canonical names are the diffusers ones (``transformer_blocks.0.attn.to_q``,
``single_transformer_blocks.0.proj_mlp``): the rule works on one projection at a time, and
only the diffusers layout holds q, k and v apart. The original layout (``double_blocks.N.``,
``single_blocks.N.``) fuses them: ``img_attn_qkv`` / ``txt_attn_qkv`` (and the token refiner's
``self_attn_qkv``) are q, k, v stacked by rows, and a single block's ``linear1`` is q, k, v and
the MLP's input projection. A model in that layout is read exactly, each projection being its
block of rows of the fused weight (``fused_rows``). A LoRA trained on the fused layers (musubi-tuner
writes them so) is read exactly too: its pair becomes one pair per projection, the up factor's
block of rows with the shared down factor (``split_fused_pair``), which the output holds under the
split (diffusers) names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CasaError

# original module name (inside double_blocks.N.) -> diffusers (inside transformer_blocks.N.)
DOUBLE_MODULES: tuple[tuple[str, str], ...] = (
    ("img_mod.linear", "norm1.linear"),
    ("txt_mod.linear", "norm1_context.linear"),
    ("img_attn_q_norm", "attn.norm_q"),
    ("img_attn_k_norm", "attn.norm_k"),
    ("txt_attn_q_norm", "attn.norm_added_q"),
    ("txt_attn_k_norm", "attn.norm_added_k"),
    ("img_attn_proj", "attn.to_out.0"),
    ("txt_attn_proj", "attn.to_add_out"),
    ("img_mlp.fc1", "ff.net.0.proj"),
    ("img_mlp.fc2", "ff.net.2"),
    ("txt_mlp.fc1", "ff_context.net.0.proj"),
    ("txt_mlp.fc2", "ff_context.net.2"),
)
# original (inside single_blocks.N.) -> diffusers (inside single_transformer_blocks.N.)
SINGLE_MODULES: tuple[tuple[str, str], ...] = (
    ("linear2", "proj_out"),
    ("q_norm", "attn.norm_q"),
    ("k_norm", "attn.norm_k"),
    ("modulation.linear", "norm.linear"),
)
# original (inside txt_in.individual_token_refiner.blocks.N.) -> diffusers (inside
# context_embedder.token_refiner.refiner_blocks.N.)
REFINER_MODULES: tuple[tuple[str, str], ...] = (
    ("self_attn_proj", "attn.to_out.0"),
    ("mlp.fc1", "ff.net.0.proj"),
    ("mlp.fc2", "ff.net.2"),
    ("adaLN_modulation.1", "norm_out.linear"),
    ("norm1", "norm1"),
    ("norm2", "norm2"),
)
# outside the blocks
TOP_MODULES: tuple[tuple[str, str], ...] = (
    ("img_in.proj", "x_embedder.proj"),
    ("time_in.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
    ("time_in.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
    ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
    ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
    ("guidance_in.mlp.0", "time_text_embed.guidance_embedder.linear_1"),
    ("guidance_in.mlp.2", "time_text_embed.guidance_embedder.linear_2"),
    ("txt_in.input_embedder", "context_embedder.proj_in"),
    ("txt_in.t_embedder.mlp.0", "context_embedder.time_text_embed.timestep_embedder.linear_1"),
    ("txt_in.t_embedder.mlp.2", "context_embedder.time_text_embed.timestep_embedder.linear_2"),
    ("txt_in.c_embedder.linear_1", "context_embedder.time_text_embed.text_embedder.linear_1"),
    ("txt_in.c_embedder.linear_2", "context_embedder.time_text_embed.text_embedder.linear_2"),
    ("final_layer.linear", "proj_out"),
)
# stored with its two halves swapped in the original layout (shift, scale against diffusers' scale,
# shift): read as norm_out.linear with the halves put back (``fused_rows``)
SWAPPED = ("final_layer.adaLN_modulation.1", "norm_out.linear")
# fused original modules -> the diffusers projections stacked in their rows; None: the rest of the rows
FUSED: dict[str, tuple[str | None, ...]] = {
    "double.img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "double.txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "single.linear1": ("attn.to_q", "attn.to_k", "attn.to_v", None),
    "refiner.self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
}
SINGLE_MLP = "proj_mlp"     # what the rest of linear1's rows are

# block prefixes: kind -> (original, diffusers)
BLOCKS = {"double": ("double_blocks", "transformer_blocks"), "single": ("single_blocks", "single_transformer_blocks"),
          "refiner": ("txt_in.individual_token_refiner.blocks", "context_embedder.token_refiner.refiner_blocks")}

DIFFUSERS_MARKERS = ("transformer_blocks.", "context_embedder.", "time_text_embed.", "x_embedder.", "norm_out.")
HIDDEN_PROBE = "transformer_blocks.0.attn.to_q.weight"
SINGLE_PROBE = "single_transformer_blocks.0.attn.to_q.weight"
PATCH_PROBE = "x_embedder.proj.weight"
I2V_IN_CHANNELS = 33     # HunyuanVideo-I2V: noise, image latents and a mask


@dataclass(frozen=True)
class Size:
    dim: int
    name: str
    architecture: str


SIZES: tuple[Size, ...] = (Size(3072, "HunyuanVideo 13B", "hunyuan-video/lora"),)
ARCHITECTURE = "hunyuan-video/lora"

_SIZES = {s.dim: s for s in SIZES}
_TABLES = {"double": DOUBLE_MODULES, "single": SINGLE_MODULES, "refiner": REFINER_MODULES}
_TO_CANON = {kind: dict(table) for kind, table in _TABLES.items()}
_TOP_TO_CANON = dict(TOP_MODULES)
_BLOCK_RE = {kind: (re.compile(rf"^{re.escape(o)}\.(\d+)\.(.+)$"), re.compile(rf"^{re.escape(d)}\.(\d+)(?:\.(.+))?$"))
             for kind, (o, d) in BLOCKS.items()}
_COLLAPSE = re.compile(r"(transformer_blocks|refiner_blocks|double_blocks|single_blocks|blocks)\.\d+\.")
# kohya spellings of the block prefixes (musubi-tuner's HunyuanVideo LoRAs use the original ones)
_KOHYA_STEMS = tuple(f"lora_unet_{p.replace('.', '_')}_" for pair in BLOCKS.values() for p in pair)


def matches(names) -> bool:
    """True when prefix-free names are HunyuanVideo's (a double or single block, in either layout)."""
    return any(n.startswith(("transformer_blocks.", "single_transformer_blocks.", "double_blocks.", "single_blocks."))
               or n.startswith(_KOHYA_STEMS) for n in names)


def is_diffusers_name(name: str) -> bool:
    return name.startswith(DIFFUSERS_MARKERS) or name.startswith("proj_out")


def _original_block(module: str) -> tuple[str, str, str] | None:
    """(kind, index, rest) of a module inside an original-layout block."""
    for kind, (orig, _) in _BLOCK_RE.items():
        m = orig.match(module)
        if m:
            return kind, m.group(1), m.group(2)
    return None


def to_canonical(module: str, diffusers: bool) -> str:
    """Canonical (diffusers) module name; fused original modules stay as they are (``fused_rows`` splits them)."""
    if diffusers:
        return module
    found = _original_block(module)
    if found:
        kind, idx, rest = found
        new = _TO_CANON[kind].get(rest)
        return f"{BLOCKS[kind][1]}.{idx}.{new}" if new else module
    return _TOP_TO_CANON.get(module, module)


def to_diffusers(module: str) -> str:
    """Canonical names are the diffusers ones."""
    return module


def split_param(key: str) -> tuple[str, str]:
    if "." not in key:
        return key, ""
    return key.rsplit(".", 1)[0], key.rsplit(".", 1)[1]


def canonical_key(key: str, diffusers: bool) -> str:
    module, param = split_param(key)
    canon = to_canonical(module, diffusers)
    return f"{canon}.{param}" if param else canon


def fused_rows(key: str, shape_of) -> list[tuple[str, tuple[tuple[int, int], ...]]] | None:
    """For an original-layout tensor that is not one canonical tensor as stored (a fused projection such
    as ``double_blocks.0.img_attn_qkv.weight`` or its bias; ``final_layer.adaLN_modulation.1``, halves
    swapped): the canonical keys it holds and their blocks of rows, ``[(key, ((start, stop), ...)), ...]``;
    None for any other key.

    ``shape_of(prefix_free_key)`` gives a tensor's shape: the fused weight's input width is the
    hidden size, which each of q, k and v has as its number of rows.
    """
    module, param = split_param(key)
    if module == SWAPPED[0]:
        rows = (shape_of(key) or (0,))[0]
        half = rows // 2
        return [(f"{SWAPPED[1]}.{param}", ((half, rows), (0, half)))] if rows and rows % 2 == 0 else None
    found = _original_block(module)
    if not found:
        return None
    kind, idx, rest = found
    parts = FUSED.get(f"{kind}.{rest}")
    if parts is None:
        return None
    wshape = shape_of(f"{module}.weight")
    if wshape is None or len(wshape) != 2:
        return None
    dim, rows = wshape[1], wshape[0]
    if rows < 3 * dim or (None not in parts and rows != 3 * dim):
        raise CasaError(f"the fused projection {module} has {rows} rows, not 3 x its {dim} inputs (q, k, v)",
                        "the checkpoint is not a HunyuanVideo model this app reads; use the diffusers layout")
    block = f"{BLOCKS[kind][1]}.{idx}"
    out = []
    for i, name in enumerate(parts):
        start = i * dim
        stop = rows if name is None else start + dim
        out.append((f"{block}.{name or SINGLE_MLP}.{param}", ((start, stop),)))
    return out


_TO_ORIG = {kind: {d: o for o, d in table} for kind, table in _TABLES.items()}
_TOP_TO_ORIG = {d: o for o, d in TOP_MODULES}


def spellings(module: str) -> tuple[str, ...]:
    """A canonical module's names in every layout (diffusers, original), for kohya names to resolve against."""
    for kind, (orig, _) in BLOCKS.items():
        m = _BLOCK_RE[kind][1].match(module)
        if m and m.group(2):
            rest = _TO_ORIG[kind].get(m.group(2))
            return (module, f"{orig}.{m.group(1)}.{rest}") if rest else (module,)
    return (module, _TOP_TO_ORIG[module]) if module in _TOP_TO_ORIG else (module,)


_FUSED_FLAT = {kind_rest: re.compile(rf"^{re.escape(BLOCKS[kind_rest.split('.')[0]][0].replace('.', '_'))}_(\d+)_"
                                     rf"{re.escape(kind_rest.split('.', 1)[1].replace('.', '_'))}$")
               for kind_rest in FUSED}


def split_fused_pair(prefix: str, bare: str, out_features: int, in_features: int, kohya_style: bool):
    """A LoRA pair on a fused projection as pairs on its parts: ``[(new prefix, start, stop), ...]`` (the
    up factor's rows; the down factor is shared), or None for any other pair. ``bare``: the prefix without
    its known prefixes (kohya: without ``lora_unet_``)."""
    flat = bare.replace(".", "_")
    for kind_rest, rx in _FUSED_FLAT.items():
        m = rx.match(flat)
        if not m:
            continue
        kind = kind_rest.split(".")[0]
        parts = FUSED[kind_rest]
        dim = in_features
        if out_features < 3 * dim or (None not in parts and out_features != 3 * dim):
            raise CasaError(f"the LoRA's fused layer {prefix} is {out_features}x{in_features}, not 3 x its "
                            f"{in_features} inputs (q, k, v)", "the LoRA is not for this model; pick its own")
        lead = prefix[: len(prefix) - len(bare)]
        out = []
        for i, name in enumerate(parts):
            module = f"{BLOCKS[kind][1]}.{m.group(1)}.{name or SINGLE_MLP}"
            start, stop = i * dim, (out_features if name is None else (i + 1) * dim)
            out.append((lead + (module.replace(".", "_") if kohya_style else module), start, stop))
        return out
    return None


def is_transferable(module: str) -> bool:
    """Every 2-D linear counts (the matcher checks the shape); fused original modules never reach here."""
    return not module.endswith(("norm_q", "norm_k", "norm_added_q", "norm_added_k", "x_embedder.proj"))


def hidden_size(model) -> int | None:
    for probe in (HIDDEN_PROBE, SINGLE_PROBE):
        if probe in model and model.shape(probe):
            return model.shape(probe)[0]
    return None


def is_i2v(model) -> bool:
    return PATCH_PROBE in model and len(model.shape(PATCH_PROBE)) > 1 and \
        model.shape(PATCH_PROBE)[1] == I2V_IN_CHANNELS


def block_count(keys) -> int:
    """Double-stream plus single-stream blocks."""
    seen = set()
    for k in keys:
        for kind in ("double", "single"):
            m = _BLOCK_RE[kind][1].match(k.rsplit(".", 1)[0]) if "." in k else None
            if m:
                seen.add((kind, m.group(1)))
    return len(seen)


def collapse_block(key: str) -> str:
    return _COLLAPSE.sub(lambda m: f"{m.group(1)}.*.", key)


# the order a block runs its modules (the network's order, for the table, the run and the report)
_DOUBLE_ORDER = ("norm1.linear", "norm1_context.linear", "attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj",
                 "attn.add_k_proj", "attn.add_v_proj", "attn.to_out.0", "attn.to_add_out", "ff.net.0.proj",
                 "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
_SINGLE_ORDER = ("norm.linear", "attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out")
_REFINER_ORDER = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.net.0.proj", "ff.net.2",
                  "norm_out.linear")
_ORDERS = {"refiner": (1, _REFINER_ORDER), "double": (2, _DOUBLE_ORDER), "single": (3, _SINGLE_ORDER)}
_AFTER_BLOCKS = ("norm_out.", "proj_out")


def _block_of(module: str) -> tuple[str, int, str] | None:
    """(kind, index, rest) of a canonical module inside a block."""
    for kind in ("single", "double", "refiner"):
        m = _BLOCK_RE[kind][1].match(module)
        if m and m.group(2):
            return kind, int(m.group(1)), m.group(2)
    return None


def block_part(module: str) -> tuple[int | None, str]:
    """``transformer_blocks.3.attn.to_q`` -> (3, ``attn.to_q``); a single-stream block's part is named
    ``single.<module>`` (its numbers restart at 0); the token refiner and the rest -> (None, the name)."""
    found = _block_of(module)
    if found is None or found[0] == "refiner":
        return None, module
    kind, idx, rest = found
    return idx, (f"single.{rest}" if kind == "single" else rest)


def layer_order(module: str) -> tuple:
    """A sort key in the network's order: the embedders, the token refiner, the double-stream blocks,
    the single-stream blocks (each by number, modules as a block runs them), the output layers; names
    this family does not know come last, as text."""
    found = _block_of(module)
    if found is not None:
        kind, idx, rest = found
        rank, order = _ORDERS[kind]
        return (rank, idx, order.index(rest) if rest in order else len(order), rest)
    if module.startswith(_AFTER_BLOCKS):
        return (4, 0, 0, module)
    if is_diffusers_name(module):
        return (0, 0, 0, module)
    return (5, 0, 0, module)


def size_name(dim: int | None) -> str | None:
    return _SIZES[dim].name if dim in _SIZES else None


def architecture(dim: int | None) -> str:
    return _SIZES[dim].architecture if dim in _SIZES else ARCHITECTURE


def model_name(model) -> str:
    dim = hidden_size(model)
    name = size_name(dim) or ("a HunyuanVideo-architecture model of no known size" if dim else
                              "a HunyuanVideo-architecture model")
    return name + (" I2V" if is_i2v(model) else "")


def model_architecture(model) -> str:
    return architecture(hidden_size(model))
