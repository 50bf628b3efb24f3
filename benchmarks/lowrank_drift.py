"""Benchmark: one layer of a target given as the base plus a distillation LoRA, low-rank drift against dense.

    python benchmarks/lowrank_drift.py [--dim 1536] [--ffn 8960] [--rank 64] [--device cpu|cuda] [--repeat 3]

For a square (dim x dim) and a tall FFN (ffn x dim) layer, a random base weight, a rank-``rank``
distillation LoRA and a rank-32 style LoRA, the CASA analysis + conclusion is timed with the drift
held as its factors (``factorization.LowRank``, what ``--target-lora`` uses) and formed densely
(what a merged checkpoint costs), and the two updates are compared. The base's SVD is the same
work either way and is shown apart; what the drift changes is the rest (routing, arbitration,
factorization) and the memory the drift takes. Prints numbers; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import casa_core  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)


def layer(m: int, n: int, rank: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g) / n ** 0.5
    Bd, Ad = torch.randn(m, rank, generator=g) * 0.02, torch.randn(rank, n, generator=g) * 0.02
    B, A = torch.randn(m, 32, generator=g) * 0.01, torch.randn(32, n, generator=g) * 0.01
    return W, Bd, Ad, B, A


def run(W, Bd, Ad, B, A, low_rank: bool, device: str):
    import torch

    from casa_core.compute import sync
    from casa_core.conversion import analyse_layer
    from casa_core.distillation import DriftParts
    from casa_core.methods import get
    from casa_core.settings import TransferSettings

    settings = TransferSettings()
    t0 = time.perf_counter()
    Ws = W.to(device)
    drift = DriftParts(None, [], [(Bd.double(), Ad)]).drift(Ws, torch.float32, device, low_rank=low_rank)
    an = analyse_layer("layer", Ws, None, B, A, 1.0, params=settings.params, dtype=torch.float32, device=device,
                       drift=drift)
    res = get("casa").conclude(an, settings, 32, 0)
    sync(torch.device(device))
    total = time.perf_counter() - t0
    held = sum(t.numel() * t.element_size() for t in getattr(drift, "factors", (drift,)))
    return total - an.pair.seconds, an.pair.seconds, held, res.up.double() @ res.down.double()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--ffn", type=int, default=8960)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    print(f"distillation LoRA rank {a.rank}, style LoRA rank 32, output rank 32, float32, {a.device}")
    print(f"{'layer':<8} {'shape':>10} {'SVD s':>7} {'rest, low-rank s':>17} {'rest, dense s':>14} "
          f"{'speed-up':>9} {'drift MB low-rank':>18} {'dense':>7} {'difference':>11}")
    for name, (m, n) in (("square", (a.dim, a.dim)), ("ffn", (a.ffn, a.dim))):
        W, Bd, Ad, B, A = layer(m, n, a.rank, 0)
        rest = {True: [], False: []}
        svd, held, out = [], {}, {}
        for _ in range(a.repeat):
            for low in (True, False):
                r, s, h, D = run(W, Bd, Ad, B, A, low, a.device)
                rest[low].append(r)
                svd.append(s)
                held[low], out[low] = h, D
        lo, de = min(rest[True]), min(rest[False])
        diff = float((out[True] - out[False]).norm() / out[False].norm())
        print(f"{name:<8} {f'{m}x{n}':>10} {min(svd):>7.3f} {lo:>17.3f} {de:>14.3f} {de / lo:>8.2f}x "
              f"{held[True] / 1e6:>18.2f} {held[False] / 1e6:>7.1f} {diff:>11.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
