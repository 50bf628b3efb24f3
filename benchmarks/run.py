"""Benchmark: `casa convert` end to end on Wan2.1-shaped models, against a straightforward baseline.

    python benchmarks/run.py [--size 1.3b|14b] [--blocks N] [--device cpu|cuda] [--sample 1]
                             [--workdir DIR] [--markdown docs/performance.md]

1. Writes synthetic base / target / LoRA files (benchmarks/make_synthetic.py) unless present.
2. Runs `python -m casa_core convert` in a subprocess: wall time, peak RSS, per-stage seconds
   (from the run report: read, spectral, arbitration, factorization, views, write).
3. On a sample of layers of each shape, in this process and on the same device: the engine's
   fast path (float32), the same rule straightforwardly (benchmarks/naive.py: full SVD, square
   factors, dense products), and the engine in float64; prints the speed ratio and how far
   the fast path is from the float64 path (the contract allows 2e-2).
Prints numbers; with --markdown appends a dated section to that file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import casa_core  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.startswith("cuda") and torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def run_convert(paths: dict, out: Path, report: Path, device: str) -> dict:
    """End-to-end conversion in a child process; returns wall seconds, peak RSS and the report."""
    cmd = [sys.executable, "-m", "casa_core", "convert", "--base", str(paths["base"]), "--target",
           str(paths["target"]), "--lora", str(paths["lora"]), "--output", str(out), "--report", str(report),
           "--device", device, "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"casa convert failed (exit {os.waitstatus_to_exitcode(status)})")
    rep = json.loads(report.read_text())
    stages: dict[str, float] = defaultdict(float)
    for fig in rep["layers"].values():
        for k, v in fig["stages"].items():
            stages[k] += v
    stages["write"] = rep["totals"].get("write_seconds") or 0.0
    return {"wall": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "stages": dict(stages),
            "layers": rep["totals"]["layers"], "output_mb": rep["output"]["bytes"] / 1e6}


def compare_layers(paths: dict, device: str, sample: int) -> list[dict]:
    """Time the fast path, the straightforward rule and the float64 path on sample layers."""
    import torch

    from benchmarks.naive import naive_update
    from casa_core import methods
    from casa_core.compute import resolve_device
    from casa_core.conversion import Conversion, analyse_layer
    from casa_core.settings import TransferSettings

    dev = resolve_device(device)
    plan = Conversion.open(paths["base"], paths["target"], paths["lora"]).plan
    conclude = methods.get("casa").conclude

    def analyze(name, Ws, Wt, B, A, scale, settings=None, **kw):
        return analyse_layer(name, Ws, Wt, B, A, scale, params=settings.params if settings else None, **kw)

    by_shape: dict[tuple, list] = defaultdict(list)
    for lp in plan.layers:
        by_shape[lp.shape].append(lp)
    settings = TransferSettings()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for shape, lps in sorted(by_shape.items()):
        for lp in lps[:sample]:
            key = f"{lp.module}.weight"
            Ws, Wt = plan.base.read(key), plan.target.read(key)
            B, A = plan.lora.read(lp.pair.up_key), plan.lora.read(lp.pair.down_key)
            # warm-up on the first shape so that one-off library start-up is not timed
            if not rows:
                conclude(analyze(lp.module, Ws, Wt, B, A, lp.scale, device=dev, settings=settings), settings, None,
                         None)
            sync()
            t0 = time.perf_counter()
            res = conclude(analyze(lp.module, Ws, Wt, B, A, lp.scale, device=dev, settings=settings), settings,
                           None, None)
            sync()
            fast = time.perf_counter() - t0
            t0 = time.perf_counter()
            D_naive, _ = naive_update(Ws.to(dev), Wt.to(dev), B.to(dev), A.to(dev), lp.scale, rank=lp.rank)
            sync()
            slow = time.perf_counter() - t0
            # agreement of the default precision with float64, on the dense update (rank full)
            d32 = conclude(analyze(lp.module, Ws, Wt, B, A, lp.scale, device=dev, settings=settings), settings,
                           "full", None)
            d64 = conclude(analyze(lp.module, Ws, Wt, B, A, lp.scale, device=dev, dtype=torch.float64,
                                   exact=True), settings, "full", None)
            D32 = d32.up.double() @ d32.down.double()
            D64 = d64.up.double() @ d64.down.double()
            err = float((D32 - D64).norm() / D64.norm())
            naive_err = float((D_naive.double().cpu() - D64).norm() / D64.norm())
            rows.append({"layer": lp.module, "shape": list(shape), "count": len(lps), "fast_s": fast,
                         "naive_s": slow, "speedup": slow / fast, "rel_err_vs_f64": err,
                         "naive_rel_err_vs_f64": naive_err, "energy_kept": res.energy_kept})
            del Ws, Wt, B, A, D_naive
    return rows


def markdown(args, mach, conv, rows, gen_s) -> str:
    import torch

    st = conv["stages"]
    total_fast = sum(r["fast_s"] * r["count"] for r in _per_shape(rows))
    total_naive = sum(r["naive_s"] * r["count"] for r in _per_shape(rows))
    per_thread = ", per worker thread" if args.device == "cpu" else ""
    lines = [
        f"### {args.size} shapes, {conv['layers']} layers, device {args.device} "
        f"({datetime.date.today().isoformat()})",
        "",
        f"Machine: {mach}. torch {torch.__version__}.",
        "",
        "| end to end | value |", "|---|---|",
        f"| `casa convert` wall time | {conv['wall']:.1f} s |",
        f"| peak RSS | {conv['peak_rss_mb']:.0f} MB |",
        f"| output | {conv['output_mb']:.1f} MB |",
        *(f"| stage: {k} (summed over layers{per_thread if k != 'write' else ''}) | {v:.1f} s |"
          for k, v in st.items()),
        f"| synthetic inputs written in | {gen_s:.0f} s (not part of the conversion) |" if gen_s else
        "| synthetic inputs | reused |",
        "",
        "| sample layer | shape | layers of this shape | engine s | straightforward s | speed-up "
        "| engine vs float64 | straightforward vs float64 |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {r['layer']} | {'x'.join(map(str, r['shape']))} | {r['count']} | {r['fast_s']:.3f} | "
          f"{r['naive_s']:.3f} | {r['speedup']:.1f}x | {r['rel_err_vs_f64']:.1e} | {r['naive_rel_err_vs_f64']:.1e} |"
          for r in rows),
        "",
        f"Estimated whole model, compute only, one layer at a time on all cores: engine {total_fast:.0f} s, "
        f"straightforward {total_naive:.0f} s ({total_naive / total_fast:.1f}x). End to end, `casa convert` "
        f"({'layers side by side on the CPU' if args.device == 'cpu' else 'one layer at a time on the GPU'}, "
        f"start-up, reading and writing included) against that straightforward estimate: "
        f"{total_naive / conv['wall']:.1f}x.",
        "",
    ]
    return "\n".join(lines)


def _per_shape(rows):
    seen = {}
    for r in rows:
        seen.setdefault(tuple(r["shape"]), r)
    return seen.values()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1.3b", choices=("1.3b", "14b"))
    ap.add_argument("--blocks", type=int, default=None, help="only the first N blocks (quick runs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sample", type=int, default=1, help="layers per shape for the side-by-side timing")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/casa-bench"))
    ap.add_argument("--markdown", type=Path, default=None, help="append the results to this file")
    ap.add_argument("--skip-convert", action="store_true", help="only the side-by-side layer timing")
    args = ap.parse_args(argv)

    from benchmarks.make_synthetic import make_synthetic

    data = args.workdir / f"{args.size}-{args.blocks or 'all'}"
    paths = {"base": data / "base.safetensors", "target": data / "target.safetensors",
             "lora": data / "lora.safetensors"}
    gen_s = 0.0
    if not all(p.exists() for p in paths.values()):
        t0 = time.perf_counter()
        paths = make_synthetic(data, size=args.size, blocks=args.blocks)
        gen_s = time.perf_counter() - t0
        print(f"synthetic inputs written to {data} in {gen_s:.0f} s", flush=True)
    mach = machine(args.device)
    print(f"machine: {mach}", flush=True)
    conv = {"wall": float("nan"), "peak_rss_mb": float("nan"), "stages": {}, "layers": 0, "output_mb": 0.0}
    if not args.skip_convert:
        conv = run_convert(paths, data / "out.safetensors", data / "report.json", args.device)
        print(f"casa convert: {conv['layers']} layers in {conv['wall']:.1f} s, peak RSS {conv['peak_rss_mb']:.0f} MB",
              flush=True)
        print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in conv["stages"].items()), flush=True)
    rows = compare_layers(paths, args.device, args.sample)
    for r in rows:
        print(f"{r['layer']:<24} {'x'.join(map(str, r['shape'])):>10}  engine {r['fast_s']:.3f}s  "
              f"straightforward {r['naive_s']:.3f}s  ({r['speedup']:.1f}x)  rel err vs float64 "
              f"{r['rel_err_vs_f64']:.1e} (straightforward {r['naive_rel_err_vs_f64']:.1e})", flush=True)
    md = markdown(args, mach, conv, rows, gen_s)
    print(md)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n" + md)
    (data / "bench.json").write_text(json.dumps({"machine": mach, "convert": conv, "layers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
