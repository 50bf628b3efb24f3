"""Typed settings that cross the core's boundary (CLI, GUI, report)."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import dtypes, formats, methods, ranks
from .errors import CasaError
from .methods.base import MethodParams, with_values
from .ranks import AutoRank
from .spectral_cache import DEFAULT_LIMIT_GB, check_limit

PRECISIONS = ("auto", "float32", "float64")
FORMATS = ("same", *formats.WRITERS)
DTYPES = ("same", *dtypes.OUTPUTS)


@dataclass(frozen=True)
class TransferSettings:
    """A method and its parameters; a per-layer override is the same object.

    ``TransferSettings()`` is CASA with its defaults; ``TransferSettings.of("casa", tau=0.3)``
    changes some; ``params`` is the method's own typed parameters class.
    """
    method: str = methods.DEFAULT
    params: MethodParams | None = None     # None: the method's defaults

    def __post_init__(self):
        if self.params is None:
            object.__setattr__(self, "params", methods.get(self.method).Params())

    @classmethod
    def of(cls, method: str = methods.DEFAULT, **values) -> TransferSettings:
        """Settings for ``method``, the given parameters changed from its defaults (validated)."""
        return cls(method, with_values(methods.get(method).Params(), **values))

    @classmethod
    def from_dict(cls, data: dict) -> TransferSettings:
        """The inverse of ``to_dict``."""
        data = dict(data)
        return cls.of(data.pop("method", methods.DEFAULT), **data)

    def validate(self) -> TransferSettings:
        method = methods.get(self.method)
        if not isinstance(self.params, method.Params):
            raise CasaError(f"the parameters given are not those of method {self.method}",
                            "build the settings with TransferSettings.of", setting="method")
        self.params.validate()
        return self

    def to_dict(self) -> dict:
        return {"method": self.method, **self.params.to_dict()}

    def with_(self, **changes) -> TransferSettings:
        """Other parameter values (or another ``method``: its defaults, then the changes that apply)."""
        method = changes.pop("method", self.method)
        if method != self.method:
            own = {p.name for p in methods.get(method).Params.describe()}
            kept = {k: v for k, v in self.params.to_dict().items() if k in own}
            return TransferSettings.of(method, **(kept | changes))
        return TransferSettings(method, with_values(self.params, **changes))


@dataclass(frozen=True)
class RunOptions:
    """How a conversion runs and what it writes (not part of the rule itself)."""
    rank: int | str | AutoRank | None = None   # None: the input's rank; "full": exact; AutoRank: per layer
    device: str = "auto"
    precision: str = "auto"
    out_format: str = "same"
    out_dtype: str = "same"
    layers: str | None = None              # regex on canonical module names
    spectra: bool = False                  # also compute target / base+LoRA singular values
    view_size: int = 128                   # routing views are max-abs pooled to at most this
    workers: int | None = None             # CPU: layers computed side by side (None: 2 with 2+ cores)
    overrides: dict = field(default_factory=dict)   # canonical module -> TransferSettings
    provenance_paths: bool = False         # also record the inputs' absolute local paths in the output
    cache: str | None = None               # a folder keeping the base's bases between runs (spectral_cache)
    cache_limit_gb: float | None = DEFAULT_LIMIT_GB    # the most it may hold (None: no limit)

    def validate(self) -> RunOptions:
        if self.precision not in PRECISIONS:
            raise CasaError(f"unknown precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}",
                            setting="precision")
        if self.out_format not in FORMATS:
            raise CasaError(f"unknown format {self.out_format!r}", f"use one of {', '.join(FORMATS)}",
                            setting="format")
        if self.out_dtype not in DTYPES:
            raise CasaError(f"unknown dtype {self.out_dtype!r}", f"use one of {', '.join(DTYPES)}",
                            setting="dtype")
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers > 0):
            raise CasaError(f"workers must be a positive whole number, got {self.workers!r}", "e.g. 2",
                            setting="workers", example="2")
        check_limit(self.cache_limit_gb)
        if isinstance(self.rank, AutoRank):
            self.rank.validate()
        elif self.rank is not None and self.rank != "full" and not (isinstance(self.rank, int) and self.rank > 0):
            raise CasaError(f"rank must be a positive whole number or 'full', got {self.rank!r}", "e.g. 32",
                            setting="rank", example="32")
        return self


def parse_rank(text: str | None, max_rank: int | None = None):
    """CLI/GUI text -> rank option (None, 'full', a positive int, or ``AutoRank`` for ``auto[:FRACTION]``);
    ``max_rank`` caps an auto rank (and applies to nothing else)."""
    auto = ranks.parse(text) if text else None
    if auto is not None:
        return AutoRank(auto.fraction, max_rank).validate()
    if max_rank is not None:
        raise CasaError("a maximum rank applies only to the auto rank", "give the rank as auto or auto:0.9",
                        setting="max_rank", example=str(max_rank))
    if text is None or text == "" or text == "same":
        return None
    if text == "full":
        return "full"
    try:
        r = int(text)
    except ValueError:
        raise CasaError(f"rank must be a positive whole number, 'full' or 'auto[:FRACTION]', got {text!r}",
                        "e.g. 32", setting="rank", example="32") from None
    if r <= 0:
        raise CasaError(f"rank must be positive, got {r}", "e.g. 32", setting="rank", example="32")
    return r
