"""CASA, the rule (docs/method.md): cluster-wise arbitration in the base's singular basis.

``analyse`` projects the LoRA into the pair's basis and takes what it needs of the drift's
routing; ``conclude`` clusters, finds the dominant regions, caps, back-projects and
refactors, so the GUI can conclude a layer again with new thresholds without a new SVD.

The numerical modules (and torch) are imported where the work is done, so that listing the
methods and their parameters (``casa --help``, ``casa methods``) stays instant.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ablation import RULE, Ablation
from .base import MethodParams, param

if TYPE_CHECKING:
    import torch

    from ..factorization import Factors, Operator
    from ..layers import LayerEffect, LayerResult, LoraState, PairState
    from ..views import LayerViews


# the rule's parameters, one definition each (the ablations take the ones they still read)
def tau_param():
    return param(0.5, "cluster linking threshold: how strongly two routing directions must couple "
                 "to share a cluster", minimum=0.0, label="τ (tau)")


def q_dom_param():
    return param(0.5, "dominance quantile: clusters above it make their rows and columns dominant",
                 minimum=0.0, maximum=1.0)


def q_act_param():
    return param(0.85, "capping quantile of the risk score: entries above it are capped", minimum=0.0, maximum=1.0)


def energy_param():
    return param(0.90, "share of a square layer's spectral energy its top directions (the clustered "
                 "ones) hold", minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class CasaParams(MethodParams):
    tau: float = tau_param()
    q_dom: float = q_dom_param()
    q_act: float = q_act_param()
    energy: float = energy_param()


@dataclass(frozen=True)
class CasaDiagnostics:
    """What the rule decided on one layer."""
    k: int                  # top directions clustered
    n_clusters: int
    dominant_share: float   # share of the routing grid in dominant rows or columns
    n_capped: int
    n_candidates: int
    threshold: float        # the q_act quantile of the risk (nan without candidates)

    def figures(self) -> dict:
        return {"k": self.k, "clusters": self.n_clusters, "dominant_share": round(self.dominant_share, 6),
                "capped": self.n_capped, "candidates": self.n_candidates,
                "threshold": None if math.isnan(self.threshold) else self.threshold}

    def summary(self) -> str:
        return (f"k={self.k} clusters={self.n_clusters} dominant={self.dominant_share:.2f} "
                f"capped={self.n_capped}")


@dataclass
class CasaAnalysis:
    """A layer ready to be concluded: the pair, the LoRA in its basis, the drift's routing."""
    pair: PairState
    lora: LoraState
    C_fft: torch.Tensor
    partial: CasaParams | None        # C_fft holds only what these thresholds read
    seconds: float


# what a partial analysis was narrowed to: concluding with other values of these needs a full one
_NARROWED_BY = ("tau", "q_dom", "energy")


class CasaMethod:
    """The rule; an ablation (``methods.ablations``) is this class with one step replaced (``ablation``)."""
    name = "casa"
    title = "cluster-wise spectral arbitration, the rule (default)"
    label = "CASA (spectral arbitration)"
    Params = CasaParams
    uses_models = True
    ablation: Ablation = RULE

    def analyse(self, layer, pair: PairState, params: CasaParams | None, *, spectra: bool = False) -> CasaAnalysis:
        """Steps 2-3 of the rule on top of the pair's basis.

        With ``params``, a square layer's C_fft is computed only where the rule reads it (the
        top-k rows, and the tail rows of the dominant columns; elsewhere the update routes like
        base + LoRA whatever C_fft holds): two of three n x n x n products become about a third
        each. Without ``params`` (the GUI's re-arbitration with any thresholds) C_fft is full.
        """
        from ..compute import sync
        from ..layers import analyse_lora
        from ..spectral import head_size

        t0 = time.perf_counter()
        lora = analyse_lora(pair, layer.B, layer.A, layer.scale, spectra=spectra)
        narrow = params is not None and not pair.tall and not self.ablation.uniform
        k = head_size(pair.sigma, True, params.energy) if narrow else len(pair.sigma)
        partial = params if k < len(pair.sigma) else None
        C_fft = (_drift_routing_strips(pair, lora.C_lora, k, partial, self.ablation) if partial is not None
                 else pair.c_fft())
        sync(pair.sigma.device)
        return CasaAnalysis(pair, lora, C_fft, partial, pair.seconds + time.perf_counter() - t0)

    def conclude(self, analysis: CasaAnalysis, settings, rank: int | str | None,
                 view_size: int | None = 128) -> LayerResult:
        """Steps 4-11: clusters, dominance, capping, back-projection and rank-r' factors."""
        from ..arbitration import arbitrate
        from ..compute import sync
        from ..factorization import factorize_to
        from ..layers import LayerResult
        from ..spectral import head_size

        t0 = time.perf_counter()
        s: CasaParams = settings.params
        part, pair, lora = analysis.partial, analysis.pair, analysis.lora
        if part is not None and any(getattr(part, f, None) != getattr(s, f, None) for f in _NARROWED_BY):
            raise ValueError(f"{pair.name} was analysed for other thresholds (tau, q_dom, energy); "
                             "analyse it without parameters to conclude it with any")
        k = head_size(pair.sigma, pair.square, s.energy)
        arb = arbitrate(lora.C_lora, analysis.C_fft, pair.sigma, k, s, self.ablation)
        delta = arb.C_casa - (lora.C_lora - analysis.C_fft)
        D = update_operator(pair, lora, analysis.C_fft, delta, arb.rowdom, arb.coldom)
        effect = _effect(pair, lora, arb, D.drift_removed)
        sync(delta.device)
        t1 = time.perf_counter()
        fac = factorize_to(D, rank, lora.rank_in, pair.exact)
        sync(delta.device)
        t2 = time.perf_counter()
        m, n = pair.shape
        rows_m, cols_m = (n, m) if pair.transposed else (m, n)   # tall-orientation grid
        nr, nc = int(arb.rowdom.sum()), int(arb.coldom.sum())
        dom_share = (nr * cols_m + nc * rows_m - nr * nc) / (rows_m * cols_m)
        up, down = _orient(fac, pair.transposed)
        views = _views(analysis, arb, view_size) if view_size else None
        diag = CasaDiagnostics(k, arb.n_clusters, dom_share, int(arb.capped.sum()), arb.n_candidates,
                               arb.threshold)
        return LayerResult.of(pair.name, pair.shape, settings, lora.rank_in, lora.scale, pair.drift, fac, up, down,
                              diagnostics=diag, views=views, solver=pair.solver, effect=effect,
                              stages={"spectral": analysis.seconds, "arbitration": t1 - t0,
                                      "factorization": t2 - t1, "views": time.perf_counter() - t2})


