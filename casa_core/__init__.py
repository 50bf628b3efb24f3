"""CASA Studio core: transfer a LoRA from a base video diffusion model to a distilled one.

This package never imports Qt; importing it does not import torch either, so that
``casa --version`` and the GUI's start-up stay fast.
"""

__version__ = "0.1.0"
