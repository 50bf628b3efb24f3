"""Bounded-size pictures of a layer's routing, made in the worker, drawn by the GUI."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def pool_maxabs(M: torch.Tensor, max_size: int) -> tuple[np.ndarray, int]:
    """Pool a matrix by blocks, keeping each block's entry of largest magnitude (with its sign).

    Returns (pooled float32 array, block edge in entries) so axes can show real indices.
    """
    h, w = M.shape
    step = max(1, -(-max(h, w) // max_size))
    if step == 1:
        return M.detach().float().cpu().numpy().copy(), 1
    H, W = -(-h // step), -(-w // step)
    padded = torch.zeros(H * step, W * step, dtype=M.dtype, device=M.device)
    padded[:h, :w] = M
    blocks = padded.reshape(H, step, W, step).permute(0, 2, 1, 3).reshape(H, W, step * step)
    idx = blocks.abs().argmax(dim=-1, keepdim=True)
    return blocks.gather(-1, idx).squeeze(-1).float().cpu().numpy(), step


def pool_mean(M: torch.Tensor, max_size: int) -> np.ndarray:
    """Pool a (boolean) mask by block means: the share of set entries per block."""
    h, w = M.shape
    step = max(1, -(-max(h, w) // max_size))
    H, W = -(-h // step), -(-w // step)
    padded = torch.zeros(H * step, W * step, dtype=torch.float32, device=M.device)
    padded[:h, :w] = M.float()
    return padded.reshape(H, step, W, step).mean(dim=(1, 3)).cpu().numpy()


@dataclass
class RoutingView:
    """One region of the routing grid (full, top-k, or top-k ordered by cluster)."""
    step: int                 # entries per pixel along each axis
    c_lora: np.ndarray
    c_fft: np.ndarray
    c_casa: np.ndarray
    capped: np.ndarray        # share of capped entries per pixel
    index: np.ndarray | None = None   # real row/column index of each entry (cluster order)


@dataclass
class LayerViews:
    """Everything the GUI draws for one layer, in the weight's own orientation."""
    sigma_base: np.ndarray
    sigma_target: np.ndarray | None
    sigma_merged: np.ndarray | None
    k: int
    labels: np.ndarray        # (k,) cluster per top index
    rowdom: np.ndarray        # (p,) bool
    coldom: np.ndarray        # (p,) bool
    full: RoutingView
    top: RoutingView
    clustered: RoutingView
    risk_counts: np.ndarray   # histogram of log10 risk over candidates
    risk_edges: np.ndarray
    threshold: float


def routing_view(Cl, Cf, Cc, capped, max_size, index=None) -> RoutingView:
    a, step = pool_maxabs(Cl, max_size)
    return RoutingView(step, a, pool_maxabs(Cf, max_size)[0], pool_maxabs(Cc, max_size)[0],
                       pool_mean(capped, max_size), index)


def risk_histogram(risk: torch.Tensor, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of log10 risk scores (zeros dropped)."""
    r = risk[risk > 0].double().cpu().numpy()
    if r.size == 0:
        return np.zeros(0), np.zeros(1)
    counts, edges = np.histogram(np.log10(r), bins=bins)
    return counts, edges


def update_routing(pair, up: torch.Tensor, down: torch.Tensor, max_size: int) -> tuple[np.ndarray, int]:
    """What written factors (``up`` out x r, ``down`` r x in) apply, in the base's singular basis
    (U^T D V, rows = outputs), max-abs pooled: any method's update, drawn the way C_casa is, so
    that two methods can be set side by side. Costs p x p x r, no dense m x n matrix."""
    dt = pair.sigma.dtype
    up, down = up.to(pair.sigma.device, dt), down.to(pair.sigma.device, dt)
    if pair.transposed:                       # the pair works on the transpose: D^T = down^T up^T
        up, down = down.T, up.T
    C = pair.left_t(up) @ (down @ pair.V)
    return pool_maxabs(C.T if pair.transposed else C, max_size)