def _effect(pair: PairState, lora: LoraState, arb, drift_removed: float) -> LayerEffect:
    """The shares of ||C_lora||^2 the rule restored, capped and reused, and the drift it undid."""

    from ..layers import LayerEffect

    e = lora.C_lora.square()
    total = float(e.sum())
    dom = arb.rowdom[:, None] | arb.coldom[None, :]
    restored = float((e * ~dom).sum())         # (e >= 0: the same sums as torch.where, without its branches)
    capped = float((e * arb.capped).sum())
    undone = drift_removed / pair.dfft_sq if pair.dfft_sq > 0 else None
    if total <= 0:
        return LayerEffect(None, None, None, undone)
    return LayerEffect(restored / total, capped / total, max(total - restored - capped, 0.0) / total, undone)


def update_operator(pair: PairState, lora: LoraState, C_fft: torch.Tensor, delta: torch.Tensor,
                    rowdom: torch.Tensor, coldom: torch.Tensor) -> Operator:
    """D_casa (tall orientation) as a sum of products, from delta = C_casa - (C_lora - C_fft).

    Where the rule routes like base + LoRA the update is D_lora - D_fft; the correction
    U delta V^T lives on the dominant strips (delta is zero outside the dominant rows and
    columns). For strictly tall layers the complement of W_s's column space keeps the
    LoRA's routing in dominant columns: + (I - U U^T) D_fft P_c with P_c = V_c V_c^T, which
    folds into U (delta V^T - X P_c) - D_fft (I - P_c), the last term (D_fft V_n) V_n^T from the
    pair's D_fft V. Nothing m x n is formed beyond what the state holds; ||D||_F^2 comes from
    the same pieces (U and V orthonormal), so the randomized factorization needs no dense D either.
    """
    from ..factorization import Operator, sq_norm

    U, V, D_fft = pair.U, pair.V, pair.D_fft
    terms, restored_sq, BtD = restore_terms(pair, lora.up, lora.down)
    total = restored_sq + sq_norm(delta) + 2 * _dot(lora.C_lora - C_fft, delta)
    # <D_lora - D, D_fft> = ||D_fft||^2 - <delta, C_fft> (- ||R_c||^2 on tall layers, below)
    removed = pair.dfft_sq - _dot(delta, C_fft)
    terms = terms[:1]       # the LoRA's own term; where -D_fft goes depends on the layer's shape (below)
    n_rows, n_cols = int(rowdom.sum()), int(coldom.sum())
    if pair.tall and n_cols:
        # with G = D_fft V (once per pair) and V square, D_fft (I - P_c) = G_n V_n^T over the other
        # columns, and X_c V_c^T = C_fft[:, c] V_c^T: U (delta V^T - X_c V_c^T) = U E V^T
        G, g2 = pair.drift_in_v()
        Vc = V[:, coldom]
        Cc = C_fft[:, coldom]                                    # X V_c
        E = delta.clone()
        E[:, coldom] -= Cc
        if n_cols < V.shape[1]:
            rest = ~coldom
            terms.append((-G[:, rest], V[:, rest].T))
        # R_c = (I - U U^T) D_fft P_c: ||R_c||^2 = <D_fft, R_c> = ||D_fft V_c||^2 - ||X V_c||^2
        rc2 = float(g2[coldom].sum()) - sq_norm(Cc)
        BtR = BtD @ Vc - lora.UtB.T @ Cc                         # B^T R_c V_c
        total += 2 * _dot(BtR, lora.down @ Vc) - rc2
        removed -= rc2
        terms.append(pair.left(E, V.T))
    else:
        terms.append((-D_fft,))
        if U is not None and n_rows + n_cols < V.shape[1]:
            # only the dominant strips: rows R (all columns), then columns C of the other rows
            if n_rows:
                terms.append((U[:, rowdom], delta[rowdom] @ V.T))
            if n_cols:
                terms.append((U[:, ~rowdom] @ delta[~rowdom][:, coldom], V[:, coldom].T))
        elif n_rows or n_cols:
            terms.append(pair.left(delta @ V.T))
    op = Operator(terms, tuple(D_fft.shape), max(total, 0.0))
    op.drift_removed = removed
    return op


