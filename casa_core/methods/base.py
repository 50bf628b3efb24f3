"""The seam every transfer method plugs into: typed parameters, per-layer analyse / conclude.

A method is an object with a ``name``, a one-line ``title``, a ``Params`` dataclass (its
typed parameters, each with help text and bounds in its field metadata), and two steps per
layer: ``analyse`` (the expensive part, kept by the GUI so that a layer can be concluded
again with other parameters) and ``conclude`` (parameters applied, factors written). The
CLI's flags, the GUI's fields and the report are all made from this description.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields, replace
from dataclasses import field as _field
from typing import Any, ClassVar, Protocol

from ..errors import CasaError


def param(default: float, help: str, *, minimum: float | None = None, maximum: float | None = None,
          step: float = 0.05, label: str | None = None):
    """A method parameter: a dataclass field with its help text, bounds and (for forms) a label."""
    return _field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum, "step": step,
                                             "label": label})


@dataclass(frozen=True)
class ParamInfo:
    """What the CLI and the GUI need to offer one parameter."""
    name: str
    default: float
    help: str
    minimum: float | None
    maximum: float | None
    step: float
    label: str

    def text(self, value) -> str:
        """``label value`` for compact lists (an override's parameters)."""
        return f"{self.label} {value:g}"

    def check(self, value: Any) -> None:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.minimum is not None and value < self.minimum:
            ok = False
        if ok and self.maximum is not None and value > self.maximum:
            ok = False
        if ok:
            return
        if self.maximum is None:
            what = f"{self.name} must be a number >= {self.minimum:g}, got {value}"
        else:
            what = f"{self.name} must lie in [{self.minimum:g}, {self.maximum:g}], got {value}"
        raise CasaError(what, f"e.g. {self.default:g}", setting=self.name, example=f"{self.default:g}")


@dataclass(frozen=True)
class MethodParams:
    """Base of a method's parameters (a frozen dataclass of numbers)."""

    @classmethod
    def describe(cls) -> tuple[ParamInfo, ...]:
        out = []
        for f in fields(cls):
            meta = f.metadata
            default = f.default if f.default is not MISSING else None
            out.append(ParamInfo(f.name, default, meta.get("help", ""), meta.get("minimum"),
                                 meta.get("maximum"), meta.get("step", 0.05), meta.get("label") or f.name))
        return tuple(out)

    def validate(self):
        for info in self.describe():
            info.check(getattr(self, info.name))
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class Diagnostics(Protocol):
    """A method's typed per-layer figures."""

    def figures(self) -> dict:
        """Its entries in the run report's per-layer figures."""

    def summary(self) -> str:
        """A few figures for one progress line."""


class TransferMethod(Protocol):
    """One way of moving a LoRA onto the target (see the module docstring)."""

    name: ClassVar[str]
    title: ClassVar[str]              # one line for `casa methods` and --help
    label: ClassVar[str]              # a short name for the GUI's method list
    Params: ClassVar[type[MethodParams]]
    uses_models: ClassVar[bool]       # whether ``analyse`` needs the base and target (a PairState)

    def analyse(self, layer, pair, params: MethodParams | None, *, spectra: bool = False) -> Any:
        """The expensive part for one layer. ``layer``: the LoRA's layer (``LayerInput``);
        ``pair``: the ``PairState`` when ``uses_models``, else None; ``params``: when given,
        the analysis may compute only what these parameters read; None: valid for any."""

    def conclude(self, analysis, settings, rank: int | str | None, view_size: int | None) -> Any:
        """Parameters applied: a ``LayerResult`` with rank-``rank`` factors."""


@dataclass(frozen=True)
class LayerInput:
    """One LoRA layer as the file holds it: up (out x r), down (r x in), its scale."""
    name: str
    B: Any
    A: Any
    scale: float

    @property
    def rank(self) -> int:
        return self.B.shape[1] if self.B.dim() > 1 else 1


def with_values(params: MethodParams, **changes) -> MethodParams:
    """A copy with some parameters changed (unknown names refused), validated."""
    known = {f.name for f in fields(params)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise CasaError(f"parameter {unknown[0]} does not apply to this method",
                        f"its parameters are: {', '.join(sorted(known)) or 'none'}", setting=unknown[0])
    return replace(params, **changes).validate()
