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

from .arbitration import arbitrate
from .factorization import Factors, factorize, factorize_lowrank
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
    U: torch.Tensor
    sigma: torch.Tensor
    V: torch.Tensor
    C_lora: torch.Tensor
    C_fft: torch.Tensor
    D_fft: torch.Tensor               # W_t - W_s
    X: torch.Tensor | None            # U^T D_fft (p x n), kept for strictly tall layers
    up: torch.Tensor                  # s * B (m x r)
    down: torch.Tensor                # A (r x n)
    drift: float
    scale: float
    rank_in: int
    sigma_target: torch.Tensor | None = None
    sigma_merged: torch.Tensor | None = None
    seconds: float = 0.0

    @property
    def square(self) -> bool:
        return self.shape[0] == self.shape[1]


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
            exact: bool = False, spectra: bool = False) -> LayerState:
    """Steps 1-3 of the rule: thin basis of W_s and both routing matrices."""
    t0 = time.perf_counter()
    device = torch.device(device)
    m, n = W_s.shape
    Ws = W_s.to(device=device, dtype=dtype)
    Wt = W_t.to(device=device, dtype=dtype)
    Bm = B.reshape(B.shape[0], -1).to(device=device, dtype=dtype) * scale
    Am = A.reshape(A.shape[0], -1).to(device=device, dtype=dtype)
    transposed = m < n
    if transposed:  # the rule is transpose-equivariant; work on the tall side
        Ws, Wt, Bm, Am = Ws.T, Wt.T, Am.T, Bm.T
    D_fft = Wt - Ws
    del Wt
    U, sigma, V = thin_svd(Ws, exact)
    C_lora = (U.T @ Bm) @ (Am @ V)
    X = U.T @ D_fft
    C_fft = X @ V
    tall = Ws.shape[0] > Ws.shape[1]
    ws_norm = float(sigma.double().norm())
    drift = float(D_fft.norm()) / ws_norm if ws_norm > 0 else 0.0
    st = sm = None
    if spectra:
        st = torch.linalg.svdvals(Ws + D_fft)
        sm = torch.linalg.svdvals(Ws + Bm @ Am)
    _sync(device)
    return LayerState(name, (m, n), transposed, exact, U, sigma, V, C_lora, C_fft, D_fft, X if tall else None,
                      Bm, Am, drift, scale, B.shape[1] if B.dim() > 1 else 1, st, sm,
                      time.perf_counter() - t0)


def conclude(state: LayerState, settings: TransferSettings, rank: int | str | None,
             view_size: int | None = 128) -> LayerResult:
    """Steps 4-11: clusters, dominance, capping, back-projection and rank-r' factors."""
    t0 = time.perf_counter()
    p = state.sigma.numel()
    k = head_size(state.sigma, state.square, settings.energy)
    arb = arbitrate(state.C_lora, state.C_fft, state.sigma, k, settings)
    delta = arb.C_casa - (state.C_lora - state.C_fft)
    D = dense_update(state, delta, arb.coldom)
    _sync(D.device)
    t1 = time.perf_counter()
    r_out = p if rank == "full" else min(p, rank or state.rank_in)
    fac = factorize(D, r_out, state.exact)
    _sync(D.device)
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


def dense_update(state: LayerState, delta: torch.Tensor, coldom: torch.Tensor) -> torch.Tensor:
    """D_casa (tall orientation) from the correction delta = C_casa - (C_lora - C_fft).

    Where the rule routes like base + LoRA the update is D_lora - D_fft; the correction lives
    on the dominant strips. For strictly tall layers the complement of W_s's column space keeps
    the LoRA's routing in dominant columns: + (I - U U^T) D_fft V_cd V_cd^T, which folds into
    the same product with U.
    """
    U, V = state.U, state.V
    D = torch.addmm(-state.D_fft, state.up, state.down)
    rows = delta.abs().sum(1) > 0
    cols = (delta[~rows].abs().sum(0) > 0) if bool((~rows).any()) else torch.zeros_like(rows)
    tall_cd = state.X is not None and bool(coldom.any())
    n_rows, n_cols = int(rows.sum()), int(cols.sum())
    if not tall_cd and n_rows + n_cols < U.shape[1] // 2:
        # few dominant strips (square layers): multiply only those
        if n_rows:
            D += U[:, rows] @ (delta[rows] @ V.T)
        if n_cols:
            D += (U[:, ~rows] @ delta[~rows][:, cols]) @ V[:, cols].T
        return D
    M = delta @ V.T
    if tall_cd:
        Vc = V[:, coldom]
        M -= (state.X @ Vc) @ Vc.T
        D += (state.D_fft @ Vc) @ Vc.T
    return D.addmm_(U, M)


def _orient(fac: Factors, transposed: bool):
    up, down = (fac.down.T, fac.up.T) if transposed else (fac.up, fac.down)
    return up.contiguous().cpu(), down.contiguous().cpu()


def _views(state: LayerState, arb, size: int) -> LayerViews:
    """Pooled views in the weight's own orientation (rows = outputs)."""
    t = state.transposed

    def o(M):
        return M.T if t else M

    Cl, Cf, Cc, cap = o(state.C_lora), o(state.C_fft), o(arb.C_casa), o(arb.capped)
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
