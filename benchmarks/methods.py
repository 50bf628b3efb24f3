"""Every method in one pass on Wan-shaped synthetic models: what each converted LoRA does, what the rank keeps,
and what sharing each layer's decomposition saves.

    python -m benchmarks.methods [--size 1.3b] [--blocks 2] [--rank 32] [--fraction 0.9] [--workdir /tmp/casa-bench]

Prints, per method, the energy the input rank keeps (min / median / max over layers), the model-wide
figures of docs/method.md ("What a converted layer does"), then what ``--rank auto:FRACTION`` picks
for CASA (ranks, layers at the cap, file size), and the seconds of one pass over all methods against
one run per method.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1.3b", choices=("1.3b", "14b"))
    ap.add_argument("--blocks", type=int, default=2, help="the first N blocks (default 2: a quick run)")
    ap.add_argument("--rank", type=int, default=32, help="the synthetic LoRA's rank")
    ap.add_argument("--fraction", type=float, default=0.9, help="the auto rank's fraction")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/casa-bench"))
    args = ap.parse_args(argv)

    from benchmarks.make_synthetic import make_synthetic
    from casa_core import methods
    from casa_core.conversion import Conversion
    from casa_core.ranks import AutoRank
    from casa_core.settings import RunOptions, TransferSettings

    data = args.workdir / f"{args.size}-{args.blocks}-r{args.rank}"
    paths = {r: data / f"{r}.safetensors" for r in ("base", "target", "lora")}
    if not all(p.exists() for p in paths.values()):
        paths = make_synthetic(data, size=args.size, blocks=args.blocks, rank=args.rank)
    names = list(methods.names())
    settings = [TransferSettings.of(n) for n in names]
    conv = Conversion.open(paths["base"], paths["target"], paths["lora"])
    opts = RunOptions(device=args.device, view_size=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        comp = conv.compare({n: tmp / f"{n}.safetensors" for n in names}, settings, opts)
        one_pass = time.perf_counter() - t0
        singles = 0.0
        for s in settings:
            t0 = time.perf_counter()
            conv.convert(tmp / f"single-{s.method}.safetensors", s, opts)
            singles += time.perf_counter() - t0
            single, shared = tmp / f"single-{s.method}.safetensors", tmp / f"{s.method}.safetensors"
            if single.read_bytes() != shared.read_bytes():
                print(f"! {s.method}: the one-pass file differs from the single run's", file=sys.stderr)
        auto_opts = RunOptions(device=args.device, view_size=0, rank=AutoRank(args.fraction))
        rep = conv.convert(tmp / "auto.safetensors", TransferSettings(), auto_opts)
        fixed = (tmp / "casa.safetensors").stat().st_size
    layers = len(conv.plan.layers)
    print(f"{args.size} shapes, {args.blocks} blocks: {layers} layers, LoRA rank {args.rank}, device {args.device}")
    print(f"{'method':<18} {'kept min':>8} {'median':>7} {'max':>6} {'model':>6} {'restored':>9} {'capped':>7} "
          f"{'reused':>7} {'undone':>7}")
    for row in comp.summary:
        kept = [r["energy_kept"] for r in comp.table if r["method"] == row["method"]]

        def f(v):
            return "-" if v is None else f"{v:.3f}"

        print(f"{row['method']:<18} {min(kept):>8.3f} {statistics.median(kept):>7.3f} {max(kept):>6.3f} "
              f"{f(row['energy_kept']):>6} {f(row['lora_restored_share']):>9} {f(row['lora_capped_share']):>7} "
              f"{f(row['lora_reused_share']):>7} {f(row['drift_undone']):>7}")
    res = list(conv.results.values())
    ranks = sorted(r.rank_out for r in res)
    print(f"casa --rank auto:{args.fraction:g}: ranks {ranks[0]} to {ranks[-1]} (median {statistics.median(ranks):g}), "
          f"{rep.model['layers_at_rank_cap']} layers at the cap, energy kept min {rep.model['min_energy_kept']:.3f} "
          f"model {rep.model['energy_kept']:.3f}; file {rep.output.bytes / 1e6:.1f} MB against {fixed / 1e6:.1f} MB "
          f"at rank {args.rank}")
    print(f"{len(names)} methods in one pass: {one_pass:.1f} s; one run each: {singles:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
