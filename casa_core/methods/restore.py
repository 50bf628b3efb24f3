"""``restore``: D = D_lora - D_fft, so that target + new LoRA equals base + LoRA (the distillation undone).

A reference point for comparisons, not a recommendation: it takes back everything distillation did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .base import LayerInput, MethodParams


@dataclass(frozen=True)
class RestoreParams(MethodParams):
    """Restoring takes no parameters."""


@dataclass
class RestoreAnalysis:
    pair: object                  # PairState
    up: object                    # s * B, tall orientation
    down: object                  # A, tall orientation
    rank_in: int
    scale: float
    seconds: float


class RestoreMethod:
    name = "restore"
    title = "reference point: the distillation undone, target + new LoRA = base + LoRA"
    label = "Restore (undo the distillation)"
    Params = RestoreParams
    uses_models = True

    def analyse(self, layer: LayerInput, pair, params, *, spectra: bool = False) -> RestoreAnalysis:
        from ..layers import lora_factors

        t0 = time.perf_counter()
        up, down = lora_factors(pair, layer.B, layer.A, layer.scale)
        return RestoreAnalysis(pair, up, down, layer.rank, layer.scale, pair.seconds + time.perf_counter() - t0)

    def conclude(self, analysis: RestoreAnalysis, settings, rank, view_size: int | None = None):
        from ..factorization import Operator, factorize_to
        from ..layers import LayerEffect, LayerResult
        from .casa import _orient, restore_terms

        t0 = time.perf_counter()
        pair = analysis.pair
        terms, sq, _ = restore_terms(pair, analysis.up, analysis.down)
        fac = factorize_to(Operator(terms, tuple(pair.D_fft.shape), max(sq, 0.0)), rank, analysis.rank_in,
                           pair.exact)
        up, down = _orient(fac, pair.transposed)
        effect = LayerEffect(1.0, 0.0, 0.0, 1.0 if pair.dfft_sq > 0 else None)
        return LayerResult.of(pair.name, pair.shape, settings, analysis.rank_in, analysis.scale, pair.drift, fac,
                              up, down, solver=pair.solver, effect=effect,
                              stages={"spectral": analysis.seconds, "factorization": time.perf_counter() - t0})
