"""Per-layer state, split by what it depends on, and what a transferred layer yields.

``PairState`` depends on the base and the target only (the base's thin singular basis,
the drift ``D_fft = W_t - W_s`` and its routing ``C_fft`` as far as asked for), so one can
serve any number of LoRAs. ``LoraState`` is one LoRA's layer seen in that basis.
Everything is in the tall orientation (rows >= columns): the rule is transpose-equivariant,
and a wide layer is handled as its transpose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .compute import sync
from .factorization import LowRank, column_sq_norms, dense, sq_norm
from .spectral import thin_svd


@dataclass
class PairState:
    """One layer of the base and the target, in the base's singular basis."""
    name: str
    shape: tuple[int, int]            # the weight's own (out, in)
    transposed: bool
    exact: bool
    U: torch.Tensor | None            # left singular vectors; None: applied as Ws @ (Vsi @ .)
    sigma: torch.Tensor
    V: torch.Tensor
    D_fft: torch.Tensor | LowRank     # W_t - W_s (low-rank where it is distillation LoRAs' alone)
    Ws: torch.Tensor | None           # the base weight when U is None, or when spectra were asked for
    Vsi: torch.Tensor | None          # V / sigma when U is None: U = Ws @ Vsi
    dfft_sq: float                    # ||D_fft||_F^2
    drift: float                      # ||D_fft|| / ||W_s||
    solver: str                       # the eigensolver or SVD that ran
    seconds: float
    sigma_target: torch.Tensor | None = None
    _c_fft: torch.Tensor | None = field(default=None, repr=False)
    _target: Basis | None = field(default=None, repr=False)
    _rows: dict = field(default_factory=dict, repr=False)     # k -> c_fft_rows(k), for the next LoRA
    _dv: tuple | None = field(default=None, repr=False)       # (D_fft V, its squared column norms)

    @property
    def square(self) -> bool:
        return self.shape[0] == self.shape[1]

    @property
    def tall(self) -> bool:
        """Strictly tall in the working orientation (a rectangular layer)."""
        return not self.square

    def left_t(self, Y: torch.Tensor) -> torch.Tensor:
        """U^T @ Y, with U given or applied as Ws @ Vsi."""
        return self.U.T @ Y if self.U is not None else self.Vsi.T @ (self.Ws.T @ Y)

    def left(self, *M) -> tuple:
        """U @ M as one product chain (M a matrix or factors): (Ws, V / sigma, ...) when U is not formed."""
        return (self.U, *M) if self.U is not None else (self.Ws, self.Vsi, *M)

    def c_fft(self) -> torch.Tensor:
        """The drift's routing C_fft = U^T D_fft V in full (computed once)."""
        if self._c_fft is None:
            self._c_fft = self.left_t(self.D_fft) @ self.V
        return self._c_fft

    def c_fft_rows(self, k: int) -> torch.Tensor:
        """The top ``k`` rows of C_fft of a square layer, computed on their own.

        Always the same product, whatever else was computed, so that a layer's result does
        not depend on what other LoRAs asked of the pair before it; kept, so that the next
        LoRA concluded on the pair with the same ``k`` (the same energy threshold) reuses it.
        """
        rows = self._rows.get(k)
        if rows is None:
            rows = self._rows[k] = (self.U[:, :k].T @ self.D_fft) @ self.V
        return rows

    def drift_in_v(self) -> tuple[torch.Tensor | LowRank, torch.Tensor]:
        """(D_fft V, the squared norm of each of its columns in float64) of a rectangular layer, computed
        the first time a method asks and kept: CASA's update on the dominant columns reads them for every
        LoRA on the pair (one m x n x n product here instead of one per LoRA). One more m x n matrix
        lives with the pair (a ``LowRank`` where the drift is one)."""
        if self._dv is None:
            D = self.D_fft
            G = LowRank(D.P, D.Q @ self.V) if isinstance(D, LowRank) else D @ self.V
            self._dv = G, column_sq_norms(G)
        return self._dv

    def tail_routing(self, k: int, cols: torch.Tensor) -> torch.Tensor:
        """C_fft[k:, cols] of a square layer."""
        return self.U[:, k:].T @ (self.D_fft @ self.V[:, cols])

    @property
    def base(self) -> Basis:
        """The base's thin basis (the same tensors, seen as a ``Basis``)."""
        return Basis(self.U, self.sigma, self.V, self.Ws if self.U is None else None, self.Vsi)

    def target_basis(self) -> Basis:
        """The target's own thin basis, W_t = U_t diag(sigma_t) V_t^T (tall orientation), computed the
        first time a method asks (``projection``) and kept for any other method on this pair; no other
        method pays for it. W_t is rebuilt from the pair (W_s's factors or W_s, plus D_fft): one layer's
        worth of memory, like the base's basis."""
        if self._target is None:
            Ws = self.Ws if self.Ws is not None else (self.U * self.sigma) @ self.V.T
            Wt = Ws + self.D_fft
            del Ws
            U, sigma, V, _solver = thin_svd(Wt, self.exact, left=not self.tall)
            self._target = Basis(U, sigma, V, Wt if U is None else None, None if U is not None else V / sigma)
        return self._target


