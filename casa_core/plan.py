"""The plan of a conversion: which LoRA layers transfer onto which model layers (headers only, no math)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import dtypes, matching
from .distillation import StackedTarget
from .errors import CasaError
from .lora import LoraPair, LoraSource
from .models import ModelSource
from .sources.compat import extra_layers

# why a matched pair passes through, by the matcher's verdict
REASONS = {
    matching.UNKNOWN: "no layer of that name in the base model",
    matching.NOT_LINEAR: "not a 2-D linear weight the rule applies to",
    matching.NOT_IN_TARGET: "the target model lacks this layer",
}


@dataclass(frozen=True)
class LayerPlan:
    """One layer the rule will transfer."""
    module: str                 # canonical name
    pair: LoraPair
    shape: tuple[int, int]
    block: int | None = None    # the block it sits in (None outside the blocks)
    part: str = ""              # its module inside the block (``self_attn.q``), or its name outside

    @property
    def rank(self) -> int:
        return self.pair.rank

    @property
    def scale(self) -> float:
        return self.pair.scale


@dataclass(frozen=True)
class PassThrough:
    """A LoRA pair that is copied unchanged, and why."""
    prefix: str
    module: str | None
    reason: str


@dataclass
class Plan:
    base: ModelSource
    target: ModelSource
    lora: LoraSource
    layers: list[LayerPlan]
    passed: list[PassThrough] = field(default_factory=list)

    @property
    def passthrough_keys(self) -> list[str]:
        """Every LoRA key that goes to the output unchanged."""
        planned = {k for lp in self.layers for k in lp.pair.keys}
        return [k for k in self.lora.store.keys() if k not in planned]

    def describe(self) -> dict:
        return {
            "base": {"source": self.base.identity, "layout": self.base.layout, **_named(self.base)},
            "target": {"source": self.target.identity, "layout": self.target.layout, **_named(self.target),
                       "ignored_layers": extra_layers(self.base, self.target),
                       **({"distillation_loras": self.target.describe()} if isinstance(self.target, StackedTarget)
                          else {})},
            "lora": {"source": self.lora.identity, "format": self.lora.format, "pairs": len(self.lora.pairs)},
            "layers": [{"module": lp.module, "lora_prefix": lp.pair.prefix, "shape": list(lp.shape),
                        "rank": lp.rank, "scale": lp.scale} for lp in self.layers],
            "passed_through": [{"prefix": p.prefix, "module": p.module, "reason": p.reason} for p in self.passed],
            "other_keys": list(self.lora.other_keys),
        }


def _named(model) -> dict:
    """What the family calls a model (and its expert), where it says."""
    fam = model.family
    out = {"model": fam.model_name(model)} if fam.hidden_size(model) else {}
    return out | ({"expert": model.expert} if getattr(model, "expert", None) else {})


def make_plan(base: ModelSource, target: ModelSource, lora: LoraSource, layers: str | None = None) -> Plan:
    """Match the LoRA's pairs to layers both models hold; refuse inputs that cannot fit."""
    _check_models_agree(base, target)
    try:
        pattern = re.compile(layers) if layers else None
    except re.error as exc:
        raise CasaError(f"the layers pattern {layers!r} is not a valid regular expression ({exc})",
                        "e.g. 'blocks\\.(0|1)\\.'", setting="layers") from None
    planned: list[LayerPlan] = []
    passed: list[PassThrough] = []
    unmatched = misfit = 0
    first_misfit = None
    for m in matching.match_pairs(lora, base, target):
        if m.verdict == matching.MISFIT:
            misfit += 1
            first_misfit = first_misfit or m
        elif m.verdict != matching.FITS:
            if m.verdict == matching.UNKNOWN:
                unmatched += 1
            passed.append(PassThrough(m.pair.prefix, m.module, REASONS[m.verdict]))
        elif pattern and not pattern.search(m.module):
            passed.append(PassThrough(m.pair.prefix, m.module, "excluded by the layers pattern"))
        else:
            planned.append(LayerPlan(m.module, m.pair, (m.shape[0], m.shape[1]),
                                     *base.family.block_part(m.module)))
    if first_misfit:
        module, pair, shape = first_misfit.module, first_misfit.pair, first_misfit.shape
        raise CasaError(f"LoRA shapes do not fit the base model: {module} is {pair.out_features}x{pair.in_features} "
                        f"in the LoRA but {'x'.join(map(str, shape))} in the base ({misfit} layers differ)",
                        "this LoRA was trained for another model size; pick the matching base and target")
    if not planned:
        if unmatched == len(lora.pairs):
            raise CasaError(f"the LoRA matches no layer of the base model (first LoRA layer: {lora.pairs[0].prefix})",
                            "it is probably for another model family (SDXL, a text encoder); pick a LoRA trained on "
                            "this base")
        raise CasaError("no LoRA layer is left to transfer (all pass through)",
                        "check the layers pattern and that the target holds the LoRA's layers", setting="layers")
    # the network's order (blocks by number, modules as a block runs them), not the file's key order:
    # the table, the overview, the run, the report and the CLI all follow it
    order = base.family.layer_order
    planned.sort(key=lambda lp: order(lp.module))
    passed.sort(key=lambda p: (p.module is None, order(p.module) if p.module else (), p.prefix))
    plan = Plan(base, target, lora, planned, passed)
    for key in plan.passthrough_keys:  # known now, so refused now rather than when writing, after the work
        tag = lora.store.info(key).dtype
        if dtypes.known(tag) is None:
            raise CasaError(f"LoRA key {key} in {lora.path.name} has dtype {tag}, which a safetensors file cannot "
                            "hold, and it would pass through", "remove the key, or re-save the LoRA as safetensors")
    return plan


def _check_models_agree(base: ModelSource, target: ModelSource) -> None:
    shared = [k for k in base.canonical_keys() if k in target]
    if not shared:
        raise CasaError("the base and target models share no layer names",
                        "pick a target distilled from this base (same architecture)")
    for k in shared:
        if base.shape(k) != target.shape(k):
            raise CasaError(f"base and target differ in shape at {k}: {list(base.shape(k))} vs {list(target.shape(k))}",
                            "pick a base and a target of the same model size")
