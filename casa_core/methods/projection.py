"""``projection``: the LoRA split by the base's leading subspaces and carried over to the target's
(a subspace projection in the spirit of ProLoRA, arXiv 2506.04244, as docs/method.md defines it).

With ``P_U = U_k U_k^T``, ``P_V = V_k V_k^T`` from the base and ``Q_U``, ``Q_V`` from the target
(each ``k`` by the step-3 rule on its own singular values):
``D = Q_U (P_U D_lora P_V) Q_V + (I - Q_U) ((I - P_U) D_lora (I - P_V)) (I - Q_V)``.
Every piece is a rank-r product, so D is held as two of them (rank <= 2r) and never formed;
the target's basis is the one thing only this method needs (``PairState.target_basis``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .base import LayerInput, MethodParams, param


@dataclass(frozen=True)
class ProjectionParams(MethodParams):
    energy: float = param(0.90, "share of a square layer's spectral energy the projected subspaces hold "
                          "(base and target each by their own spectrum)", minimum=0.0, maximum=1.0)


@dataclass
class ProjectionAnalysis:
    layer: LayerInput
    pair: object                  # PairState
    energy: float                 # what k_base and k_target were chosen with
    left: object                  # m x 2r: D = left @ right (tall orientation)
    right: object                 # 2r x n
    k_base: int
    k_target: int
    rank_in: int
    scale: float
    drift_removed: float          # <D_lora - D, D_fft>
    seconds: float


@dataclass(frozen=True)
class ProjectionDiagnostics:
    k_base: int                   # leading directions of the base's subspaces
    k_target: int                 # ... and of the target's

    def figures(self) -> dict:
        return {"k": self.k_base, "k_target": self.k_target}

    def summary(self) -> str:
        return f"k={self.k_base} k_target={self.k_target}"


class ProjectionMethod:
    name = "projection"
    title = "subspace projection onto the target's leading subspaces (after ProLoRA)"
    label = "Projection (base subspaces -> target's)"
    Params = ProjectionParams
    uses_models = True

    def analyse(self, layer: LayerInput, pair, params: ProjectionParams | None, *,
                spectra: bool = False) -> ProjectionAnalysis:
        """The target's basis (once per pair) and the two rank-r pieces; they depend on ``energy``,
        so without ``params`` the default is used and a conclusion with another one analyses again."""
        import torch

        from ..compute import sync
        from ..layers import lora_factors
        from ..spectral import head_size

        t0 = time.perf_counter()
        energy = (params or ProjectionParams()).energy
        device = pair.sigma.device
        up, down = lora_factors(pair, layer.B, layer.A, layer.scale)
        target = pair.target_basis()
        ks = head_size(pair.sigma, pair.square, energy)
        kt = head_size(target.sigma, pair.square, energy)
        base = pair.base
        a = base.project_rows(ks, up)                     # P_U B s
        b = base.project_cols(ks, down)                   # A P_V
        lefts, rights = [target.project_rows(kt, a)], [target.project_cols(kt, b)]
        c, d = up - a, down - b                           # (I - P_U) B s, A (I - P_V)
        if bool(c.any()) and bool(d.any()):               # zero when P_U or P_V is the identity
            lefts.append(c - target.project_rows(kt, c))
            rights.append(d - target.project_cols(kt, d))
        left, right = torch.cat(lefts, 1), torch.cat(rights, 0)

        def inner(L, R):                                  # <L R, D_fft>
            return float((L * (pair.D_fft @ R.T)).sum())

        removed = inner(up, down) - inner(left, right)
        sync(device)
        return ProjectionAnalysis(layer, pair, energy, left, right, ks, kt, layer.rank, layer.scale, removed,
                                  pair.seconds + time.perf_counter() - t0)

    def conclude(self, analysis: ProjectionAnalysis, settings, rank, view_size: int | None = None):
        from ..factorization import factorize_lowrank_to
        from ..layers import LayerEffect, LayerResult
        from .casa import _orient

        if analysis.energy != settings.params.energy:
            analysis = self.analyse(analysis.layer, analysis.pair, settings.params)
        t0 = time.perf_counter()
        pair = analysis.pair
        fac = factorize_lowrank_to(analysis.left.double(), analysis.right.double(), rank, analysis.rank_in)
        up, down = _orient(fac, pair.transposed)
        undone = analysis.drift_removed / pair.dfft_sq if pair.dfft_sq > 0 else None
        return LayerResult.of(pair.name, pair.shape, settings, analysis.rank_in, analysis.scale, pair.drift, fac,
                              up, down, solver=pair.solver, effect=LayerEffect(None, None, None, undone),
                              diagnostics=ProjectionDiagnostics(analysis.k_base, analysis.k_target),
                              stages={"spectral": analysis.seconds, "factorization": time.perf_counter() - t0})
