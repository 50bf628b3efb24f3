"""The base weight's thin singular basis and the routing matrices in it."""

from __future__ import annotations

import numpy as np
import torch


def thin_svd(W: torch.Tensor, exact: bool):
    """Thin SVD of a tall ``m x n`` (m >= n) matrix: U (m x n), sigma (n, descending), V (n x n).

    ``exact`` uses LAPACK's SVD in W's dtype. Otherwise V and sigma come from the
    eigendecomposition of the ``n x n`` Gram matrix, formed and solved in float64:
    singular values of trained weights come in near-degenerate groups, and a float32
    eigensolver rotates those groups enough to flip the rule's decisions, while this
    route matches the float64 SVD's decisions at about the cost of a float32 SVD.
    U = W V / sigma then costs one float32 product (float64 when W is ill-conditioned;
    LAPACK's SVD when W is rank-deficient and the division is undefined).
    Signs are normalised so the result does not depend on the solver's choices.
    """
    if not exact:
        W64 = W.double()
        G = W64.T @ W64
        del W64  # a float64 copy of an FFN weight is 110 MB; the rare paths below make it again
        lam, V64 = _eigh(G)
        del G
        lam, V64 = lam.flip(0), V64.flip(1)
        s64 = lam.clamp_min(0).sqrt()
        if s64[-1] > 1e-3 * s64[0]:
            sigma, V = s64.to(W.dtype), V64.to(W.dtype)
            return _fix_signs((W @ V) / sigma, sigma, V)
        if s64[-1] > 1e-10 * s64[0]:  # ill-conditioned: divide in float64
            return _fix_signs(((W.double() @ V64) / s64).to(W.dtype), s64.to(W.dtype), V64.to(W.dtype))
        # (numerically) rank-deficient: U is undefined by division
        U, sigma, Vh = torch.linalg.svd(W.double(), full_matrices=False)
        return _fix_signs(U.to(W.dtype), sigma.to(W.dtype), Vh.T.to(W.dtype))
    U, sigma, Vh = torch.linalg.svd(W, full_matrices=False)
    return _fix_signs(U, sigma, Vh.T)


def _eigh(G: torch.Tensor):
    """Symmetric eigendecomposition, ascending. On the CPU scipy's divide-and-conquer driver
    was measured 1.6x faster than torch's on 1536 x 1536 float64 Gram matrices."""
    if G.device.type != "cpu":
        return torch.linalg.eigh(G)
    from scipy.linalg import eigh

    lam, V = eigh(G.numpy(), driver="evd", check_finite=False, overwrite_a=True)
    return torch.from_numpy(lam), torch.from_numpy(V)


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
    """Exact quantile with linear interpolation (numpy's 'linear'), any size.

    On the CPU a selection (numpy's partition, linear time) finds the two order
    statistics; on a GPU a sort is fast enough.
    """
    x = x.flatten()
    n = x.numel()
    pos = q * (n - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    if x.device.type == "cpu":
        arr = x.double().numpy()
        part = np.partition(arr, (lo, hi)) if n > 1 else arr
        a, b = float(part[lo]), float(part[hi])
    else:
        vals = torch.sort(x.double()).values
        a, b = float(vals[lo]), float(vals[hi])
    return a + frac * (b - a)
