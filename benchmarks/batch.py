"""Benchmark: `casa batch` (layer-major, many LoRAs and targets) against single `casa convert` runs.

    python benchmarks/batch.py [--size 1.3b|14b] [--blocks N | --full] [--loras 8] [--targets 2]
                               [--device cpu|cuda] [--workdir DIR] [--markdown docs/performance.md]

1. Writes synthetic inputs (benchmarks/make_synthetic.py): the base, a target and a LoRA, then
   more LoRAs for the same base (other seeds) and more targets (other drifts of it).
2. Runs, each in a child process (wall time and peak RSS): one `casa convert` (LoRA 0 onto
   target 0), and `casa batch` with 1 LoRA x 1 target, N LoRAs x 1 target, N/2 LoRAs x 1
   target and N/2 LoRAs x 2 targets.
3. Prints the ratios to the single conversion (the issue's bounds: 8 LoRAs x 1 target at most
   1 + 0.25 x 7 = 2.75, 4 LoRAs x 2 targets at most 3.5), the cost of each extra LoRA and of
   each extra target as a share of one conversion, and the peak RSS of each run.
By default 2 blocks (a quick check on a shared machine); ``--full`` takes every block.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import casa_core  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)


def extra_inputs(data: Path, paths: dict, size: str, blocks: int | None, loras: int, targets: int,
                 rank: int = 32) -> dict:
    """LoRAs 1.. for the same base (other seeds) and targets 1.. (the base plus a scaled, re-noised copy
    of target 0's drift), written next to make_synthetic's files; returns every path."""
    import torch

    from benchmarks.make_synthetic import SIZES, StreamingSafetensorsWriter, _generator, _lora_pair, wan_params
    from casa_core.tensorstore import TensorStore

    params = wan_params(SIZES[size], blocks)
    base = TensorStore([paths["base"]])
    target = TensorStore([paths["target"]])
    out = {"loras": [paths["lora"]], "targets": [paths["target"]]}
    for i in range(1, loras):
        p = data / f"lora{i}.safetensors"
        out["loras"].append(p)
        if p.exists():
            continue
        entries = []
        for q in params:
            if q.lora:
                mod = "diffusion_model." + q.name[: -len(".weight")]
                entries += [(f"{mod}.lora_A.weight", torch.bfloat16, (rank, q.shape[1])),
                            (f"{mod}.lora_B.weight", torch.bfloat16, (q.shape[0], rank)),
                            (f"{mod}.alpha", torch.float32, ())]
        with StreamingSafetensorsWriter(p, entries, {"format": "pt", "seed": str(i)}) as w:
            for q in params:
                if q.lora:
                    mod = "diffusion_model." + q.name[: -len(".weight")]
                    a, b = _lora_pair(base.read(q.name).float(), rank, 1.0, _generator(100 + i, "lora", q.name))
                    w.write(f"{mod}.lora_A.weight", a.to(torch.bfloat16))
                    w.write(f"{mod}.lora_B.weight", b.to(torch.bfloat16))
                    w.write(f"{mod}.alpha", torch.tensor(float(rank), dtype=torch.float32))
    for j in range(1, targets):
        p = data / f"target{j}.safetensors"
        out["targets"].append(p)
        if p.exists():
            continue
        entries = [(q.name, torch.bfloat16, q.shape) for q in params]
        with StreamingSafetensorsWriter(p, entries, {"format": "pt", "role": f"target{j}"}) as w:
            for q in params:
                ws, wt = base.read(q.name).float(), target.read(q.name).float()
                g = _generator(200 + j, q.name)
                noise = torch.randn(wt.shape, generator=g) * float((wt - ws).std()) * 0.5
                w.write(q.name, (ws + 0.7 * (wt - ws) + noise).to(torch.bfloat16))
    return out


def layer_costs(base: Path, targets: list[Path], loras: list[Path], device: str, threads: int,
                reps: int = 3) -> dict:
    """Seconds of the batch's stages per layer, in this process on ``threads`` threads (a worker's share of
    the cores): the base's basis, a target's drift, the first LoRA on a pair and each further one. One
    layer of each shape, each stage timed ``reps`` times on fresh state and the fastest kept (the machine
    is shared: the minimum is the least disturbed), weighted by how many layers have that shape."""
    import torch
    from threadpoolctl import threadpool_limits

    from casa_core import methods
    from casa_core.compute import resolve_device
    from casa_core.layers import analyse_base, pair_state
    from casa_core.methods.base import LayerInput
    from casa_core.plan import make_plan
    from casa_core.settings import TransferSettings
    from casa_core.sources import open_lora, open_model

    torch.set_num_threads(threads)
    threadpool_limits(threads)       # numpy's BLAS too (the eigensolver), as a worker of a run has it
    dev = resolve_device(device)
    b = open_model(str(base), "base")
    t = open_model(str(targets[0]), "target")
    plans = [make_plan(b, t, open_lora(str(p))) for p in loras[:3]]
    method, s = methods.get("casa"), TransferSettings()
    shapes: dict[tuple, list[int]] = {}
    for i, lp in enumerate(plans[0].layers):
        shapes.setdefault(lp.shape, []).append(i)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def clock(fn, *args):
        sync()
        t0 = time.perf_counter()
        out = fn(*args)
        sync()
        return time.perf_counter() - t0, out

    def conclude(x, pair):
        return method.conclude(method.analyse(x, pair, s.params), s, None, 0)

    costs = {"base": 0.0, "pair": 0.0, "first_lora": 0.0, "next_lora": 0.0}
    rows = []
    for shape, idx in shapes.items():
        lp = plans[0].layers[idx[0]]
        key = f"{lp.module}.weight"
        Ws, Wt = b.read(key).to(dev, torch.float32), t.read(key).to(dev, torch.float32)
        ins = []
        for plan in plans:
            lq = plan.layers[idx[0]]
            ins.append(LayerInput(lq.module, plan.lora.read(lq.pair.up_key), plan.lora.read(lq.pair.down_key),
                                  lq.scale))
        best = dict.fromkeys(costs, float("inf"))
        for _ in range(reps + 1):       # the first round warms up (one-off library start-up)
            tb, bs = clock(analyse_base, lp.module, Ws)
            tp, ps = clock(pair_state, bs, Wt)
            tl = [clock(conclude, x, ps)[0] for x in ins]
            for k, v in (("base", tb), ("pair", tp), ("first_lora", tl[0]),
                         ("next_lora", sum(tl[1:]) / max(len(tl) - 1, 1))):
                best[k] = min(best[k], v)
        rows.append({"shape": list(shape), "layers": len(idx), **best})
        for k in costs:
            costs[k] += best[k] * len(idx)
    one = costs["base"] + costs["pair"] + costs["first_lora"]
    return costs | {"one_conversion": one, "layers": len(plans[0].layers), "by_shape": rows,
                    "per_extra_lora": costs["next_lora"] / one,
                    "per_extra_target": (costs["pair"] + costs["first_lora"]) / one}


def timed(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed (exit {code})")
    return {"wall": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def run_batch(base: Path, loras: list[Path], targets: list[Path], out: Path, device: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "casa_core", "batch", "--base", str(base), "--output-dir", str(out),
           "--device", device, "--quiet", "--force", "--chunk", str(len(loras))]
    for t in targets:
        cmd += ["--target", str(t)]
    for lo in loras:
        cmd += ["--lora", str(lo)]
    res = timed(cmd)
    summary = json.loads((out / "batch-summary.json").read_text())
    assert summary["counts"]["written"] == len(loras) * len(targets), summary["counts"]
    return res | {"outputs": len(loras) * len(targets), "shared": summary["shared"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1.3b", choices=("1.3b", "14b"))
    ap.add_argument("--blocks", type=int, default=2, help="only the first N blocks (default 2: a quick check)")
    ap.add_argument("--full", action="store_true", help="every block (the whole model's shapes)")
    ap.add_argument("--loras", type=int, default=8)
    ap.add_argument("--targets", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/casa-bench"))
    ap.add_argument("--markdown", type=Path, default=None, help="append the results to this file")
    ap.add_argument("--costs-only", action="store_true", help="only the in-process per-layer costs")
    args = ap.parse_args(argv)
    blocks = None if args.full else args.blocks

    from benchmarks.make_synthetic import make_synthetic
    from benchmarks.run import machine

    data = args.workdir / f"{args.size}-{blocks or 'all'}"
    paths = {"base": data / "base.safetensors", "target": data / "target.safetensors",
             "lora": data / "lora.safetensors"}
    t0 = time.perf_counter()
    if not all(p.exists() for p in paths.values()):
        paths = make_synthetic(data, size=args.size, blocks=blocks)
    more = extra_inputs(data, paths, args.size, blocks, args.loras, args.targets)
    print(f"inputs ready in {data} ({time.perf_counter() - t0:.0f} s)", flush=True)
    mach = machine(args.device)
    print(f"machine: {mach}", flush=True)

    L, T = more["loras"], more["targets"]
    from casa_core.compute import cpu_workers

    workers, threads = cpu_workers() if args.device == "cpu" else (1, None)
    costs = layer_costs(paths["base"], T, L, args.device, threads or 1)
    for r in costs["by_shape"]:
        print(f"  {'x'.join(map(str, r['shape']))} ({r['layers']} layers), s per layer: base {r['base']:.3f}, drift "
              f"{r['pair']:.3f}, first LoRA {r['first_lora']:.3f}, next LoRA {r['next_lora']:.3f}", flush=True)
    print(f"per-layer costs ({threads or 'all'} threads, summed over {costs['layers']} layers): base basis "
          f"{costs['base']:.1f} s, a target's drift {costs['pair']:.1f} s, first LoRA on a pair "
          f"{costs['first_lora']:.1f} s, each further LoRA {costs['next_lora']:.1f} s; per extra LoRA "
          f"{costs['per_extra_lora']:.3f}, per extra target (its drift and first LoRA) {costs['per_extra_target']:.3f} "
          "of one conversion's compute", flush=True)
    if args.costs_only:
        return 0
    half = max(1, args.loras // 2)
    single = timed([sys.executable, "-m", "casa_core", "convert", "--base", str(paths["base"]), "--target", str(T[0]),
                    "--lora", str(L[0]), "--output", str(data / "single.safetensors"), "--device", args.device,
                    "--quiet"])
    print(f"single convert: {single['wall']:.1f} s, peak RSS {single['peak_rss_mb']:.0f} MB", flush=True)
    runs = {}
    for name, loras, targets in (("1x1", L[:1], T[:1]), (f"{args.loras}x1", L, T[:1]), (f"{half}x1", L[:half], T[:1]),
                                 (f"{half}x{args.targets}", L[:half], T)):
        if name in runs:
            continue
        runs[name] = run_batch(paths["base"], loras, targets, data / f"out-{name}", args.device)
        r = runs[name]
        print(f"batch {name}: {r['wall']:.1f} s = {r['wall'] / single['wall']:.2f} x single, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, shared {r['shared']}", flush=True)
    one = runs["1x1"]["wall"]
    per_lora = (runs[f"{args.loras}x1"]["wall"] - one) / max(args.loras - 1, 1) / single["wall"]
    per_target = ((runs[f"{half}x{args.targets}"]["wall"] - runs[f"{half}x1"]["wall"]) / max(args.targets - 1, 1)
                  / single["wall"])
    print(f"per extra LoRA: {per_lora:.3f} x one conversion; per extra target ({half} LoRAs): "
          f"{per_target:.3f} x one conversion", flush=True)
    shape = f"{args.size} shapes, {'all' if blocks is None else blocks} blocks"
    md = "\n".join([
        f"### `casa batch`, {shape}, device {args.device} ({datetime.date.today().isoformat()})", "",
        f"Machine: {mach}. Command: `python benchmarks/batch.py --size {args.size} "
        f"{'--full' if blocks is None else f'--blocks {blocks}'} --loras {args.loras} --targets {args.targets} "
        f"--device {args.device}`.", "",
        "| run | wall s | x one `casa convert` | bound | peak RSS MB |", "|---|---|---|---|---|",
        f"| `casa convert` (1 LoRA, 1 target) | {single['wall']:.1f} | 1.00 | | {single['peak_rss_mb']:.0f} |",
        *(f"| `casa batch` {k.replace('x', ' LoRAs x ')} targets | {r['wall']:.1f} | "
          f"{r['wall'] / single['wall']:.2f} | {_bound(k, args.loras)} | {r['peak_rss_mb']:.0f} |"
          for k, r in runs.items()),
        "", f"Each extra LoRA costs {per_lora:.3f} of one conversion; each extra target ({half} LoRAs) "
        f"{per_target:.3f}.", ""])
    print(md)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n" + md)
    (data / "batch-bench.json").write_text(json.dumps({"machine": mach, "single": single, "runs": runs,
                                                       "per_lora": per_lora, "per_target": per_target}, indent=1))
    return 0


def _bound(name: str, loras: int) -> str:
    if name == "8x1":
        return "2.75"
    if name == "4x2":
        return "3.5"
    return ""


if __name__ == "__main__":
    sys.exit(main())