@dataclass
class Basis:
    """A thin singular basis W = U diag(sigma) V^T; U given, or applied as W @ (V / sigma) when not formed."""
    U: torch.Tensor | None
    sigma: torch.Tensor
    V: torch.Tensor
    W: torch.Tensor | None            # when U is None
    Vsi: torch.Tensor | None          # V / sigma when U is None

    def project_rows(self, k: int, Y: torch.Tensor) -> torch.Tensor:
        """U_k U_k^T Y (Y tall and thin); Y itself when U_k spans the whole space."""
        if k >= Y.shape[0]:
            return Y
        if self.U is not None:
            Uk = self.U[:, :k]
            return Uk @ (Uk.T @ Y)
        Vk = self.Vsi[:, :k]
        return self.W @ (Vk @ (Vk.T @ (self.W.T @ Y)))

    def project_cols(self, k: int, R: torch.Tensor) -> torch.Tensor:
        """R V_k V_k^T (R short and wide); R itself when V_k spans the whole space."""
        if k >= R.shape[1]:
            return R
        Vk = self.V[:, :k]
        return (R @ Vk) @ Vk.T


@dataclass
class BaseState:
    """One layer of the base alone, in the tall orientation: its thin singular basis.

    It depends on the base only, so one serves every target (``pair_state``) and LoRA.
    """
    name: str
    shape: tuple[int, int]            # the weight's own (out, in)
    transposed: bool
    exact: bool
    Ws: torch.Tensor                  # the base weight (tall orientation, the working dtype and device)
    U: torch.Tensor | None
    sigma: torch.Tensor
    V: torch.Tensor
    Vsi: torch.Tensor | None
    ws_norm: float
    solver: str
    seconds: float


