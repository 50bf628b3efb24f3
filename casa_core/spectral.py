"""The base weight's thin singular basis and the routing matrices in it."""

from __future__ import annotations

import numpy as np
import torch


def thin_svd(W: torch.Tensor, exact: bool, left: bool = True):
    """Thin SVD of a tall ``m x n`` (m >= n) matrix: U (m x n), sigma (n, descending), V (n x n).

    ``exact`` uses LAPACK's SVD in W's dtype. Otherwise V and sigma come from the
    eigendecomposition of the ``n x n`` Gram matrix, formed and solved in float64 (on the
    CPU the final orthogonal back-transformation of V runs in float32, see ``lapack``):
    singular values of trained weights come in near-degenerate groups, and a float32
    eigensolver rotates those groups enough to flip the rule's decisions (measured:
    8e-2 to 2.3e-1 away from float64 on the benchmark layers, even with the top 128
    directions deflated), while this route matches the float64 SVD's decisions.
    U = W V / sigma then costs one float32 product (float64 when W is ill-conditioned;
    LAPACK's SVD when W is rank-deficient and the division is undefined). With
    ``left=False`` a well-conditioned W gives U = None: the caller applies U as
    ``W @ (V / sigma)`` and never forms it (for tall layers that saves an m x n x n product).
    Signs are normalised so the result does not depend on the solver's choices. The fourth
    value names the solver that ran, for the run report.
    """
    if not exact:
        G = gram64(W)
        lam, V, solver = _eigh(G, vectors32=W.dtype == torch.float32)
        lam, V = lam.flip(0), V.flip(1)
        s64 = lam.clamp_min(0).sqrt()
        if s64[-1] > 1e-3 * s64[0]:
            sigma, V = s64.to(W.dtype), _fix_signs(V.to(W.dtype))
            return ((W @ V) / sigma if left else None), sigma, V, solver
        if V.dtype != torch.float64:  # the rare paths below need the float64 vectors
            _, V, solver = _eigh(G)
            V = V.flip(1)
        V64 = _fix_signs(V)
        if s64[-1] > 1e-10 * s64[0]:  # ill-conditioned: divide in float64
            return ((W.double() @ V64) / s64).to(W.dtype), s64.to(W.dtype), V64.to(W.dtype), solver
        # (numerically) rank-deficient: U is undefined by division
        U, sigma, Vh = torch.linalg.svd(W.double(), full_matrices=False)
        return (*_signed(U.to(W.dtype), sigma.to(W.dtype), Vh.T.to(W.dtype)), SVD64)
    U, sigma, Vh = torch.linalg.svd(W, full_matrices=False)
    return (*_signed(U, sigma, Vh.T), f"torch.linalg.svd ({str(W.dtype).removeprefix('torch.')})")


def gram64(W: torch.Tensor) -> torch.Tensor:
    """W^T W in float64, for a tall W.

    On the CPU numpy's product recognises ``c.T @ c`` and calls BLAS's symmetric rank-k
    update (half the work of a general product: 0.36 s against torch's 0.66 s for an
    8960 x 1536 weight on one core, measured) without holding the GIL; W is converted to
    float64 a block of rows at a time (at most 32 MB), never whole (110 MB for an FFN weight).
    """
    if W.device.type != "cpu":
        W64 = W.double()
        return W64.T @ W64
    m, n = W.shape
    step = max(1, (1 << 22) // max(n, 1))
    G = None
    for i in range(0, m, step):
        c = W[i:i + step].to(torch.float64, memory_format=torch.contiguous_format).numpy()
        g = np.dot(c.T, c)
        G = g if G is None else np.add(G, g, out=G)
    return torch.from_numpy(G)


SPLIT_EIGH = "LAPACKE dsytrd+dstedc (float64), sormtr (float32)"
NUMPY_EIGH = "numpy.linalg.eigh (float64)"
TORCH_EIGH = "torch.linalg.eigh (float64)"
SVD64 = "torch.linalg.svd (float64)"


def _eigh(G: torch.Tensor, vectors32: bool = False):
    """Symmetric eigendecomposition, ascending, eigenvalues in float64; and the solver's name.

    On the CPU with ``vectors32`` the eigenvectors come in float32 from ``lapack.eigh``
    (tridiagonal problem in float64, back-transformation in float32: 0.32 s against 0.44 s
    on one core); otherwise numpy's LAPACK driver. Both release the GIL, so two layers can
    be solved side by side.
    """
    if G.device.type != "cpu":
        return (*torch.linalg.eigh(G), TORCH_EIGH)
    from . import lapack

    if vectors32 and lapack.eigh is not None:
        out = lapack.eigh(G.numpy())
        if out is not None:
            return torch.from_numpy(out[0]), torch.from_numpy(out[1]), SPLIT_EIGH
    lam, V = np.linalg.eigh(G.numpy())
    return torch.from_numpy(lam), torch.from_numpy(V), NUMPY_EIGH


def _signed(U, sigma, V):
    s = _sign_flips(V)
    return U * s, sigma, V * s


def _sign_flips(V):
    # make the largest-magnitude entry of each right singular vector positive
    idx = V.abs().argmax(dim=0)
    s = torch.sign(V[idx, torch.arange(V.shape[1], device=V.device)])
    s[s == 0] = 1
    return s


def _fix_signs(V):
    return V * _sign_flips(V)


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
