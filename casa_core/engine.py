"""One layer of CASA: spectral analysis (cached) and arbitration + refactoring (cheap, repeatable).

``analyze`` does the expensive part once (SVD, routing matrices); ``conclude`` applies
the thresholds and writes the factors, so the GUI can re-arbitrate a layer with new
thresholds without a new SVD.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .arbitration import arbitrate, dominance
from .factorization import Factors, Operator, factorize, factorize_lowrank, sq_norm
from .settings import TransferSettings
from .spectral import head_size, thin_svd
from .views import LayerViews, risk_histogram, routing_view


@dataclass
class LayerState:
    """A layer's spectral data in the tall orientation (rows >= columns)."""
    name: str
    shape: tuple[int, int]            # the weight's own (out, in)
    transposed: bool
    exact: bool
    U: torch.Tensor | None            # left singular vectors; None: applied as Ws @ (Vsi @ .)
    sigma: torch.Tensor
    V: torch.Tensor
    C_lora: torch.Tensor
    C_fft: torch.Tensor
    D_fft: torch.Tensor               # W_t - W_s
    X: torch.Tensor | None            # U^T D_fft (p x n), kept for strictly tall layers
    up: torch.Tensor                  # s * B (m x r)
    down: torch.Tensor                # A (r x n)
    UtB: torch.Tensor                 # U^T up (p x r)
    drift: float
    scale: float
    rank_in: int
    sigma_target: torch.Tensor | None = None
    sigma_merged: torch.Tensor | None = None
    seconds: float = 0.0
    Ws: torch.Tensor | None = None    # the base weight (tall orientation) when U is None
    Vsi: torch.Tensor | None = None   # V / sigma when U is None: U = Ws @ Vsi
    dfft_sq: float = 0.0              # ||D_fft||_F^2
    partial: TransferSettings | None = None   # C_fft holds only what these thresholds read

    @property
    def square(self) -> bool:
        return self.shape[0] == self.shape[1]


def _left_t(U, Ws, Vsi, Y):
    """U^T @ Y, with U given or applied as Ws @ Vsi."""
    return U.T @ Y if U is not None else Vsi.T @ (Ws.T @ Y)


