"""The baseline: reuse the LoRA's own update on the target (refactored, scale folded in)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .base import LayerInput, MethodParams


@dataclass(frozen=True)
class DirectParams(MethodParams):
    """Plain reuse takes no parameters."""


class DirectMethod:
    name = "direct"
    title = "plain reuse of the LoRA, the baseline"
    label = "Direct (reuse the LoRA as is)"
    Params = DirectParams
    uses_models = False

    def analyse(self, layer: LayerInput, pair, params, *, spectra: bool = False) -> LayerInput:
        return layer

    def conclude(self, layer: LayerInput, settings, rank: int | str | None, view_size: int | None = None):
        from ..factorization import factorize_lowrank_to
        from ..layers import LayerEffect, LayerResult

        t0 = time.perf_counter()
        Bm = layer.B.reshape(layer.B.shape[0], -1).double() * layer.scale
        Am = layer.A.reshape(layer.A.shape[0], -1).double()
        r_in = Am.shape[0]
        m, n = Bm.shape[0], Am.shape[1]
        fac = factorize_lowrank_to(Bm, Am, rank, r_in)
        # the LoRA reused everywhere, on top of the drift, which it leaves as it is
        effect = LayerEffect(0.0, 0.0, 1.0, 0.0)
        return LayerResult.of(layer.name, (m, n), settings, r_in, layer.scale, None, fac, fac.up, fac.down,
                              effect=effect, stages={"factorization": time.perf_counter() - t0})
