"""The run report: the plan, every layer's figures, and totals, as JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from . import __version__


def build_report(plan, results, settings, options, export=None, seconds: float | None = None,
                 device: str | None = None) -> dict:
    layers = {r.name: r.figures() for r in results}
    energies = [r.energy_kept for r in results]
    return {
        "app": "casa-studio", "version": __version__,
        "settings": settings.to_dict(),
        "overrides": {k: v.to_dict() for k, v in (options.overrides or {}).items()},
        "options": {"rank": options.rank, "device": device or options.device, "precision": options.precision,
                    "format": options.out_format, "dtype": options.out_dtype, "layers": options.layers},
        "inputs": plan.describe() | {"layers": None},
        "layers": layers,
        "passed_through": [{"prefix": p.prefix, "module": p.module, "reason": p.reason} for p in plan.passed],
        "passthrough_keys": plan.passthrough_keys,
        "totals": {
            "layers": len(results), "seconds": seconds,
            "min_energy_kept": min(energies) if energies else None,
            "mean_energy_kept": sum(energies) / len(energies) if energies else None,
            "capped": sum(r.n_capped for r in results),
        },
        "output": None if export is None else {"path": str(export.path), "bytes": export.bytes,
                                               "tensors": export.tensors, "format": export.format,
                                               "dropped_keys": list(export.dropped)},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    **_runtime(device or options.device, options)},
    }


def _runtime(device: str, options) -> dict:
    """How the layers were computed: torch, CPU workers and threads, which eigensolver."""
    import torch

    from . import lapack
    from .pipeline import cpu_workers

    out = {"torch": torch.__version__}
    if str(device).startswith("cpu"):
        workers, threads = cpu_workers(options.workers)
        out |= {"cpu_workers": workers, "threads_per_worker": threads,
                "eigensolver": "LAPACKE dsytrd+dstedc (float64), sormtr (float32)" if lapack.eigh is not None
                else "numpy.linalg.eigh (float64)"}
    else:
        out["eigensolver"] = "torch.linalg.eigh (float64)"
    return out


def write_report(report: dict, path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=False, default=str))
    os.replace(tmp, path)
