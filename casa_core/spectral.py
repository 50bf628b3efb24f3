"""The base weight's thin singular basis and the routing matrices in it."""

from __future__ import annotations

import torch


def thin_svd(W: torch.Tensor, exact: bool):
    """Thin SVD of a tall ``m x n`` (m >= n) matrix: U (m x n), sigma (n, descending), V (n x n).

    ``exact`` uses LAPACK's SVD. Otherwise the eigendecomposition of the ``n x n``
    Gram matrix gives V and sigma about 3x faster; it falls back to the SVD when the
    spectrum is too ill-conditioned for ``U = W V / sigma`` to stay accurate.
    Signs are normalised so the result does not depend on the solver's choices.
    """
    if not exact:
        G = W.T @ W
        lam, V = torch.linalg.eigh(G)
        lam, V = lam.flip(0), V.flip(1)
        sigma = lam.clamp_min(0).sqrt()
        eps = torch.finfo(W.dtype).eps
        if sigma[-1] > (eps ** 0.5) * 4 * sigma[0]:
            U = (W @ V) / sigma
            return _fix_signs(U, sigma, V)
    U, sigma, Vh = torch.linalg.svd(W, full_matrices=False)
    return _fix_signs(U, sigma, Vh.T)


def _fix_signs(U, sigma, V):
    # make the largest-magnitude entry of each right singular vector positive
    idx = V.abs().argmax(dim=0)
    s = torch.sign(V[idx, torch.arange(V.shape[1], device=V.device)])
    s[s == 0] = 1
    return U * s, sigma, V * s


def head_size(sigma: torch.Tensor, square: bool, energy: float) -> int:
    """k: square layers keep the top directions holding ``energy`` of sigma^2; rectangular keep all."""
    p = sigma.numel()
    if not square:
        return p
    e = sigma.double() ** 2
    cum = torch.cumsum(e, 0) / e.sum()
    return min(p, int((cum < energy).sum().item()) + 1)


def quantile(x: torch.Tensor, q: float) -> float:
    """Exact quantile with linear interpolation (numpy's 'linear'), any size."""
    x = x.flatten()
    n = x.numel()
    if n == 1:
        return float(x[0])
    pos = q * (n - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    vals = torch.sort(x.double()).values if n <= 4_000_000 else None
    if vals is None:  # kthvalue avoids sorting tens of millions of entries
        a = x.double().kthvalue(lo + 1).values
        b = x.double().kthvalue(hi + 1).values
    else:
        a, b = vals[lo], vals[hi]
    return float(a + frac * (b - a))