def _dot(a, b) -> float:
    return float((a * b).sum())


def restore_terms(pair: PairState, up: torch.Tensor, down: torch.Tensor):
    """D_lora - D_fft (where the rule routes like base + LoRA) as Operator terms, its ||.||_F^2, and B^T D_fft."""
    BtD = up.T @ pair.D_fft                                    # r x n
    sq = _dot(up.T @ up, down @ down.T) - 2 * _dot(BtD, down) + pair.dfft_sq
    return [(up, down), (-pair.D_fft,)], sq, BtD


def _orient(fac: Factors, transposed: bool):
    up, down = (fac.down.T, fac.up.T) if transposed else (fac.up, fac.down)
    return up.contiguous().cpu(), down.contiguous().cpu()


def _drift_routing_strips(pair: PairState, C_lora: torch.Tensor, k: int, params: CasaParams,
                          ablation: Ablation = RULE) -> torch.Tensor:
    """C_fft of a square layer where the rule reads it, zero elsewhere: rows < k in full
    (clusters, dominance, dominant rows), then the rows >= k of the dominant columns."""
    import torch

    from ..arbitration import dominance

    C_fft = torch.zeros_like(C_lora)
    C_fft[:k] = pair.c_fft_rows(k)
    coldom = dominance(C_lora[:k, :k], C_fft[:k, :k], pair.sigma[:k], params, ablation)[4]
    cols = coldom.nonzero().squeeze(1)
    if cols.numel():
        C_fft[k:, cols] = pair.tail_routing(k, cols)
    return C_fft


def _views(analysis: CasaAnalysis, arb, size: int) -> LayerViews:
    """Pooled views in the weight's own orientation (rows = outputs)."""
    import numpy as np
    import torch

    from ..views import LayerViews, risk_histogram, routing_view

    pair, lora = analysis.pair, analysis.lora
    t = pair.transposed

    def o(M):
        return M.T if t else M

    C_fft, C_casa = analysis.C_fft, arb.C_casa
    if analysis.partial is not None:
        # for display only: the entries the rule does not read (tail rows outside the dominant
        # columns route like base + LoRA: C_casa = C_lora - C_fft there)
        k, rest = arb.k, (~arb.coldom).nonzero().squeeze(1)
        fill = pair.tail_routing(k, rest)
        C_fft, C_casa = C_fft.clone(), C_casa.clone()
        C_fft[k:, rest] = fill
        C_casa[k:, rest] = lora.C_lora[k:][:, rest] - fill
    Cl, Cf, Cc, cap = o(lora.C_lora), o(C_fft), o(C_casa), o(arb.capped)
    k = arb.k
    order = np.argsort(arb.labels, kind="stable")
    idx = torch.from_numpy(order).to(Cl.device)
    rowdom, coldom = (arb.coldom, arb.rowdom) if t else (arb.rowdom, arb.coldom)
    counts, edges = risk_histogram(arb.risk)

    def sv(x):
        return None if x is None else x.double().cpu().numpy()

    return LayerViews(
        sigma_base=sv(pair.sigma), sigma_target=sv(pair.sigma_target), sigma_merged=sv(lora.sigma_merged),
        k=k, labels=arb.labels, rowdom=rowdom.cpu().numpy(), coldom=coldom.cpu().numpy(),
        full=routing_view(Cl, Cf, Cc, cap, size),
        top=routing_view(Cl[:k, :k], Cf[:k, :k], Cc[:k, :k], cap[:k, :k], size),
        clustered=routing_view(Cl[idx][:, idx], Cf[idx][:, idx], Cc[idx][:, idx], cap[idx][:, idx], size, order),
        risk_counts=counts, risk_edges=edges, threshold=arb.threshold)
