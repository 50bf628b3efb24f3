"""Figures that need the weights but no SVD (for ``casa inspect`` and the GUI's table)."""

from __future__ import annotations


def layer_drift(plan, lp) -> float:
    """Relative distillation drift ||W_t - W_s|| / ||W_s|| of one planned layer."""
    key = f"{lp.module}.weight"
    ws = plan.base.read(key).double()
    wt = plan.target.read(key).double()
    n = float(ws.norm())
    return float((wt - ws).norm()) / n if n > 0 else 0.0
