"""The registry of transfer methods: ``casa`` (the rule), ``direct`` (the baseline), ``restore``, the
paper's ablations (``casa-no-clusters``, ``casa-uniform``, ``casa-no-capping``), ``projection``, and any added.

Adding a method is one new module that defines it (see ``methods.base``) and one
``register`` call below; the CLI, the GUI and the report find it here.
"""

from __future__ import annotations

from ..errors import CasaError
from .base import LayerInput, MethodParams, ParamInfo, TransferMethod, param

_REGISTRY: dict[str, TransferMethod] = {}
DEFAULT = "casa"      # the method a conversion uses unless told otherwise


def register(method: TransferMethod) -> TransferMethod:
    """Add a method (its ``name`` must be new)."""
    if method.name in _REGISTRY:
        raise ValueError(f"a method named {method.name!r} is registered already")
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> TransferMethod:
    """The registered method of that name; a one-line error for an unknown one."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CasaError(f"unknown method {name!r}", f"use one of {', '.join(_REGISTRY)}", setting="method") from None


def names() -> tuple[str, ...]:
    """Registered method names, the default first."""
    return tuple(_REGISTRY)


def available() -> tuple[TransferMethod, ...]:
    return tuple(_REGISTRY.values())


def all_params() -> dict[str, ParamInfo]:
    """Every parameter any method takes, by name (the first method to declare one describes it)."""
    out: dict[str, ParamInfo] = {}
    for m in _REGISTRY.values():
        for info in m.Params.describe():
            out.setdefault(info.name, info)
    return out


def _register_builtin() -> None:
    from .ablations import NoCappingMethod, NoClustersMethod, UniformMethod
    from .casa import CasaMethod
    from .direct import DirectMethod
    from .projection import ProjectionMethod
    from .restore import RestoreMethod

    for method in (CasaMethod, DirectMethod, RestoreMethod, NoClustersMethod, UniformMethod, NoCappingMethod,
                   ProjectionMethod):
        register(method())


_register_builtin()

__all__ = ["DEFAULT", "LayerInput", "MethodParams", "ParamInfo", "TransferMethod", "available", "get", "names", "param",
           "register", "all_params"]
