"""What matches between two sources, and why not (headers only; for ``casa inspect`` and the GUI).

So a user sees at once that a 14B LoRA was picked for a 1.3B model, or that a
target is not a distillation of the base, before any weight is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .. import families, matching
from ..distillation import StackedTarget

KIND_NAMES = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}


def size(dim: int | None, family=None) -> str:
    """``dim 5120 (Wan2.1 14B)``; the model only where the hidden size names one in ``family``."""
    if dim is None:
        return "no transformer blocks"
    name = families.size_name(dim, family)
    return f"dim {dim}" + (f" ({name})" if name else "")


def group_blocks(keys, family) -> list[str]:
    """``blocks.N.x`` collapsed to ``blocks.*.x (count)``; other names as they are."""
    counts = Counter(family.collapse_block(k) for k in keys)
    return [f"{k} ({n})" if n > 1 else k for k, n in sorted(counts.items())]


@dataclass(frozen=True)
class ModelFacts:
    identity: str
    layout: str
    dim: int | None
    i2v: bool
    blocks: int
    tensors: int
    dtypes: tuple[str, ...]
    container: str = ""            # pickled: the state dict used (generator_ema ...)
    quantisation: str = ""         # fp8 flavour, if any
    name: str = ""                 # what the family calls it (``Wan2.2 T2V-A14B high-noise expert``)
    expert: str | None = None      # of a two-expert model: the one used
    distillation: tuple = ()       # a target given as distillation LoRAs: one line each
    family: str = "wan"            # the family module its names are from

    def _family(self):
        return _family(self.family)

    def line(self) -> str:
        blocks = f", {self.blocks} block{'s' * (self.blocks != 1)}" if self.blocks else ""
        what = (f"dim {self.dim} ({self.name})" if self.name and self.dim else size(self.dim, self._family())
                + (" I2V" if self.i2v else ""))
        extra = [what + blocks, f"{self.tensors} tensors, {'/'.join(self.dtypes)}"]
        if self.container:
            extra.append(f"pickled, using {self.container}")
        if self.quantisation:
            extra.append(f"{self.quantisation} dequantised to float32")
        return f"{self.identity}  ({self.layout} layout; {'; '.join(extra)})"


def model_facts(model) -> ModelFacts:
    keys = list(model.canonical_keys())
    fam = model.family
    dim = fam.hidden_size(model)
    blocks = fam.block_count(keys)
    i2v = fam.is_i2v(model)
    dtypes = tuple(sorted({model.dtype(k) for k in keys}))
    name = fam.model_name(model) if dim else ""
    stacked = tuple(d.line() for d in model.loras) if isinstance(model, StackedTarget) else ()
    return ModelFacts(model.identity, model.layout, dim, i2v, blocks, len(keys), dtypes,
                      getattr(model, "container", ""), getattr(model, "quantisation", ""), name,
                      getattr(model, "expert", None), stacked, _family_name(fam))


@dataclass(frozen=True)
class LoraFacts:
    identity: str
    format: str
    pairs: int
    kinds: dict
    ranks: tuple[int, ...]
    dim: int | None                # the hidden size its layers imply
    family: str = "wan"            # the family its names are from

    def line(self) -> str:
        kinds = ", ".join(f"{n} {KIND_NAMES.get(k, k)}" for k, n in sorted(self.kinds.items()))
        ranks = "/".join(map(str, self.ranks[:4])) + ("/..." if len(self.ranks) > 4 else "")
        fam = f"; layers fit {size(self.dim, _family(self.family))}" if self.dim else ""
        return f"{self.identity}  ({self.format} format; {kinds} layers, rank {ranks}{fam})"


def lora_facts(lora) -> LoraFacts:
    kinds = Counter(p.kind for p in lora.pairs)
    # most Wan linears take the hidden size as input (attention, ffn.0)
    ins = Counter(p.in_features for p in lora.pairs)
    dim = ins.most_common(1)[0][0] if ins else None
    return LoraFacts(lora.identity, lora.format, len(lora.pairs), dict(kinds),
                     tuple(sorted({p.rank for p in lora.pairs})), dim, _family_name(lora.family))


def _family_name(family) -> str:
    return family.__name__.rsplit(".", 1)[-1]


def _family(name: str):
    return next((f for f in families.FAMILIES if _family_name(f) == name), None)


@dataclass(frozen=True)
class Mismatch:
    name: str
    left: tuple[int, ...]
    right: tuple[int, ...]

    def text(self, left: str, right: str) -> str:
        return (f"{self.name} is {'x'.join(map(str, self.left))} in the {left}, "
                f"{'x'.join(map(str, self.right))} in the {right}")


@dataclass(frozen=True)
class ModelsMatch:
    shared: int
    mismatched: list[Mismatch] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)      # canonical keys
    only_target: list[str] = field(default_factory=list)    # extra layers of a distilled model: ignored


def compare_models(base, target) -> ModelsMatch:
    shared = [k for k in base.canonical_keys() if k in target]
    bad = [Mismatch(k, tuple(base.shape(k)), tuple(target.shape(k))) for k in shared
           if tuple(base.shape(k)) != tuple(target.shape(k))]
    return ModelsMatch(len(shared), bad, [k for k in base.canonical_keys() if k not in target],
                       [k for k in target.canonical_keys() if k not in base])


def extra_layers(base, target) -> list[str]:
    """The target's tensors the base lacks (FastWan's ``to_gate_compress``), grouped: they are ignored."""
    return group_blocks((k for k in target.canonical_keys() if k not in base), base.family)


@dataclass(frozen=True)
class LoraMatch:
    total: int
    fits: int
    mismatched: list[Mismatch] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)        # LoRA prefixes naming no layer of the model
    not_linear: list[str] = field(default_factory=list)     # fit, but the rule leaves them as they are


def compare_lora(lora, model) -> LoraMatch:
    fits, bad, unknown, other = 0, [], [], []
    for m in matching.match_pairs(lora, model):
        if m.verdict == matching.UNKNOWN:
            unknown.append(m.pair.prefix)
        elif m.verdict == matching.MISFIT:
            bad.append(Mismatch(m.module, (m.pair.out_features, m.pair.in_features), m.shape))
        elif m.verdict == matching.NOT_LINEAR:
            other.append(m.module)
        else:
            fits += 1
    return LoraMatch(len(lora.pairs), fits, bad, unknown, other)


def verdicts(base=None, target=None, lora=None) -> dict:
    """Facts of each given source, each comparison, and plain sentences on what does not fit."""
    out: dict = {"sources": {}, "matches": {}, "problems": []}
    facts = {}
    for role, src in (("base", base), ("target", target)):
        if src is not None:
            facts[role] = model_facts(src)
            out["sources"][role] = facts[role].__dict__
    if lora is not None:
        lf = lora_facts(lora)
        out["sources"]["lora"] = lf.__dict__
    problems = out["problems"]
    if base is not None and target is not None:
        mm = compare_models(base, target)
        out["matches"]["base-target"] = {
            "shared": mm.shared, "mismatched": [m.__dict__ for m in mm.mismatched],
            "only_base": group_blocks(mm.only_base, base.family),
            "ignored_target_extras": group_blocks(mm.only_target, base.family)}
        fb, ft = facts["base"], facts["target"]
        if mm.shared == 0:
            problems.append("the base and the target share no layer names: they are different architectures")
        elif fb.dim != ft.dim:
            problems.append(f"the base has {size(fb.dim, base.family)} but the target {size(ft.dim, target.family)}: "
                            "pick a target distilled from this base")
        elif mm.mismatched:
            problems.append(f"{len(mm.mismatched)} layers differ in shape: {mm.mismatched[0].text('base', 'target')}")
    if lora is not None:
        for role, model in (("base", base), ("target", target)):
            if model is None:
                continue
            lm = compare_lora(lora, model)
            out["matches"][f"lora-{role}"] = {
                "total": lm.total, "fits": lm.fits, "mismatched": [m.__dict__ for m in lm.mismatched],
                "unknown": lm.unknown, "not_linear": lm.not_linear}
            mf = facts[role]
            if lm.mismatched and lf.dim and mf.dim and lf.dim != mf.dim:
                problems.append(f"the LoRA was trained for {size(lf.dim, model.family)} but the {role} has "
                                f"{size(mf.dim, model.family)}: "
                                "pick a LoRA, base and target of the same model size")
            elif lm.mismatched:
                problems.append(f"{len(lm.mismatched)} LoRA layers do not fit the {role}: "
                                f"{lm.mismatched[0].text('LoRA', role)}")
            elif lm.unknown and len(lm.unknown) == lm.total:
                problems.append(f"no LoRA layer names a layer of the {role} (first: {lm.unknown[0]}): "
                                "it is probably for another model family")
            if base is not None and target is not None and role == "base":
                break  # the LoRA is trained on the base; the target side is covered by base-target
    return out
