"""Dominance, risk and capping: the arbitration of steps 5-9 of the rule, and the paper's ablations of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .ablation import RULE, Ablation
from .clusters import cluster_labels
from .spectral import quantile


@dataclass
class Arbitration:
    """What the rule decided for one layer, in the p x p routing grid."""
    k: int
    n_clusters: int
    labels: np.ndarray          # (k,) cluster of each top index
    rowdom: torch.Tensor        # (p,) bool
    coldom: torch.Tensor        # (p,) bool
    capped: torch.Tensor        # (p, p) bool
    n_candidates: int
    threshold: float            # q_act quantile of the risk over candidates (nan if none)
    risk: torch.Tensor          # risk scores of the candidates (1-D)
    C_casa: torch.Tensor        # (p, p)


def arbitrate(C_lora: torch.Tensor, C_fft: torch.Tensor, sigma: torch.Tensor, k: int,
              s, ablation: Ablation = RULE) -> Arbitration:
    """Apply steps 4-9 to the routing matrices (in the tall orientation, p x p); ``s`` holds
    the thresholds the rule (or its ``ablation``) reads: tau, q_dom and q_act."""
    p = sigma.numel()
    dev = C_lora.device
    if ablation.uniform:
        # step 6 replaced: every row and column dominant (clusters still give step 7's context)
        n_c, labels, lab = clusters(C_lora[:k, :k], sigma[:k], s, ablation)
        rowdom = torch.ones(p, dtype=torch.bool, device=dev)
        coldom = torch.ones(p, dtype=torch.bool, device=dev)
    else:
        n_c, labels, lab, rowdom_top, coldom_top = dominance(C_lora[:k, :k], C_fft[:k, :k], sigma[:k], s, ablation)
        # step 6: whole dominant rows and columns
        rowdom = torch.zeros(p, dtype=torch.bool, device=dev)
        coldom = torch.zeros(p, dtype=torch.bool, device=dev)
        rowdom[:k] = rowdom_top
        coldom[:k] = coldom_top
    dom = rowdom[:, None] | coldom[None, :]

    # step 7: cluster-pair context (cosine of the two routings on each block)
    Cl_top, Cf_top = C_lora[:k, :k], C_fft[:k, :k]
    num = _block_sums(Cl_top * Cf_top, lab, n_c)
    nl = _block_sums(Cl_top * Cl_top, lab, n_c).sqrt()
    nf = _block_sums(Cf_top * Cf_top, lab, n_c).sqrt()
    cos = num / (nl * nf + 1e-8)
    risk_all = (C_lora * C_fft).abs()
    risk_all[:k, :k] *= cos[lab[:, None], lab[None, :]]

    # step 8: candidates and the q_act threshold
    cand = dom & (torch.sign(C_lora) == torch.sign(C_fft))
    # (numpy's boolean selection is 3x faster than torch's on the CPU)
    risk = torch.from_numpy(risk_all.numpy()[cand.numpy()]) if dev.type == "cpu" else risk_all[cand]
    if risk.numel() and not ablation.no_capping:
        t = quantile(risk, s.q_act)
        capped = cand & (risk_all > t)
    else:
        t = float("nan")
        capped = torch.zeros_like(cand)

    # step 9: arbitration
    larger = select(C_lora.abs() > C_fft.abs(), C_lora, C_fft)
    C_casa = select(capped, larger - C_fft, select(dom, C_lora, C_lora - C_fft))
    return Arbitration(k, n_c, labels, rowdom, coldom, capped, int(cand.sum()), t, risk, C_casa)


_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, a, b)`` for tensors of one shape and float dtype, bit for bit, by masking
    their bits: torch's CPU kernel branches per element, 8 ms on a 1536 x 1536 grid with a mask
    like the rule's against 1.4 ms for this."""
    bits = _BITS[a.element_size()]
    m = mask.to(bits).neg_()                    # all ones where mask, zeros elsewhere
    ai, bi = a.view(bits), b.view(bits)
    out = ai ^ bi
    out &= m
    out ^= bi
    return out.view(a.dtype)


def clusters(Cl_top: torch.Tensor, sigma_top: torch.Tensor, s, ablation: Ablation = RULE):
    """Step 4: (number of clusters, labels (numpy), labels (tensor)) of the top indices."""
    k = sigma_top.numel()
    if ablation.singleton_clusters:
        n_c, labels = k, np.arange(k, dtype=np.int64)
    else:
        n_c, labels = cluster_labels(Cl_top, sigma_top, s.tau)
    return n_c, labels, torch.from_numpy(labels).to(Cl_top.device)


def dominance(Cl_top: torch.Tensor, Cf_top: torch.Tensor, sigma_top: torch.Tensor, s, ablation: Ablation = RULE):
    """Steps 4-5 on the top k x k block: clusters and which of the top indices are dominant.

    Returns (number of clusters, labels (numpy), labels (tensor), receive-dominant rows,
    send-dominant columns), the last two as (k,) bool tensors.
    """
    k = sigma_top.numel()
    n_c, labels, lab = clusters(Cl_top, sigma_top, s, ablation)
    size = torch.zeros(n_c, dtype=Cl_top.dtype, device=Cl_top.device).index_add_(
        0, lab, torch.ones(k, dtype=Cl_top.dtype, device=Cl_top.device))
    # per-cluster mean receive / send strength of the drift
    recv = _per_cluster(Cf_top.norm(dim=1), lab, n_c) / (size + 1e-6)
    send = _per_cluster(Cf_top.norm(dim=0), lab, n_c) / (size + 1e-6)
    recv_dom = recv >= quantile(recv, s.q_dom)
    send_dom = send >= quantile(send, s.q_dom)
    return n_c, labels, lab, recv_dom[lab], send_dom[lab]


def _per_cluster(x: torch.Tensor, lab: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, lab, x)


def _block_sums(M: torch.Tensor, lab: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of M over each (cluster a rows, cluster b columns) block: n x n."""
    rows = torch.zeros(n, M.shape[1], dtype=M.dtype, device=M.device).index_add_(0, lab, M)
    return torch.zeros(n, n, dtype=M.dtype, device=M.device).index_add_(1, lab, rows)
