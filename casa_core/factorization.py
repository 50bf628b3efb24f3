"""Rank-r factors of a dense update: B' = U_r sqrt(S_r), A' = sqrt(S_r) V_r^T."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SEED = 20260501


@dataclass
class Factors:
    up: torch.Tensor      # m x r
    down: torch.Tensor    # r x n
    energy_kept: float    # share of ||D||_F^2 the rank keeps


def _split(U, S, V, total_sq) -> Factors:
    # deterministic signs: the largest-magnitude entry of each right vector is positive
    idx = V.abs().argmax(dim=0)
    sgn = torch.sign(V[idx, torch.arange(V.shape[1], device=V.device)])
    sgn[sgn == 0] = 1
    U, V = U * sgn, V * sgn
    root = S.sqrt()
    kept = float((S.double() ** 2).sum() / total_sq) if total_sq > 0 else 1.0
    return Factors((U * root).contiguous(), (root[:, None] * V.T).contiguous(), min(kept, 1.0))


def factorize(D: torch.Tensor, rank: int, exact: bool) -> Factors:
    """Best rank-``rank`` factors of D (``rank >= min(D.shape)`` reproduces D).

    Large matrices at a small rank use a seeded randomized range finder with power
    iterations, run until the captured energy stops growing (well inside the 0.1%
    residual bound the contract allows); otherwise LAPACK's SVD.
    """
    m, n = D.shape
    p = min(m, n)
    rank = min(rank, p)
    total_sq = float((D.double() ** 2).sum())
    if exact or p <= 256 or rank * 4 >= p:
        U, S, Vh = torch.linalg.svd(D, full_matrices=False)
        return _split(U[:, :rank], S[:rank], Vh[:rank].T, total_sq)
    return _randomized(D, rank, total_sq)


def _randomized(D: torch.Tensor, rank: int, total_sq: float) -> Factors:
    m, n = D.shape
    ell = min(min(m, n), rank + max(16, rank // 2))
    gen = torch.Generator().manual_seed(SEED)
    omega = torch.randn(n, ell, generator=gen, dtype=torch.float64).to(D.device, D.dtype)
    Q = _orth(D @ omega)
    last = -1.0
    for _ in range(16):
        Z = _orth(D.T @ Q)
        Q = _orth(D @ Z)
        Uh, S, Vh = torch.linalg.svd(Q.T @ D, full_matrices=False)
        captured = float((S[:rank].double() ** 2).sum())
        # converged when the last gain is a 1e-4 share of what is still left out: the residual
        # is then far inside the contract's 0.1% of the optimum (power iterations converge
        # geometrically, so the gains still to come are of the order of the last one)
        if last > 0 and captured - last <= 1e-4 * max(total_sq - captured, 1e-30 * total_sq):
            break
        last = captured
    return _split(Q @ Uh[:, :rank], S[:rank], Vh[:rank].T, total_sq)


def _orth(Y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of a tall, thin Y: Cholesky QR done twice, its small Gram in float64.

    Much faster than Householder QR on tall blocks, and as accurate after the second pass;
    falls back to QR when Y is too ill-conditioned for the Cholesky factorization.
    """
    Q = Y
    for _ in range(2):
        G = (Q.T @ Q).double()
        L, info = torch.linalg.cholesky_ex(G)
        if int(info) != 0:
            return torch.linalg.qr(Y)[0]
        Q = torch.linalg.solve_triangular(L.to(Y.dtype), Q.T, upper=False).T
    return Q


def factorize_lowrank(B: torch.Tensor, A: torch.Tensor, rank: int) -> Factors:
    """Factors of the low-rank product ``B @ A`` without forming it (QR of both sides)."""
    Qb, Rb = torch.linalg.qr(B)
    Qa, Ra = torch.linalg.qr(A.T)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T, full_matrices=False)
    total_sq = float((S.double() ** 2).sum())
    r = min(rank, S.numel())
    return _split(Qb @ U[:, :r], S[:r], Qa @ Vh[:r].T, total_sq)