@dataclass
class LayerResult:
    """What one converted layer yields: figures, factors, and what the GUI draws."""
    name: str
    shape: tuple[int, int]
    method: str
    settings: TransferSettings
    rank_in: int
    rank_out: int
    scale: float
    k: int
    n_clusters: int
    dominant_share: float
    n_capped: int
    n_candidates: int
    threshold: float
    energy_kept: float
    drift: float
    up: torch.Tensor                  # out x r' (CPU)
    down: torch.Tensor                # r' x in (CPU)
    views: LayerViews | None
    stages: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(sum(self.stages.values()))

    def figures(self) -> dict:
        """The per-layer figures of the run report."""
        return {
            "shape": list(self.shape), "method": self.method, "rank_in": self.rank_in,
            "rank_out": self.rank_out, "scale": self.scale, "k": self.k, "clusters": self.n_clusters,
            "dominant_share": round(self.dominant_share, 6), "capped": self.n_capped,
            "candidates": self.n_candidates,
            "threshold": None if np.isnan(self.threshold) else self.threshold,
            "energy_kept": round(self.energy_kept, 6), "drift": round(self.drift, 6),
            "seconds": round(self.seconds, 4),
            "stages": {k: round(v, 4) for k, v in self.stages.items()},
            "settings": self.settings.to_dict(),
        }


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def analyze(name: str, W_s, W_t, B, A, scale: float, *, dtype=torch.float32, device="cpu",
            exact: bool = False, spectra: bool = False, consume: bool = False,
            settings: TransferSettings | None = None) -> LayerState:
    """Steps 1-3 of the rule: thin basis of W_s and both routing matrices.

    ``settings``: the thresholds the layer will be concluded with. For square layers C_fft
    is then computed only where the rule reads it (the top-k rows, and the tail rows of the
    dominant columns; elsewhere the update routes like base + LoRA whatever C_fft holds):
    two of three n x n x n products become about a third each. Without ``settings`` (the
    GUI's re-arbitration with any thresholds) C_fft is computed in full.

    ``consume``: W_t is the caller's private copy, already in ``dtype`` on ``device``; it is
    overwritten (it becomes D_fft) instead of copied.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    m, n = W_s.shape
    Ws = W_s.to(device=device, dtype=dtype)
    Wt = W_t.to(device=device, dtype=dtype, copy=not consume)   # becomes D_fft in place
    Bm = B.reshape(B.shape[0], -1).to(device=device, dtype=dtype) * scale
    Am = A.reshape(A.shape[0], -1).to(device=device, dtype=dtype)
    transposed = m < n
    if transposed:  # the rule is transpose-equivariant; work on the tall side
        Ws, Wt, Bm, Am = Ws.T, Wt.T, Am.T, Bm.T
    D_fft = Wt.sub_(Ws)
    del Wt
    tall = Ws.shape[0] > Ws.shape[1]
    # tall layers never form U (m x n): U^T Y is computed as (V / sigma)^T (Ws^T Y)
    U, sigma, V = thin_svd(Ws, exact, left=not tall)
    Vsi = None if U is not None else V / sigma
    UtB = _left_t(U, Ws, Vsi, Bm)
    C_lora = UtB @ (Am @ V)
    k = head_size(sigma, True, settings.energy) if settings is not None and not tall else len(sigma)
    partial = settings if k < len(sigma) else None
    if partial is not None:
        X, C_fft = None, _drift_routing_strips(U, V, D_fft, C_lora, sigma, k, settings)
    else:
        X = _left_t(U, Ws, Vsi, D_fft)
        C_fft = X @ V
    ws_norm = float(sigma.double().norm())
    dfft_sq = sq_norm(D_fft)
    drift = dfft_sq ** 0.5 / ws_norm if ws_norm > 0 else 0.0
    st = sm = None
    if spectra:
        st = torch.linalg.svdvals(Ws + D_fft)
        sm = torch.linalg.svdvals(Ws + Bm @ Am)
    _sync(device)
    return LayerState(name, (m, n), transposed, exact, U, sigma, V, C_lora, C_fft, D_fft, X if tall else None,
                      Bm, Am, UtB, drift, scale, B.shape[1] if B.dim() > 1 else 1, st, sm,
                      time.perf_counter() - t0, Ws if U is None else None, Vsi, dfft_sq, partial)


def conclude(state: LayerState, settings: TransferSettings, rank: int | str | None,
             view_size: int | None = 128) -> LayerResult:
    """Steps 4-11: clusters, dominance, capping, back-projection and rank-r' factors."""
    t0 = time.perf_counter()
    part = state.partial
    if part is not None and (part.tau, part.q_dom, part.energy) != (settings.tau, settings.q_dom, settings.energy):
        raise ValueError(f"{state.name} was analysed for other thresholds (tau, q_dom, energy); "
                         "analyse it without settings to conclude it with any")
    p = state.sigma.numel()
    k = head_size(state.sigma, state.square, settings.energy)
    arb = arbitrate(state.C_lora, state.C_fft, state.sigma, k, settings)
    delta = arb.C_casa - (state.C_lora - state.C_fft)
    D = update_operator(state, delta, arb.rowdom, arb.coldom)
    _sync(delta.device)
    t1 = time.perf_counter()
    r_out = p if rank == "full" else min(p, rank or state.rank_in)
    fac = factorize(D, r_out, state.exact)
    _sync(delta.device)
    t2 = time.perf_counter()
    m, n = state.shape
    rows_m, cols_m = (n, m) if state.transposed else (m, n)   # tall-orientation grid
    nr, nc = int(arb.rowdom.sum()), int(arb.coldom.sum())
    dom_share = (nr * cols_m + nc * rows_m - nr * nc) / (rows_m * cols_m)
    up, down = _orient(fac, state.transposed)
    views = _views(state, arb, view_size) if view_size else None
    return LayerResult(state.name, state.shape, settings.method, settings, state.rank_in, fac.up.shape[1],
                       state.scale, k, arb.n_clusters, dom_share, int(arb.capped.sum()), arb.n_candidates,
                       arb.threshold, fac.energy_kept, state.drift, up, down, views,
                       {"spectral": state.seconds, "arbitration": t1 - t0, "factorization": t2 - t1,
                        "views": time.perf_counter() - t2})


