"""The run report: the plan, every layer's figures, totals and the machine, typed, written as JSON."""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import dataclass, field

from . import __version__
from .distillation import StackedTarget


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
    model: dict = field(default_factory=dict)    # model-wide figures (``model_figures``)
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
        # a target of distillation LoRAs: what the output is meant to be loaded with
        stack = ({"stack_with": plan.target.stack_with(), "usage": plan.target.usage()}
                 if isinstance(plan.target, StackedTarget) else {})
        return cls(settings, dict(options.overrides or {}), options, str(compute.device), plan.describe(),
                   {r.name: r.figures() for r in results},
                   [{"prefix": p.prefix, "module": p.module, "reason": p.reason} for p in plan.passed],
                   plan.passthrough_keys, totals, machine, export, model_figures(results), extra=stack)

    def to_dict(self) -> dict:
        o, out = self.options, self.output
        return {
            "app": self.app, "version": self.version,
            "settings": self.settings.to_dict(),
            "overrides": {k: v.to_dict() for k, v in self.overrides.items()},
            "options": {"rank": o.rank if o.rank is None or isinstance(o.rank, int | str) else str(o.rank),
                        "device": self.device, "precision": o.precision,
                        "format": o.out_format, "dtype": o.out_dtype, "layers": o.layers},
            "inputs": self.inputs | {"layers": None},
            "layers": self.layers,
            "passed_through": self.passed_through,
            "passthrough_keys": self.passthrough_keys,
            "totals": self.totals.to_dict(),
            "model": self.model,
            "output": None if out is None else {"path": str(out.path), "bytes": out.bytes, "tensors": out.tensors,
                                                "format": out.format, "dropped_keys": list(out.dropped)},
            "machine": self.machine.to_dict(),
            **self.extra,
        }

    def write(self, path) -> None:
        """Write the JSON through a private temporary file beside ``path`` and a rename."""
        from .outputs import atomic_write

        blob = json.dumps(self.to_dict(), indent=1, sort_keys=False, default=str).encode()
        atomic_write(path, lambda fh: fh.write(blob), "report")


# the per-layer figures a comparison table holds, in its column order (names as in the run report)
EFFECT_FIGURES = ("lora_restored_share", "lora_capped_share", "lora_reused_share", "drift_undone")
TABLE_FIGURES = ("rank_in", "rank_out", "rank_capped", "energy_kept", *EFFECT_FIGURES, "drift")


def model_figures(results) -> dict:
    """Model-wide figures of one method's layers: what its converted LoRA does and what the rank keeps.

    ``energy_kept`` is the share of the whole model's ``sum ||D||_F^2`` the written ranks keep
    (``mean_energy_kept`` weighs every layer alike); the shares and ``drift_undone`` are means over
    the layers that have them."""
    results = list(results)

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 6) if values else None

    weighted = [(r.energy_kept, r.update_sq) for r in results if r.update_sq]
    total = sum(w for _, w in weighted)
    effects = [r.effect for r in results if r.effect is not None]
    return {
        "layers": len(results),
        "energy_kept": round(sum(e * w for e, w in weighted) / total, 6) if total > 0 else None,
        "mean_energy_kept": mean([r.energy_kept for r in results]),
        "min_energy_kept": round(min(r.energy_kept for r in results), 6) if results else None,
        "lora_restored_share": mean([e.lora_restored_share for e in effects]),
        "lora_capped_share": mean([e.lora_capped_share for e in effects]),
        "lora_reused_share": mean([e.lora_reused_share for e in effects]),
        "drift_undone": mean([e.drift_undone for e in effects]),
        "rank_out_total": sum(r.rank_out for r in results),
        "layers_at_rank_cap": sum(1 for r in results if r.rank_capped),
    }


@dataclass(frozen=True)
class Comparison:
    """Several methods run in one pass on the same inputs: each method's run report, a model-wide
    row per method and a per-layer table (``TABLE_FIGURES`` per layer and method)."""
    reports: dict                    # method -> RunReport
    summary: list                    # one dict per method: model_figures + file size and path
    table: list                      # one dict per (layer, method)

    @classmethod
    def build(cls, reports: dict, results: dict, modules: list[str]) -> Comparison:
        summary = []
        for method, rep in reports.items():
            row = {"method": method, **rep.model, "seconds": rep.totals.seconds}
            if rep.output is not None:
                row |= {"bytes": rep.output.bytes, "path": str(rep.output.path)}
            summary.append(row)
        table = []
        for module in modules:
            for method in reports:
                fig = results[method][module].figures()
                table.append({"layer": module, "method": method, **{k: fig.get(k) for k in TABLE_FIGURES}})
        return cls(reports, summary, table)

    def to_dict(self) -> dict:
        return {"app": "casa-studio", "version": __version__, "methods": list(self.reports),
                "summary": self.summary, "table": self.table,
                "reports": {m: r.to_dict() for m, r in self.reports.items()}}

    def write(self, path) -> None:
        from .outputs import atomic_write

        blob = json.dumps(self.to_dict(), indent=1, default=str).encode()
        atomic_write(path, lambda fh: fh.write(blob), "report")

    def csv(self) -> str:
        """The comparison table as CSV: one row per layer and method, then one model-wide row per
        method (layer ``(model)``)."""
        import csv
        import io

        cols = ["layer", "method", *TABLE_FIGURES]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for row in self.table:
            w.writerow(["" if row.get(c) is None else row[c] for c in cols])
        for row in self.summary:
            model = {"layer": "(model)", "method": row["method"], "rank_out": row["rank_out_total"],
                     "rank_capped": row["layers_at_rank_cap"], "energy_kept": row["energy_kept"],
                     **{k: row[k] for k in EFFECT_FIGURES}}
            w.writerow(["" if model.get(c) is None else model[c] for c in cols])
        return buf.getvalue()
