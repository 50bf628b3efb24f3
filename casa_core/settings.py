"""Typed settings that cross the core's boundary (CLI, GUI, report)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from . import dtypes, formats
from .errors import CasaError

METHODS = ("casa", "direct")
PRECISIONS = ("auto", "float32", "float64")
FORMATS = ("same", *formats.WRITERS)
DTYPES = ("same", *dtypes.OUTPUTS)


@dataclass(frozen=True)
class TransferSettings:
    """The rule's thresholds; a per-layer override is the same object."""
    method: str = "casa"
    tau: float = 0.5
    q_dom: float = 0.5
    q_act: float = 0.85
    energy: float = 0.90

    def validate(self) -> TransferSettings:
        if self.method not in METHODS:
            raise CasaError(f"unknown method {self.method!r}", f"use one of {', '.join(METHODS)}")
        if not (math.isfinite(self.tau) and self.tau >= 0):
            raise CasaError(f"tau must be a number >= 0, got {self.tau}", "e.g. --tau 0.5")
        for name in ("q_dom", "q_act", "energy"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise CasaError(f"{name} must lie in [0, 1], got {v}", f"e.g. --{name.replace('_', '-')} 0.5")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> TransferSettings:
        return replace(self, **changes).validate()


@dataclass(frozen=True)
class RunOptions:
    """How a conversion runs and what it writes (not part of the rule itself)."""
    rank: int | str | None = None          # None: the input's rank; "full": exact
    device: str = "auto"
    precision: str = "auto"
    out_format: str = "same"
    out_dtype: str = "same"
    layers: str | None = None              # regex on canonical module names
    spectra: bool = False                  # also compute target / base+LoRA singular values
    view_size: int = 128                   # routing views are max-abs pooled to at most this
    workers: int | None = None             # CPU: layers computed side by side (None: 2 with 2+ cores)
    overrides: dict = field(default_factory=dict)   # canonical module -> TransferSettings

    def validate(self) -> RunOptions:
        if self.precision not in PRECISIONS:
            raise CasaError(f"unknown precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.out_format not in FORMATS:
            raise CasaError(f"unknown format {self.out_format!r}", f"use one of {', '.join(FORMATS)}")
        if self.out_dtype not in DTYPES:
            raise CasaError(f"unknown dtype {self.out_dtype!r}", f"use one of {', '.join(DTYPES)}")
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers > 0):
            raise CasaError(f"workers must be a positive whole number, got {self.workers!r}", "e.g. --workers 2")
        if self.rank is not None and self.rank != "full" and not (isinstance(self.rank, int) and self.rank > 0):
            raise CasaError(f"rank must be a positive whole number or 'full', got {self.rank!r}", "e.g. --rank 32")
        return self


def parse_rank(text: str | None):
    """CLI/GUI text -> rank option (None, 'full' or a positive int)."""
    if text is None or text == "" or text == "same":
        return None
    if text == "full":
        return "full"
    try:
        r = int(text)
    except ValueError:
        raise CasaError(f"rank must be a positive whole number or 'full', got {text!r}", "e.g. --rank 32") from None
    if r <= 0:
        raise CasaError(f"rank must be positive, got {r}", "e.g. --rank 32")
    return r