def update_operator(state: LayerState, delta: torch.Tensor, rowdom: torch.Tensor,
                    coldom: torch.Tensor) -> Operator:
    """D_casa (tall orientation) as a sum of products, from delta = C_casa - (C_lora - C_fft).

    Where the rule routes like base + LoRA the update is D_lora - D_fft; the correction
    U delta V^T lives on the dominant strips (delta is zero outside the dominant rows and
    columns). For strictly tall layers the complement of W_s's column space keeps the
    LoRA's routing in dominant columns: + (I - U U^T) D_fft P_c with P_c = V_c V_c^T, which
    folds into U (delta V^T - X P_c) + D_fft P_c. Nothing m x n is formed beyond what the
    state holds; ||D||_F^2 comes from the same pieces (U and V orthonormal), so the
    randomized factorization needs no dense D either.
    """
    U, V, D_fft = state.U, state.V, state.D_fft

    def dot(a, b):
        return float((a * b).sum())

    BtD = state.up.T @ D_fft                                    # r x n
    total = (dot(state.up.T @ state.up, state.down @ state.down.T) - 2 * dot(BtD, state.down) + state.dfft_sq
             + sq_norm(delta) + 2 * dot(state.C_lora - state.C_fft, delta))
    terms = [(state.up, state.down)]
    n_rows, n_cols = int(rowdom.sum()), int(coldom.sum())
    if state.X is not None and n_cols:
        Vc = V[:, coldom]
        Xc = state.X @ Vc
        # M = delta V^T - X_c V_c^T, kept as [delta, -X_c] [V, V_c]^T: never formed (n x n x n)
        M = (torch.cat([delta, -Xc], 1), torch.cat([V, Vc], 1).T)
        if n_cols <= V.shape[1] - n_cols:   # D_fft (I - P_c) = D_fft - (D_fft V_c) V_c^T
            Gc = D_fft @ Vc
            terms += [(-D_fft,), (Gc, Vc.T)]
            dvc2 = sq_norm(Gc)
        else:                               # ... = (D_fft V_n) V_n^T over the other columns
            Vn = V[:, ~coldom]
            F = D_fft @ Vn
            terms.append((-F, Vn.T))
            dvc2 = state.dfft_sq - sq_norm(F)
        # R_c = (I - U U^T) D_fft P_c: ||R_c||^2 = <D_fft, R_c> = ||D_fft V_c||^2 - ||X V_c||^2
        rc2 = dvc2 - sq_norm(Xc)
        BtR = (BtD - state.UtB.T @ state.X) @ Vc                   # B^T R_c V_c
        total += 2 * dot(BtR, state.down @ Vc) - rc2
        terms.append(_left_term(state, M))
    else:
        terms.append((-D_fft,))
        if U is not None and n_rows + n_cols < V.shape[1]:
            # only the dominant strips: rows R (all columns), then columns C of the other rows
            if n_rows:
                terms.append((U[:, rowdom], delta[rowdom] @ V.T))
            if n_cols:
                terms.append((U[:, ~rowdom] @ delta[~rowdom][:, coldom], V[:, coldom].T))
        elif n_rows or n_cols:
            terms.append(_left_term(state, delta @ V.T))
    return Operator(terms, tuple(D_fft.shape), max(total, 0.0))


def _left_term(state: LayerState, M) -> tuple:
    """U @ M as one term (M a matrix or a tuple of factors): U is (Ws, V / sigma) when not formed."""
    M = M if isinstance(M, tuple) else (M,)
    return (state.U, *M) if state.U is not None else (state.Ws, state.Vsi, *M)


