"""Groups of top singular directions that the LoRA couples (step 4 of the rule)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def cluster_labels(C_lora_top: torch.Tensor, sigma_top: torch.Tensor, tau: float) -> tuple[int, np.ndarray]:
    """Connected components of the graph linking i and j when R_ij > tau or R_ji > tau.

    ``R_ij = |C_lora_ij| / (|sigma_i - sigma_j| + 1e-6)`` with ``R_ii = 0``.
    Returns (number of clusters, label per index, labels numbered by first index).
    """
    k = sigma_top.numel()
    gap = (sigma_top[:, None] - sigma_top[None, :]).abs() + 1e-6
    R = C_lora_top.abs() / gap
    R.fill_diagonal_(0)
    linked = (R > tau) | (R.T > tau)
    ii, jj = torch.nonzero(linked, as_tuple=True)
    graph = coo_matrix((np.ones(ii.numel(), dtype=np.int8), (ii.cpu().numpy(), jj.cpu().numpy())), shape=(k, k))
    n, labels = connected_components(graph, directed=False)
    return int(n), labels.astype(np.int64)
