"""Rank-r factors of a dense update: B' = U_r sqrt(S_r), A' = sqrt(S_r) V_r^T."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from . import ranks

SEED = 20260501


@dataclass
class Factors:
    up: torch.Tensor      # m x r
    down: torch.Tensor    # r x n
    energy_kept: float    # share of ||D||_F^2 the rank keeps
    curve: np.ndarray | None = None     # share of ||D||_F^2 the best rank r keeps, r = 1..len (as far as known)
    total_sq: float = 0.0               # ||D||_F^2
    rank_capped: bool | None = None     # auto rank: the cap stopped it short of its fraction (None: not auto)


def _split(U, S, V, total_sq, S_known=None) -> Factors:
    # deterministic signs: the largest-magnitude entry of each right vector is positive
    idx = V.abs().argmax(dim=0)
    sgn = torch.sign(V[idx, torch.arange(V.shape[1], device=V.device)])
    sgn[sgn == 0] = 1
    U, V = U * sgn, V * sgn
    root = S.sqrt()
    kept = float((S.double() ** 2).sum() / total_sq) if total_sq > 0 else 1.0
    known = S if S_known is None else S_known
    curve = ranks.cumulative((known.double() ** 2).cpu().numpy(), total_sq).astype(np.float32)
    return Factors((U * root).contiguous(), (root[:, None] * V.T).contiguous(), min(kept, 1.0), curve,
                   float(total_sq))


def sq_norm(a: torch.Tensor | LowRank) -> float:
    """||a||_F^2 to the rounding of a's dtype (torch's sums run in cascades: ~1e-7 relative in
    float32, where ``vector_norm`` was measured 2.5e-3 off on an FFN weight), a block of rows
    at a time so that no copy of a large matrix is made; a ``LowRank`` from its factors."""
    if isinstance(a, LowRank):
        return a.sq_norm()
    rows = max(1, (1 << 22) // max(a.shape[-1], 1))
    return float(sum(float(a[i:i + rows].square().sum()) for i in range(0, a.shape[0], rows)))


def column_sq_norms(a: torch.Tensor | LowRank) -> torch.Tensor:
    """The squared norm of each column of ``a``, accumulated in float64 a block of rows at a time
    (a float32 sum down a column of a long matrix drifts like its length; no float64 copy of ``a``);
    a ``LowRank`` from its factors."""
    if isinstance(a, LowRank):
        return a.column_sq_norms()
    rows = max(1, (1 << 22) // max(a.shape[-1], 1))
    out = torch.zeros(a.shape[1], dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], rows):
        out += a[i:i + rows].double().square().sum(0)
    return out


class LowRank:
    """A matrix held as ``P @ Q`` (m x r, r x n, r small): products with it never form it.

    A target given as the base plus distillation LoRAs has such a drift (``distillation``).
    It answers what the engine asks of a drift (``@`` on either side, ``.T``, ``-``, ``shape``,
    ``sq_norm``); anything else (``__torch_function__``, other attributes) sees the dense matrix.
    """

    def __init__(self, P: torch.Tensor, Q: torch.Tensor):
        self.P, self.Q = P, Q

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.P.shape[0], self.Q.shape[1]))

    @property
    def dtype(self):
        return self.P.dtype

    @property
    def device(self):
        return self.P.device

    @property
    def T(self) -> LowRank:
        return LowRank(self.Q.T, self.P.T)

    @property
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.P, self.Q

    def __neg__(self) -> LowRank:
        return LowRank(-self.P, self.Q)

    def __matmul__(self, Y):
        if isinstance(Y, LowRank):
            return LowRank(self.P, (self.Q @ Y.P) @ Y.Q)
        return self.P @ (self.Q @ Y)

    def __rmatmul__(self, X):
        return (X @ self.P) @ self.Q

    def dense(self) -> torch.Tensor:
        return self.P @ self.Q

    def __getitem__(self, index) -> LowRank:
        """``M[rows, cols]``, still as a product (``M[:, mask]``: the columns a mask selects)."""
        rows, cols = index
        return LowRank(self.P[rows], self.Q[:, cols])

    def column_sq_norms(self) -> torch.Tensor:
        """The squared norm of each column (float64), from r x r and r x n products."""
        P, Q = self.P.double(), self.Q.double()
        return ((P.T @ P) @ Q * Q).sum(0)

    def sq_norm(self) -> float:
        """||P Q||_F^2 = <P^T P, Q Q^T>, from r x r matrices."""
        return float(((self.P.T @ self.P) * (self.Q @ self.Q.T)).sum())

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.__matmul__, torch.matmul) and len(args) == 2 and isinstance(args[1], LowRank) \
                and not isinstance(args[0], LowRank):
            return args[1].__rmatmul__(args[0])

        def dense(x):
            return x.dense() if isinstance(x, LowRank) else x

        return func(*(dense(a) for a in args), **{k: dense(v) for k, v in (kwargs or {}).items()})

    def __getattr__(self, name):
        if name.startswith("__") or name in ("P", "Q"):
            raise AttributeError(name)
        return getattr(self.dense(), name)


def dense(M) -> torch.Tensor:
    """A matrix as a tensor (a ``LowRank`` formed)."""
    return M.dense() if isinstance(M, LowRank) else M


class Operator:
    """A matrix held as a sum of products, ``D = sum_i F_i1 @ F_i2 @ ...``, applied to blocks
    of vectors without ever being formed.

    ``sq_norm`` is ``||D||_F^2``; the engine computes it from the structure of D (see
    ``methods.casa.update_operator``); for a dense matrix it is summed directly.
    """

    def __init__(self, terms: list[tuple[torch.Tensor, ...]], shape: tuple[int, int],
                 sq_norm: float | None = None):
        # a LowRank factor is its two factors: the chain stays a product of tensors
        self.terms = [tuple(g for f in chain for g in (f.factors if isinstance(f, LowRank) else (f,)))
                      for chain in terms]
        self.shape = shape
        self._sq_norm = sq_norm

    @classmethod
    def of(cls, D: torch.Tensor) -> Operator:
        return cls([(D,)], tuple(D.shape))

    def mm(self, Om: torch.Tensor) -> torch.Tensor:
        """D @ Om."""
        out = None
        for chain in self.terms:
            t = Om
            for f in reversed(chain):
                t = f @ t
            out = t if out is None else out.add_(t)
        return out

    def rmm(self, Q: torch.Tensor) -> torch.Tensor:
        """D^T @ Q."""
        out = None
        for chain in self.terms:
            t = Q
            for f in chain:
                t = f.T @ t
            out = t if out is None else out.add_(t)
        return out

    def dense(self) -> torch.Tensor:
        out = None
        for chain in self.terms:
            if len(chain) == 1:
                out = chain[0].clone() if out is None else out.add_(chain[0])
                continue
            right = chain[-1]
            for f in reversed(chain[1:-1]):
                right = f @ right
            out = chain[0] @ right if out is None else out.addmm_(chain[0], right)
        return out

    def sq_norm(self) -> float:
        if self._sq_norm is None:
            single = len(self.terms) == 1 and len(self.terms[0]) == 1
            self._sq_norm = sq_norm(self.terms[0][0] if single else self.dense())
        return self._sq_norm


def factorize(D: torch.Tensor | Operator, rank: int, exact: bool) -> Factors:
    """Best rank-``rank`` factors of D (``rank >= min(D.shape)`` reproduces D).

    Large matrices at a small rank use a seeded randomized range finder with power
    iterations on D as given (a dense matrix or an ``Operator``), run until the captured
    energy stops growing (well inside the 0.1% residual bound the contract allows);
    otherwise D is formed and factored by LAPACK's SVD.
    """
    op = D if isinstance(D, Operator) else Operator.of(D)
    m, n = op.shape
    p = min(m, n)
    rank = min(rank, p)
    if exact or p <= 256 or rank * 4 >= p:
        Dd = op.dense()
        total_sq = sq_norm(Dd)
        U, S, Vh = torch.linalg.svd(Dd, full_matrices=False)
        return _split(U[:, :rank], S[:rank], Vh[:rank].T, total_sq, S)
    return _randomized(op, rank, op.sq_norm())


def factorize_to(D: torch.Tensor | Operator, rank, r_in: int, exact: bool) -> Factors:
    """Factors of D at the run's rank option (None, ``"full"``, a number or ``ranks.AutoRank``)."""
    p = min(D.shape)
    return _auto(factorize(D, ranks.resolve(rank, r_in, p), exact), rank, r_in, p)


