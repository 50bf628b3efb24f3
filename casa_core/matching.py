"""Which layer of a model each LoRA pair adapts, and whether the rule can transfer it (headers only).

The one matcher behind the plan (``plan.make_plan``) and ``casa inspect`` (``sources.compat``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import formats
from .errors import CasaError

if TYPE_CHECKING:
    from .lora import LoraPair

# verdicts, in the order they are checked
UNKNOWN = "unknown"              # the pair names no layer of the model
MISFIT = "misfit"                # the layer's shape differs from the pair's
NOT_LINEAR = "not_linear"        # it fits, but is no 2-D linear the rule applies to
NOT_IN_TARGET = "not_in_target"  # the target model lacks the layer
FITS = "fits"


@dataclass(frozen=True)
class PairMatch:
    pair: LoraPair
    module: str | None                  # canonical module it names; None where its name resolves to none
    shape: tuple[int, ...] | None       # the model's weight shape; None where the model lacks it
    verdict: str


def match_pairs(lora, model, target=None) -> list[PairMatch]:
    """Every pair of ``lora`` against ``model`` (and, where given, whether ``target`` has its layer too)."""
    module_of = formats.module_resolver(model)
    out = []
    seen: dict[str, LoraPair] = {}
    for pair in lora.pairs:
        module = module_of(pair.prefix)
        wkey = f"{module}.weight"
        if module is None or wkey not in model:
            out.append(PairMatch(pair, module, None, UNKNOWN))
            continue
        if module in seen:  # e.g. a ComfyUI pair and a kohya pair for one layer: one would be lost
            first = seen[module]
            raise CasaError(f"LoRA layer {module} is given twice, by {_key(first)} and by {_key(pair)}",
                            "keep one of them: re-export the LoRA, or remove the other pair from the file")
        seen[module] = pair
        shape = tuple(model.shape(wkey))
        if not shape:
            raise CasaError(f"{getattr(model, 'role', 'model')} weight {wkey} is 0-d (a single number), not the "
                            f"{pair.out_features}x{pair.in_features} layer the LoRA adapts",
                            "the checkpoint is damaged; re-download it")
        if (pair.out_features, pair.in_features) != (shape[0], math.prod(shape[1:])):
            verdict = MISFIT
        elif len(shape) != 2 or not model.family.is_transferable(module):
            verdict = NOT_LINEAR
        elif target is not None and wkey not in target:
            verdict = NOT_IN_TARGET
        else:
            verdict = FITS
        out.append(PairMatch(pair, module, shape, verdict))
    return out


def _key(pair: LoraPair) -> str:
    """The file's own key that gives a pair (its first LoHa / LoKr part, or its down factor)."""
    return pair.source_keys[0] if pair.source_keys else pair.down_key