def _orient(fac: Factors, transposed: bool):
    up, down = (fac.down.T, fac.up.T) if transposed else (fac.up, fac.down)
    return up.contiguous().cpu(), down.contiguous().cpu()


def _drift_routing_strips(U, V, D_fft, C_lora, sigma, k: int, settings: TransferSettings) -> torch.Tensor:
    """C_fft of a square layer where the rule reads it, zero elsewhere: rows < k in full
    (clusters, dominance, dominant rows), then the rows >= k of the dominant columns."""
    C_fft = torch.zeros_like(C_lora)
    C_fft[:k] = (U[:, :k].T @ D_fft) @ V
    coldom = dominance(C_lora[:k, :k], C_fft[:k, :k], sigma[:k], settings)[4]
    cols = coldom.nonzero().squeeze(1)
    if cols.numel():
        C_fft[k:, cols] = _tail_routing(U, V, D_fft, k, cols)
    return C_fft


def _tail_routing(U, V, D_fft, k: int, cols: torch.Tensor) -> torch.Tensor:
    """C_fft[k:, cols] of a square layer."""
    return U[:, k:].T @ (D_fft @ V[:, cols])


def _views(state: LayerState, arb, size: int) -> LayerViews:
    """Pooled views in the weight's own orientation (rows = outputs)."""
    t = state.transposed

    def o(M):
        return M.T if t else M

    C_fft, C_casa = state.C_fft, arb.C_casa
    if state.partial is not None:
        # for display only: the entries the rule does not read (tail rows outside the dominant
        # columns route like base + LoRA: C_casa = C_lora - C_fft there)
        k, rest = arb.k, (~arb.coldom).nonzero().squeeze(1)
        fill = _tail_routing(state.U, state.V, state.D_fft, k, rest)
        C_fft, C_casa = C_fft.clone(), C_casa.clone()
        C_fft[k:, rest] = fill
        C_casa[k:, rest] = state.C_lora[k:][:, rest] - fill
    Cl, Cf, Cc, cap = o(state.C_lora), o(C_fft), o(C_casa), o(arb.capped)
    k = arb.k
    order = np.argsort(arb.labels, kind="stable")
    idx = torch.from_numpy(order).to(Cl.device)
    rowdom, coldom = (arb.coldom, arb.rowdom) if t else (arb.rowdom, arb.coldom)
    counts, edges = risk_histogram(arb.risk)

    def sv(x):
        return None if x is None else x.double().cpu().numpy()

    return LayerViews(
        sigma_base=sv(state.sigma), sigma_target=sv(state.sigma_target), sigma_merged=sv(state.sigma_merged),
        k=k, labels=arb.labels, rowdom=rowdom.cpu().numpy(), coldom=coldom.cpu().numpy(),
        full=routing_view(Cl, Cf, Cc, cap, size),
        top=routing_view(Cl[:k, :k], Cf[:k, :k], Cc[:k, :k], cap[:k, :k], size),
        clustered=routing_view(Cl[idx][:, idx], Cf[idx][:, idx], Cc[idx][:, idx], cap[idx][:, idx], size, order),
        risk_counts=counts, risk_edges=edges, threshold=arb.threshold)


def direct(name: str, B, A, scale: float, rank: int | str | None, settings: TransferSettings) -> LayerResult:
    """The baseline: reuse the LoRA's own update (refactored with the scale folded in)."""
    t0 = time.perf_counter()
    Bm = B.reshape(B.shape[0], -1).double() * scale
    Am = A.reshape(A.shape[0], -1).double()
    r_in = Am.shape[0]
    m, n = Bm.shape[0], Am.shape[1]
    r_out = min(m, n) if rank == "full" else (rank or r_in)
    fac = factorize_lowrank(Bm, Am, r_out)
    return LayerResult(name, (m, n), "direct", settings, r_in, fac.up.shape[1], scale, 0, 0, 0.0, 0, 0,
                       float("nan"), fac.energy_kept, float("nan"), fac.up, fac.down, None,
                       {"factorization": time.perf_counter() - t0})
