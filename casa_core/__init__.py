"""CASA Studio core: transfer a LoRA from a base video diffusion model to a distilled one.

This package never imports Qt; importing it does not import torch either, so that
``casa --version`` and the GUI's start-up stay fast.
"""

__version__ = "0.1.0"

import os as _os

# MKL's OpenMP threads spin while waiting for each other by default; when anything else
# uses a core (the GUI, a browser, a second job) the many short parallel regions of an
# eigensolver then wait on descheduled threads, measured here as 20x slower on 2 cores.
# Passive waiting costs little when the machine is idle. Must be set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