def analyse_base(name: str, W_s, *, dtype=torch.float32, device="cpu", exact: bool = False,
                 cache=None) -> BaseState:
    """Step 1 of the rule: the base's thin basis (tall layers never form U; U^T Y = (V / sigma)^T (Ws^T Y)).

    ``cache``: a ``spectral_cache.SpectralCache`` the basis is read from, or kept in.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    m, n = W_s.shape
    Ws = W_s.to(device=device, dtype=dtype)
    key = cache.key(Ws, exact) if cache is not None else None
    transposed = m < n
    if transposed:
        Ws = Ws.T
    tall = Ws.shape[0] > Ws.shape[1]
    found = cache.get(key, device) if cache is not None else None
    if found is not None:
        U, sigma, V, solver = found
    else:
        U, sigma, V, solver = thin_svd(Ws, exact, left=not tall)
        if cache is not None:
            cache.put(key, U, sigma, V, solver)
    Vsi = None if U is not None else V / sigma
    ws_norm = float(sigma.double().norm())
    sync(device)
    return BaseState(name, (m, n), transposed, exact, Ws, U, sigma, V, Vsi, ws_norm, solver,
                     time.perf_counter() - t0)


def pair_state(base: BaseState, W_t, *, spectra: bool = False, consume: bool = False,
               full_routing: bool = False, drift=None) -> PairState:
    """Step 3 of the rule on a base's basis: the drift D_fft = W_t - W_s of one target.

    ``base`` is only read, so it can serve several targets; see ``analyse_pair`` for the rest
    (``drift``: D_fft itself, in the weight's own orientation, in place of W_t).
    """
    t0 = time.perf_counter()
    Ws = base.Ws
    if drift is not None:
        D_fft = drift.T if base.transposed else drift
    else:
        Wt = W_t.to(device=Ws.device, dtype=Ws.dtype, copy=not consume)   # becomes D_fft in place
        if base.transposed:
            Wt = Wt.T
        D_fft = Wt.sub_(Ws)
        del Wt
    tall = Ws.shape[0] > Ws.shape[1]
    dfft_sq = sq_norm(D_fft)
    state = PairState(base.name, base.shape, base.transposed, base.exact, base.U, base.sigma, base.V, D_fft,
                      Ws if base.U is None or spectra else None, base.Vsi, dfft_sq,
                      dfft_sq ** 0.5 / base.ws_norm if base.ws_norm > 0 else 0.0, base.solver, 0.0)
    if tall or full_routing:
        state.c_fft()
    if spectra:
        state.sigma_target = torch.linalg.svdvals(Ws + dense(D_fft))
    sync(Ws.device)
    state.seconds = base.seconds + time.perf_counter() - t0
    return state


def analyse_pair(name: str, W_s, W_t, *, dtype=torch.float32, device="cpu", exact: bool = False,
                 spectra: bool = False, consume: bool = False, full_routing: bool = False,
                 drift=None, cache=None) -> PairState:
    """The base's thin basis and the drift: steps 1 and 3 of the rule, without the LoRA.

    ``consume``: W_t is the caller's private copy, already in ``dtype`` on ``device``; it is
    overwritten (it becomes D_fft) instead of copied. ``full_routing``: compute C_fft in
    full now (rectangular layers always do: their update reads it whole); square
    layers otherwise compute the parts a method asks for. ``drift``: D_fft itself, in
    ``dtype`` on ``device`` (a tensor the state may keep, or a ``factorization.LowRank``), in
    place of W_t (a target given as the base plus distillation LoRAs). ``cache``: see ``analyse_base``.
    """
    base = analyse_base(name, W_s, dtype=dtype, device=device, exact=exact, cache=cache)
    return pair_state(base, W_t, spectra=spectra, consume=consume, full_routing=full_routing, drift=drift)


@dataclass
class LoraState:
    """One LoRA's layer in the pair's basis."""
    up: torch.Tensor                  # s * B (tall orientation)
    down: torch.Tensor                # A
    UtB: torch.Tensor                 # U^T up (p x r)
    C_lora: torch.Tensor              # U^T up down V (p x p)
    scale: float
    rank_in: int
    sigma_merged: torch.Tensor | None = None


def lora_factors(pair: PairState, B, A, scale: float):
    """The LoRA's factors (s * B, A) in the pair's dtype, device and (tall) orientation."""
    dtype, device = pair.sigma.dtype, pair.sigma.device
    Bm = B.reshape(B.shape[0], -1).to(device=device, dtype=dtype) * scale
    Am = A.reshape(A.shape[0], -1).to(device=device, dtype=dtype)
    return (Am.T, Bm.T) if pair.transposed else (Bm, Am)


def analyse_lora(pair: PairState, B, A, scale: float, *, spectra: bool = False) -> LoraState:
    """Step 2 of the rule: the LoRA's routing C_lora in the base's basis (scale folded in)."""
    Bm, Am = lora_factors(pair, B, A, scale)
    UtB = pair.left_t(Bm)
    C_lora = UtB @ (Am @ pair.V)
    merged = torch.linalg.svdvals(pair.Ws + Bm @ Am) if spectra else None
    return LoraState(Bm, Am, UtB, C_lora, scale, B.shape[1] if B.dim() > 1 else 1, merged)


@dataclass(frozen=True)
class LayerEffect:
    """What the converted layer does with the LoRA and with the drift (docs/method.md, "What a converted
    layer does"). The shares split the LoRA's routing energy ``||C_lora||_F^2`` (its update in the base's
    singular basis, the p x p grid) by what the method did with each entry; they add up to 1, and are
    None where a method makes no such split (``projection``)."""
    lora_restored_share: float | None   # routed like base + LoRA: the drift taken out there, the LoRA as it was
    lora_capped_share: float | None     # capped at the larger of LoRA and drift
    lora_reused_share: float | None     # the LoRA reused on top of the drift
    drift_undone: float | None          # <D_lora - D, D_fft> / ||D_fft||_F^2: 1 undoes the distillation, 0 keeps
                                        # it (None when the target equals the base)

    def figures(self) -> dict:
        """The run report's names (``lora_*_share``: shares of the LoRA's energy, not of the grid's entries)."""
        return {name: None if getattr(self, name) is None else round(float(getattr(self, name)), 6)
                for name in ("lora_restored_share", "lora_capped_share", "lora_reused_share", "drift_undone")}

    def summary(self) -> str:
        def f(v):
            return "-" if v is None else f"{v:.2f}"

        shares = "" if self.lora_restored_share is None else (
            f"restored/capped/reused={f(self.lora_restored_share)}/{f(self.lora_capped_share)}/"
            f"{f(self.lora_reused_share)} ")
        return f"{shares}undone={f(self.drift_undone)}"


@dataclass
class LayerResult:
    """What one transferred layer yields: factors, figures, and what the GUI draws."""
    name: str
    shape: tuple[int, int]
    settings: object                  # the TransferSettings it was computed with
    rank_in: int
    rank_out: int
    scale: float
    energy_kept: float
    drift: float | None               # None where the method does not read the models
    up: torch.Tensor                  # out x r' (CPU)
    down: torch.Tensor                # r' x in (CPU)
    diagnostics: object | None = None     # the method's typed per-layer figures
    views: object | None = None           # the method's pictures (views.LayerViews for CASA)
    solver: str | None = None
    stages: dict = field(default_factory=dict)
    effect: LayerEffect | None = None     # what the converted layer does (None: not known for the method)
    energy_curve: np.ndarray | None = None    # share of ||D||_F^2 the best rank r keeps, r = 1..len (known part)
    update_sq: float | None = None        # ||D||_F^2 of the dense update
    rank_capped: bool | None = None       # auto rank only: the cap stopped it short of its fraction
    routing: tuple | None = None          # (pooled U^T D V of the written factors, block edge): views only

    @classmethod
    def of(cls, name, shape, settings, rank_in, scale, drift, fac, up, down, **kw) -> LayerResult:
        """A result from the factorization's ``Factors`` (its energy figures) and the oriented factors."""
        return cls(name, tuple(shape), settings, rank_in, up.shape[1], scale, fac.energy_kept, drift, up, down,
                   energy_curve=fac.curve, update_sq=fac.total_sq, rank_capped=fac.rank_capped, **kw)

    @property
    def method(self) -> str:
        return self.settings.method

    @property
    def seconds(self) -> float:
        return float(sum(self.stages.values()))

    def figures(self) -> dict:
        """The per-layer figures of the run report."""
        diag = self.diagnostics.figures() if self.diagnostics is not None else {}
        return {
            "shape": list(self.shape), "method": self.method, "rank_in": self.rank_in,
            "rank_out": self.rank_out, "scale": self.scale, **diag,
            **(self.effect.figures() if self.effect is not None else {}),
            "energy_kept": round(self.energy_kept, 6),
            **({} if self.rank_capped is None else {"rank_capped": self.rank_capped}),
            "drift": None if self.drift is None or np.isnan(self.drift) else round(self.drift, 6),
            "seconds": round(self.seconds, 4),
            "stages": {k: round(v, 4) for k, v in self.stages.items()},
            "settings": self.settings.to_dict(),
        }

    def summary(self) -> str:
        """One line of figures for progress output."""
        diag = self.diagnostics.summary() + " " if self.diagnostics is not None else ""
        effect = self.effect.summary() + " " if self.effect is not None else ""
        return (f"{'x'.join(map(str, self.shape))} rank={self.rank_out} {diag}{effect}energy={self.energy_kept:.3f} "
                f"{self.seconds:.2f}s")
