"""The run report: the plan, every layer's figures, totals and the machine, typed, written as JSON."""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import dataclass, field

from . import __version__


@dataclass(frozen=True)
class Totals:
    layers: int
    seconds: float | None
    min_energy_kept: float | None
    mean_energy_kept: float | None
    capped: int
    write_seconds: float | None = None

    def to_dict(self) -> dict:
        out = {"layers": self.layers, "seconds": self.seconds, "min_energy_kept": self.min_energy_kept,
               "mean_energy_kept": self.mean_energy_kept, "capped": self.capped}
        if self.write_seconds is not None:
            out["write_seconds"] = self.write_seconds
        return out


@dataclass(frozen=True)
class Machine:
    python: str
    platform: str
    compute: dict                    # torch, CPU workers and threads (compute.Compute.describe)
    solvers: dict                    # the eigensolver or SVD that ran -> number of layers

    def to_dict(self) -> dict:
        out = {"python": self.python, "platform": self.platform, **self.compute}
        if self.solvers:
            out["eigensolver"] = (next(iter(self.solvers)) if len(self.solvers) == 1 else
                                  ", ".join(f"{s} ({n} layers)" for s, n in self.solvers.items()))
        return out


@dataclass(frozen=True)
class RunReport:
    """Everything a run did, as the JSON file ``--report`` writes (``to_dict``)."""
    settings: object                 # TransferSettings
    overrides: dict                  # canonical module -> TransferSettings
    options: object                  # RunOptions
    device: str
    inputs: dict                     # Plan.describe()
    layers: dict                     # canonical module -> LayerResult.figures()
    passed_through: list
    passthrough_keys: list
    totals: Totals
    machine: Machine
    output: object | None = None     # export.ExportInfo
    app: str = "casa-studio"
    version: str = __version__
    extra: dict = field(default_factory=dict)

    @classmethod
    def build(cls, plan, results, settings, options, compute, export=None, seconds: float | None = None,
              write_seconds: float | None = None) -> RunReport:
        results = list(results)
        energies = [r.energy_kept for r in results]
        capped = sum(r.diagnostics.figures().get("capped", 0) for r in results if r.diagnostics is not None)
        totals = Totals(len(results), seconds, min(energies) if energies else None,
                        sum(energies) / len(energies) if energies else None, capped, write_seconds)
        solvers = Counter(r.solver for r in results if r.solver)
        machine = Machine(platform.python_version(), platform.platform(), compute.describe(),
                          dict(solvers.most_common()))
        return cls(settings, dict(options.overrides or {}), options, str(compute.device), plan.describe(),
                   {r.name: r.figures() for r in results},
                   [{"prefix": p.prefix, "module": p.module, "reason": p.reason} for p in plan.passed],
                   plan.passthrough_keys, totals, machine, export)

    def to_dict(self) -> dict:
        o, out = self.options, self.output
        return {
            "app": self.app, "version": self.version,
            "settings": self.settings.to_dict(),
            "overrides": {k: v.to_dict() for k, v in self.overrides.items()},
            "options": {"rank": o.rank, "device": self.device, "precision": o.precision,
                        "format": o.out_format, "dtype": o.out_dtype, "layers": o.layers},
            "inputs": self.inputs | {"layers": None},
            "layers": self.layers,
            "passed_through": self.passed_through,
            "passthrough_keys": self.passthrough_keys,
            "totals": self.totals.to_dict(),
            "output": None if out is None else {"path": str(out.path), "bytes": out.bytes, "tensors": out.tensors,
                                                "format": out.format, "dropped_keys": list(out.dropped)},
            "machine": self.machine.to_dict(),
        }

    def write(self, path) -> None:
        """Write the JSON through a private temporary file beside ``path`` and a rename."""
        from .outputs import atomic_write

        blob = json.dumps(self.to_dict(), indent=1, sort_keys=False, default=str).encode()
        atomic_write(path, lambda fh: fh.write(blob), "report")
