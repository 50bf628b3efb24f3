"""The paper's ablations of CASA: the rule with one step replaced (docs/method.md, "Other methods").

Each is ``CasaMethod`` with an ``ablation.Ablation`` naming the step, and the parameters it
still reads: the rule's code runs unchanged everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ablation import Ablation
from .base import MethodParams
from .casa import CasaMethod, energy_param, q_act_param, q_dom_param, tau_param


@dataclass(frozen=True)
class NoClustersParams(MethodParams):
    q_dom: float = q_dom_param()
    q_act: float = q_act_param()
    energy: float = energy_param()


@dataclass(frozen=True)
class UniformParams(MethodParams):
    tau: float = tau_param()
    q_act: float = q_act_param()
    energy: float = energy_param()


@dataclass(frozen=True)
class NoCappingParams(MethodParams):
    tau: float = tau_param()
    q_dom: float = q_dom_param()
    energy: float = energy_param()


class NoClustersMethod(CasaMethod):
    name = "casa-no-clusters"
    title = "ablation: CASA with every top direction a cluster of its own (step 4 skipped)"
    label = "CASA without clusters (ablation)"
    Params = NoClustersParams
    ablation = Ablation(singleton_clusters=True)


class UniformMethod(CasaMethod):
    name = "casa-uniform"
    title = "ablation: CASA with the whole grid dominant, no dominant identification (step 6 skipped)"
    label = "CASA, uniform dominance (ablation)"
    Params = UniformParams
    ablation = Ablation(uniform=True)


class NoCappingMethod(CasaMethod):
    name = "casa-no-capping"
    title = "ablation: CASA with nothing capped, no arbitration (step 8 skipped)"
    label = "CASA without capping (ablation)"
    Params = NoCappingParams
    ablation = Ablation(no_capping=True)
