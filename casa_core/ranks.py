"""The output rank: a fixed rank, ``full``, or ``auto`` (per layer, the smallest rank that keeps a share of the update).

``RunOptions.rank`` is None (the input's rank), ``"full"`` (exact), a positive int, or an
``AutoRank``. ``resolve`` turns it into the rank a layer is factored at; ``choose`` picks the
automatic rank from the squared singular values the factorization found. The curves here are
also what the GUI's energy-vs-rank view and the run report's model-wide figures are made of.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CasaError

DEFAULT_FRACTION = 0.9
CAP_FACTOR = 4           # --max-rank defaults to this many times the input's rank


@dataclass(frozen=True)
class AutoRank:
    """Per layer the smallest rank, at least the input's, keeping ``fraction`` of ``||D||_F^2``,
    at most ``max_rank`` (None: ``CAP_FACTOR`` x the input's rank)."""
    fraction: float = DEFAULT_FRACTION
    max_rank: int | None = None

    def validate(self) -> AutoRank:
        if not (isinstance(self.fraction, int | float) and 0 < self.fraction <= 1):
            raise CasaError(f"the auto rank's fraction must lie in (0, 1], got {self.fraction!r}", "e.g. auto:0.9",
                            setting="rank", example="auto:0.9")
        if self.max_rank is not None and not (isinstance(self.max_rank, int) and self.max_rank > 0):
            raise CasaError(f"max_rank must be a positive whole number, got {self.max_rank!r}", "e.g. 128",
                            setting="max_rank", example="128")
        return self

    def cap(self, r_in: int, p: int) -> int:
        return max(1, min(p, self.max_rank if self.max_rank is not None else CAP_FACTOR * r_in))

    def __str__(self) -> str:
        text = f"auto:{self.fraction:g}"
        return text + (f" (max {self.max_rank})" if self.max_rank is not None else f" (max {CAP_FACTOR}x input)")


def resolve(rank, r_in: int, p: int) -> int:
    """The rank a layer is factored at: for ``AutoRank`` its cap (the factorization then keeps fewer)."""
    if rank == "full":
        return p
    if isinstance(rank, AutoRank):
        return rank.cap(r_in, p)
    return min(p, rank or r_in)


def choose(shares: np.ndarray, policy: AutoRank, r_in: int, p: int) -> tuple[int, bool]:
    """(rank, whether the cap stopped it short of the fraction) from the cumulative shares
    ``shares[r - 1]`` of ``||D||_F^2`` the best rank ``r`` keeps (known up to the cap at least)."""
    cap = policy.cap(r_in, p)
    floor = min(r_in, cap)
    known = shares[:cap]
    reach = np.nonzero(known >= policy.fraction - 1e-12)[0]
    if reach.size == 0:
        return min(cap, max(floor, len(known))), True
    return max(floor, int(reach[0]) + 1), False


def cumulative(sq: np.ndarray, total_sq: float) -> np.ndarray:
    """Cumulative shares of ``total_sq`` from squared singular values (descending)."""
    if total_sq <= 0:
        return np.ones(len(sq))
    return np.minimum(np.cumsum(np.asarray(sq, dtype=np.float64)) / total_sq, 1.0)


def share_at(curve: np.ndarray | None, rank: int) -> float:
    """The share a layer keeps at ``rank`` (the last known value bounds it from below beyond the curve)."""
    if curve is None or len(curve) == 0:
        return float("nan")
    return float(curve[min(rank, len(curve)) - 1]) if rank > 0 else 0.0


def rank_for(curve: np.ndarray | None, fraction: float, r_in: int, cap: int | None = None) -> int | None:
    """The smallest rank (at least ``r_in``) whose share reaches ``fraction``; None when the curve never does."""
    if curve is None:
        return None
    hit = np.nonzero(curve[: cap or len(curve)] >= fraction - 1e-12)[0]
    return None if hit.size == 0 else max(r_in, int(hit[0]) + 1)


def upper_bound(curve: np.ndarray, upto: int) -> np.ndarray:
    """Shares for ranks 1..``upto`` where the curve stops early (a randomized factorization knows only
    its leading singular values): beyond its end no singular value exceeds the last one found, so the
    share grows by at most that one's share per rank. A cheap bound from above (up to the accuracy of the
    values found, 0.1% for the randomized factorization); the curve itself bounds the true share from below."""
    c = np.asarray(curve, dtype=np.float64)
    if len(c) >= upto or len(c) == 0:
        return c[:upto]
    step = c[-1] - (c[-2] if len(c) > 1 else 0.0)
    more = np.minimum(c[-1] + step * np.arange(1, upto - len(c) + 1), 1.0)
    return np.concatenate([c, more])


def rank_at_least(curve: np.ndarray | None, fraction: float, r_in: int, p: int) -> int | None:
    """The smallest rank that could keep ``fraction`` (exact where the curve is known, from
    ``upper_bound`` beyond it); None without a curve."""
    if curve is None:
        return None
    exact = rank_for(curve, fraction, r_in)
    if exact is not None or len(curve) >= p:
        return exact
    return rank_for(upper_bound(curve, p), fraction, r_in)


def model_curve(results, max_rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(ranks 1..max_rank, share of the whole model's ``sum ||D||_F^2`` kept with that rank on every layer)."""
    ranks = np.arange(1, max_rank + 1)
    kept = np.zeros(max_rank)
    total = 0.0
    for r in results:
        if r.energy_curve is None or not r.update_sq:
            continue
        total += r.update_sq
        c = np.asarray(r.energy_curve, dtype=np.float64)[:max_rank]
        kept += r.update_sq * np.concatenate([c, np.full(max_rank - len(c), c[-1] if len(c) else 0.0)])
    return ranks, (kept / total if total > 0 else np.full(max_rank, np.nan))


def size_for(results, fraction: float, bytes_per_value: int, cap_factor: int = CAP_FACTOR):
    """(rank per layer, bytes of the factors, layers short of ``fraction`` at the cap, layers whose rank is
    a lower bound) if every layer took the auto rank for ``fraction``: where a layer's curve stops before
    its cap, its rank is the least ``upper_bound`` allows."""
    ranks, total, short, bounded = {}, 0, [], []
    for r in results:
        if r.energy_curve is None:
            continue
        m, n = r.shape
        p = min(m, n)
        cap = min(p, cap_factor * r.rank_in)
        k = rank_for(r.energy_curve, fraction, r.rank_in, cap)
        if k is None and len(r.energy_curve) < cap:
            k = rank_at_least(r.energy_curve, fraction, r.rank_in, p)
            bounded.append(r.name)
        if k is None or k > cap:
            short.append(r.name)
            k = cap
        ranks[r.name] = k
        total += k * (m + n) * bytes_per_value
    return ranks, total, short, bounded


def parse(text: str):
    """``auto`` or ``auto:FRACTION`` -> AutoRank; anything else is not ours (None)."""
    if not text.startswith("auto"):
        return None
    rest = text[4:]
    if rest == "":
        return AutoRank()
    if not rest.startswith(":"):
        return None
    try:
        fraction = float(rest[1:])
    except ValueError:
        raise CasaError(f"the auto rank's fraction must be a number, got {rest[1:]!r}", "e.g. auto:0.9",
                        setting="rank", example="auto:0.9") from None
    return AutoRank(fraction).validate()
