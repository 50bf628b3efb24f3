"""Which step of the rule an ablation replaces (docs/method.md, "Other methods").

Its own module, free of torch, so that the method registry (and ``casa --version``, ``casa methods``)
can name the ablations without importing the numerics.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ablation:
    """The steps of the rule an ablation replaces; all False: CASA itself."""
    singleton_clusters: bool = False   # step 4: every top index a cluster of its own
    uniform: bool = False              # step 6: the whole grid dominant
    no_capping: bool = False           # step 8: nothing capped


RULE = Ablation()
