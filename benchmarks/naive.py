"""A straightforward implementation of the CASA rule, for the benchmark's baseline.

What the authors' pipeline does per layer: a full SVD with square factors, dense
routing matrices over the whole m x n grid, dense products back to weights, and a
full SVD of the result for the rank-r factors. Same rule as casa_core (it matches
the golden cases in float64); only the cost differs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components


def naive_update(Ws, Wt, B, A, scale, tau=0.5, q_dom=0.5, q_act=0.85, energy=0.90, rank=None,
                 dtype=torch.float32, singleton_clusters=False, uniform=False, no_capping=False):
    """Dense D_casa (and its rank-``rank`` approximation when rank is given) for one layer; the flags
    are the paper's ablations (docs/method.md, "Other methods"), each replacing one step."""
    Ws, Wt, B, A = (x.to(dtype) for x in (Ws, Wt, B, A))
    m, n = Ws.shape
    p = min(m, n)
    U, S, Vh = torch.linalg.svd(Ws, full_matrices=True)
    V = Vh.T
    D_lora = scale * B @ A
    D_fft = Wt - Ws
    Cl = U.T @ D_lora @ V
    Cf = U.T @ D_fft @ V
    if m == n:
        cum = torch.cumsum(S.double() ** 2, 0) / (S.double() ** 2).sum()
        k = int((cum < energy).sum()) + 1
    else:
        k = p
    R = Cl[:k, :k].abs() / ((S[:k, None] - S[None, :k]).abs() + 1e-6)
    R.fill_diagonal_(0)
    n_c, lab = connected_components(((R > tau) | (R.T > tau)).cpu().numpy(), directed=False)
    if singleton_clusters:
        n_c, lab = k, np.arange(k)
    lab = torch.from_numpy(lab.astype(np.int64)).to(Ws.device)
    onehot = torch.nn.functional.one_hot(lab, n_c).to(dtype)
    size = onehot.sum(0)
    recv = (Cf[:k, :k].norm(dim=1) @ onehot) / (size + 1e-6)
    send = (Cf[:k, :k].norm(dim=0) @ onehot) / (size + 1e-6)
    rowdom = torch.zeros(m, dtype=torch.bool, device=Ws.device)
    coldom = torch.zeros(n, dtype=torch.bool, device=Ws.device)
    rowdom[:k] = (recv >= torch.quantile(recv, q_dom))[lab]
    coldom[:k] = (send >= torch.quantile(send, q_dom))[lab]
    dom = rowdom[:, None] | coldom[None, :]
    if uniform:
        dom = torch.ones(m, n, dtype=torch.bool, device=Ws.device)
    num = onehot.T @ (Cl[:k, :k] * Cf[:k, :k]) @ onehot
    nl = (onehot.T @ Cl[:k, :k] ** 2 @ onehot).sqrt()
    nf = (onehot.T @ Cf[:k, :k] ** 2 @ onehot).sqrt()
    ctx = torch.ones(m, n, dtype=dtype, device=Ws.device)
    ctx[:k, :k] = (num / (nl * nf + 1e-8))[lab[:, None], lab[None, :]]
    risk = (Cl * Cf).abs() * ctx
    inside = torch.zeros(m, n, dtype=torch.bool, device=Ws.device)
    inside[:p, :p] = True
    cand = dom & (torch.sign(Cl) == torch.sign(Cf)) & inside
    vals = risk[cand]
    if vals.numel() == 0 or no_capping:
        capped = torch.zeros_like(cand)
    else:
        if vals.numel() > 16_000_000:  # torch.quantile's size limit
            t = float(np.quantile(vals.double().cpu().numpy(), q_act))
        else:
            t = float(torch.quantile(vals.double(), q_act))
        capped = cand & (risk > t)
    larger = torch.where(Cl.abs() > Cf.abs(), Cl, Cf)
    Cc = torch.where(capped, larger - Cf, torch.where(dom, Cl, Cl - Cf))
    D = U @ Cc @ V.T
    if rank is None:
        return D
    Ud, Sd, Vhd = torch.linalg.svd(D, full_matrices=False)
    return D, (Ud[:, :rank] * Sd[:rank]) @ Vhd[:rank]