def factorize_lowrank_to(B: torch.Tensor, A: torch.Tensor, rank, r_in: int) -> Factors:
    """``factorize_lowrank`` at the run's rank option."""
    p = min(B.shape[0], A.shape[1])
    return _auto(factorize_lowrank(B, A, ranks.resolve(rank, r_in, p)), rank, r_in, p)


def _auto(fac: Factors, rank, r_in: int, p: int) -> Factors:
    """An auto rank keeps the leading singular triplets its fraction needs (factored at the cap)."""
    if not isinstance(rank, ranks.AutoRank):
        return fac
    r, capped = ranks.choose(fac.curve, rank, r_in, p)
    r = min(r, fac.up.shape[1])
    kept = float(fac.curve[r - 1]) if r > 0 else 0.0
    return replace(fac, up=fac.up[:, :r].contiguous(), down=fac.down[:r].contiguous(), energy_kept=min(kept, 1.0),
                   rank_capped=capped)


def _randomized(op: Operator, rank: int, total_sq: float) -> Factors:
    m, n = op.shape
    L0 = op.terms[0][0]
    ell = min(min(m, n), rank + max(16, rank // 2))
    gen = torch.Generator().manual_seed(SEED)
    omega = torch.randn(n, ell, generator=gen, dtype=torch.float64).to(L0.device, L0.dtype)
    Q = _orth(op.mm(omega))
    last = gain = -1.0
    for _ in range(16):
        Y = op.rmm(Q)                    # (Q^T D)^T: its singular values are what Q captures
        Uh, S, Vh = torch.linalg.svd(Y.T, full_matrices=False)
        captured = float((S[:rank].double() ** 2).sum())
        if last >= 0 and _converged(captured - last, gain, max(total_sq - captured, 1e-30 * total_sq)):
            break
        last, gain = captured, (captured - last if last >= 0 else -1.0)
        Q = _orth(op.mm(_orth(Y)))
    # (the curve stops at ``rank``: the range finder converges for the leading ``rank`` values only)
    return _split(Q @ Uh[:, :rank], S[:rank], Vh[:rank].T, total_sq)


def _converged(gain: float, previous: float, left_out: float) -> bool:
    """Whether another power iteration could still lower the residual by a relevant amount.

    The contract allows a residual 0.1% above the optimum, i.e. about 2e-3 of the left-out
    energy. Power iterations gain geometrically: with the ratio rho of the last two gains,
    all gains still to come add up to gain * rho / (1 - rho). Stop when that is below
    5e-4 of the left-out energy (4x inside the contract), or when the last gain alone is
    below 1e-4 of it (the plain rule, whatever the ratio).
    """
    if gain <= 1e-4 * left_out:
        return True
    if previous <= 0:
        return False
    rho = gain / previous
    return rho < 0.5 and gain * rho / (1 - rho) <= 5e-4 * left_out


def _orth(Y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of a tall, thin Y: Cholesky QR done twice, its small Gram in float64.

    Much faster than Householder QR on tall blocks, and as accurate after the second pass;
    falls back to QR when Y is too ill-conditioned for the Cholesky factorization.
    """
    Q = Y
    for _ in range(2):
        G = (Q.T @ Q).double()
        L, info = torch.linalg.cholesky_ex(G)
        if int(info) != 0:
            return torch.linalg.qr(Y)[0]
        Q = torch.linalg.solve_triangular(L.to(Y.dtype), Q.T, upper=False).T
    return Q


def factorize_lowrank(B: torch.Tensor, A: torch.Tensor, rank: int) -> Factors:
    """Factors of the low-rank product ``B @ A`` without forming it (QR of both sides)."""
    Qb, Rb = torch.linalg.qr(B)
    Qa, Ra = torch.linalg.qr(A.T)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T, full_matrices=False)
    total_sq = float((S.double() ** 2).sum())
    r = min(rank, S.numel())
    return _split(Qb @ U[:, :r], S[:r], Qa @ Vh[:r].T, total_sq, S)
