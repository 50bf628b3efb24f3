"""Synthetic Wan2.1-T2V checkpoints for benchmarking CASA Studio.

Writes three files shaped like the real thing:

* ``base.safetensors``   a Wan2.1-T2V model (1.3B or 14B shapes), original names;
* ``target.safetensors`` a "distilled" variant: base plus a 2-5 % drift per
  tensor, part of it reshaping each weight's dominant singular directions
  (or, with ``target_layout='diffusers'``, a ``target/`` folder in the
  diffusers layout, sharded, with ``model_index.json``);
* ``lora.safetensors``   a ComfyUI-format LoRA on the 10 linears of every
  block (``diffusion_model.<module>.lora_A.weight`` / ``.lora_B.weight`` /
  ``.alpha``).

Weight matrices get a trained-looking spectrum (power-law decay with a few
clusters of nearly equal singular values) without any SVD: each matrix is
``Q1 diag(sigma) Q2^T`` with exactly orthonormal factors drawn from a small
pool of random orthonormal bases by random row/column permutations and
signs. Files are written by a streaming safetensors writer, one tensor at a
time, so memory stays bounded by the largest layer (plus the pool).

Every tensor is drawn from its own ``torch.Generator`` seeded from
``(seed, tensor name)``, so a run is deterministic, independent of layout,
and ``blocks=N`` yields exactly the first N blocks of the full model.

Usage::

    python benchmarks/make_synthetic.py OUTDIR [--size 1.3b|14b] [--blocks N]
        [--rank 32] [--alpha A] [--seed 0] [--dtype bf16]
        [--target-layout original|diffusers] [--shard-mb 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from casa_core import dtypes
from casa_core.families import wan

__all__ = [
    "SIZES",
    "BLOCK_LINEARS",
    "ModelSpec",
    "Param",
    "make_synthetic",
    "wan_params",
    "to_diffusers_name",
    "StreamingSafetensorsWriter",
    "main",
]


@dataclass(frozen=True)
class ModelSpec:
    """Wan2.1-T2V hyper-parameters needed to lay out the weights."""

    dim: int
    ffn_dim: int
    num_blocks: int
    num_heads: int
    text_dim: int = 4096
    freq_dim: int = 256
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)


SIZES: dict[str, ModelSpec] = {
    "1.3b": ModelSpec(dim=1536, ffn_dim=8960, num_blocks=30, num_heads=12),
    "14b": ModelSpec(dim=5120, ffn_dim=13824, num_blocks=40, num_heads=40),
}

# The 10 linears of a block, in original Wan names (relative to ``blocks.N.``).
BLOCK_LINEARS: tuple[str, ...] = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "ffn.0", "ffn.2",
)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "f16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}

_ENTRY_STD = 0.02  # RMS of a weight matrix's entries (typical of trained transformers)
_NOISE_CHUNK = 1 << 22  # elements of target noise drawn at a time


# --------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class Param:
    """One tensor of the model: original name, shape, and how to generate it.

    ``kind`` is ``"linear"`` (a 2-D weight, or the conv weight treated as
    ``out x prod(rest)``), ``"bias"``, ``"norm"`` (scale around 1) or
    ``"modulation"``. ``lora`` marks block linears that get a LoRA.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    lora: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def wan_params(spec: ModelSpec, blocks: int | None = None) -> list[Param]:
    """Every tensor of a Wan2.1-T2V model in generation (and file) order.

    ``blocks`` keeps only the first N transformer blocks; the layers outside
    the blocks are always included.
    """
    D, F = spec.dim, spec.ffn_dim
    n_blocks = spec.num_blocks if blocks is None else blocks
    if not 0 <= n_blocks <= spec.num_blocks:
        raise ValueError(f"blocks must be in [0, {spec.num_blocks}], got {blocks}")
    out: list[Param] = []

    def linear(name: str, o: int, i: int, lora: bool = False) -> None:
        out.append(Param(f"{name}.weight", (o, i), "linear", lora))
        out.append(Param(f"{name}.bias", (o,), "bias"))

    out.append(Param("patch_embedding.weight", (D, spec.in_channels, *spec.patch_size), "linear"))
    out.append(Param("patch_embedding.bias", (D,), "bias"))
    linear("text_embedding.0", D, spec.text_dim)
    linear("text_embedding.2", D, D)
    linear("time_embedding.0", D, spec.freq_dim)
    linear("time_embedding.2", D, D)
    linear("time_projection.1", 6 * D, D)
    for b in range(n_blocks):
        p = f"blocks.{b}"
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                linear(f"{p}.{attn}.{proj}", D, D, lora=True)
            out.append(Param(f"{p}.{attn}.norm_q.weight", (D,), "norm"))
            out.append(Param(f"{p}.{attn}.norm_k.weight", (D,), "norm"))
        out.append(Param(f"{p}.norm3.weight", (D,), "norm"))
        out.append(Param(f"{p}.norm3.bias", (D,), "bias"))
        linear(f"{p}.ffn.0", F, D, lora=True)
        linear(f"{p}.ffn.2", D, F, lora=True)
        out.append(Param(f"{p}.modulation", (1, 6, D), "modulation"))
    linear("head.head", spec.out_channels * math.prod(spec.patch_size), D)
    out.append(Param("head.modulation", (1, 2, D), "modulation"))
    return out


def to_diffusers_name(name: str) -> str:
    """Map an original Wan2.1 tensor name to its diffusers name (casa_core.families.wan's table)."""
    module, param = wan.split_param(name)
    out = wan.to_diffusers(module)
    return f"{out}.{param}" if param else out


# --------------------------------------------------------------------------
# Streaming safetensors writer


class StreamingSafetensorsWriter:
    """Writes a safetensors file one tensor at a time.

    The header is computed up front from ``entries`` (name, dtype, shape);
    tensors must then be passed to :meth:`write` in exactly that order.
    :meth:`close` raises if any tensor is missing. The result is a standard
    safetensors file (8-byte little-endian header length, space-padded JSON
    header aligned to 8 bytes, raw little-endian data in header order).
    """

    def __init__(
        self,
        path: str | Path,
        entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._entries = entries
        self._next = 0
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for name, dtype, shape in entries:
            if name in header:
                raise ValueError(f"duplicate tensor name {name!r}")
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {
                "dtype": dtypes.tag(dtype),
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        self.data_bytes = offset
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._f = open(self.path, "wb")
        self._f.write(struct.pack("<Q", len(raw)))
        self._f.write(raw)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor``; it must be the next entry, with its dtype and shape."""
        if self._next >= len(self._entries):
            raise ValueError(f"unexpected tensor {name!r}: all entries written")
        exp_name, exp_dtype, exp_shape = self._entries[self._next]
        if (name, tensor.dtype, tuple(tensor.shape)) != (exp_name, exp_dtype, tuple(exp_shape)):
            raise ValueError(
                f"expected {exp_name} {exp_dtype} {tuple(exp_shape)}, "
                f"got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        t = tensor.detach().to("cpu").contiguous()
        # numpy has no bfloat16; a byte view writes the same bits (x86/ARM are little-endian).
        self._f.write(t.reshape(-1).view(torch.uint8).numpy())
        self._next += 1

    def close(self) -> None:
        """Close the file; raises if some declared tensors were never written."""
        self._f.close()
        if self._next != len(self._entries):
            missing = self._entries[self._next][0]
            raise RuntimeError(f"{self.path}: {len(self._entries) - self._next} tensors "
                               f"not written (first: {missing})")

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()


class _ShardedWriter:
    """Spreads an ordered list of tensors over consecutive shards of ~shard_bytes."""

    def __init__(self, folder: Path, entries, shard_bytes: int, metadata: dict[str, str]):
        groups: list[list] = [[]]
        size = 0
        for e in entries:
            nbytes = math.prod(e[2]) * torch.empty((), dtype=e[1]).element_size()
            if groups[-1] and size + nbytes > shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append(e)
            size += nbytes
        n = len(groups)
        self._groups = [
            (folder / f"diffusion_pytorch_model-{i + 1:05d}-of-{n:05d}.safetensors", g)
            for i, g in enumerate(groups)
        ]
        self._metadata = metadata
        self._shard = -1
        self._left = 0
        self._writer: StreamingSafetensorsWriter | None = None
        self.weight_map = {e[0]: p.name for p, g in self._groups for e in g}
        self.total_size = sum(
            math.prod(e[2]) * torch.empty((), dtype=e[1]).element_size() for e in entries
        )

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._left == 0:
            if self._writer is not None:
                self._writer.close()
            self._shard += 1
            path, group = self._groups[self._shard]
            self._writer = StreamingSafetensorsWriter(path, group, self._metadata)
            self._left = len(group)
        self._writer.write(name, tensor)
        self._left -= 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._shard != len(self._groups) - 1 or self._left:
            raise RuntimeError("sharded writer closed before all tensors were written")

    def __enter__(self) -> _ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)


# --------------------------------------------------------------------------
# Random tensors


def _generator(seed: int, *parts: str) -> torch.Generator:
    # Seeding per tensor name (rather than one stream) keeps values identical
    # whatever the layout, the order, or how many blocks are requested.
    h = hashlib.blake2b(":".join((str(seed), *parts)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") >> 1)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


class _OrthoPool:
    """Random orthonormal bases, one per row count, drawn once by QR.

    ``requests`` lists every ``(n, k)`` that :meth:`sample` will be asked for.
    A pooled ``n x kmax`` basis with its rows permuted, columns permuted (or
    subsampled) and signs flipped is still exactly orthonormal and, marginally,
    as random as a fresh one; this costs a copy instead of a QR per layer.
    Row counts that are a multiple ``m * b`` of another pooled size ``b``
    (``time_projection``'s 6D) are built by stacking ``m`` independent ``b x b``
    samples scaled by ``1/sqrt(m)``, which is exactly orthonormal too and
    avoids the slowest QR of all. Bases are freed after their last use.
    """

    def __init__(self, seed: int, requests: list[tuple[int, int]]):
        self._seed = seed
        self._width: dict[int, int] = {}
        for n, k in requests:
            self._width[n] = max(self._width.get(n, 0), k)
        self._stack: dict[int, int] = {}  # n -> b it is stacked from
        for n, k in self._width.items():
            divisors = [b for b in self._width if b < n and n % b == 0 and k <= b]
            if divisors:
                self._stack[n] = max(divisors)
        for b in self._stack.values():
            self._width[b] = b
        self._uses: dict[int, int] = {}
        for n, _ in requests:
            b = self._stack.get(n, n)
            self._uses[b] = self._uses.get(b, 0) + n // b
        self._bases: dict[int, torch.Tensor] = {}

    def _draw(self, n: int, g: torch.Generator) -> torch.Tensor:
        basis = self._bases.get(n)
        if basis is None:
            pg = _generator(self._seed, "pool", str(n))
            basis = torch.linalg.qr(torch.randn(n, self._width[n], generator=pg)).Q
            self._bases[n] = basis
        k = basis.shape[1]
        rows = torch.randperm(n, generator=g)
        cols = torch.randperm(k, generator=g)
        q = basis.index_select(0, rows).index_select(1, cols)
        q *= torch.randint(0, 2, (k,), generator=g).mul_(2).sub_(1).to(q.dtype)
        self._uses[n] -= 1
        if self._uses[n] == 0:
            del self._bases[n]
        return q

    def sample(self, n: int, k: int, g: torch.Generator) -> torch.Tensor:
        """An ``n x k`` matrix with exactly orthonormal columns (up to float32)."""
        b = self._stack.get(n)
        if b is None:
            return self._draw(n, g)[:, :k].contiguous()
        m = n // b
        q = torch.empty(n, b)
        for i in range(m):
            q[i * b:(i + 1) * b] = self._draw(b, g)
        return q[:, :k].div_(math.sqrt(m)).contiguous()


def _spectrum(k: int, fro: float, g: torch.Generator) -> torch.Tensor:
    """Descending singular values: ~i^-p power law, a few near-degenerate clusters,
    scaled so that their root-sum-square (the Frobenius norm) is ``fro``."""
    p = _uniform(g, 0.4, 0.6)
    i = torch.arange(1, k + 1, dtype=torch.float64)
    sigma = i.pow(-p) * (1 + 0.02 * torch.randn(k, generator=g, dtype=torch.float64)).clamp_min(0.5)
    sigma, _ = sigma.sort(descending=True)
    # Clusters of nearly equal singular values (relative spread ~1e-4) make the
    # matching singular vectors ill-determined, as in real weights.
    n_clusters = min(4, k // 8)
    head = min(k, 96)
    for c in range(n_clusters):
        size = int(torch.randint(2, 7, (), generator=g))
        start = int(torch.randint(0, max(1, head - size), (), generator=g))
        if c == 0 and float(torch.rand((), generator=g)) < 0.5:
            start = 0  # often the top singular values themselves are nearly tied
        seg = sigma[start:start + size]
        seg.copy_(seg.mean() * (1 + 1e-4 * torch.randn(seg.numel(), generator=g, dtype=torch.float64)))
    sigma, _ = sigma.sort(descending=True)
    return (sigma * (fro / sigma.norm())).to(torch.float32)


def _matrix_pair(out_f: int, in_f: int, pool: _OrthoPool, g: torch.Generator):
    """Base weight ``W = Q1 diag(sigma) Q2^T`` and its distilled counterpart.

    The target adds a drift of relative Frobenius size 2-5 %: most of it
    perturbs the top singular triplets (rotating them within and out of the
    dominant subspace), the rest is dense Gaussian noise. Returns
    ``(W, W_target)`` as float32.
    """
    k = min(out_f, in_f)
    fro = _ENTRY_STD * _uniform(g, 0.8, 1.25) * math.sqrt(out_f * in_f)
    sigma = _spectrum(k, fro, g)
    q1 = pool.sample(out_f, k, g)
    q2 = pool.sample(in_f, k, g)
    kd = min(k, 32)
    u, v, s = q1[:, :kd].clone(), q2[:, :kd].clone(), sigma[:kd]
    w = q1.mul_(sigma) @ q2.T  # q1 is a private copy: scaling it in place saves a full-size temporary
    del q1, q2

    du = u @ torch.randn(kd, kd, generator=g).div_(math.sqrt(kd))
    du += torch.randn(out_f, kd, generator=g).div_(math.sqrt(out_f))
    dv = v @ torch.randn(kd, kd, generator=g).div_(math.sqrt(kd))
    dv += torch.randn(in_f, kd, generator=g).div_(math.sqrt(in_f))
    drift = (du * s) @ v.T
    drift.addmm_(u * s, dv.T)
    rho = _uniform(g, 0.02, 0.05)
    share = _uniform(g, 0.6, 0.85)  # fraction of the drift's energy in the dominant directions
    drift *= rho * math.sqrt(share) * fro / float(drift.norm())
    noise_std = rho * math.sqrt(1 - share) * fro / math.sqrt(out_f * in_f)
    rows = max(1, _NOISE_CHUNK // in_f)  # chunked so no second full-size buffer is needed
    for r in range(0, out_f, rows):
        chunk = drift[r:r + rows]
        chunk.add_(torch.randn(chunk.shape, generator=g), alpha=noise_std)
    drift += w
    return w, drift


def _vector_pair(p: Param, dim: int, g: torch.Generator):
    """Base and target for a bias / norm / modulation tensor (float32)."""
    if p.kind == "bias":
        base = torch.randn(p.shape, generator=g) * (_ENTRY_STD * _uniform(g, 0.25, 1.0))
    elif p.kind == "norm":
        base = 1 + 0.1 * torch.randn(p.shape, generator=g)
    elif p.kind == "modulation":
        base = torch.randn(p.shape, generator=g) / math.sqrt(dim)
    else:
        raise ValueError(p.kind)
    rho = _uniform(g, 0.02, 0.05)
    noise = torch.randn(p.shape, generator=g)
    target = base + noise * (rho * float(base.norm()) / math.sqrt(base.numel()))
    return base, target


def _lora_pair(w: torch.Tensor, rank: int, scale: float, g: torch.Generator):
    """LoRA factors ``A (rank x in)``, ``B (out x rank)`` with
    ``||scale * B @ A||_F / ||W||_F`` drawn from [1 %, 3 %] (exact in float32)."""
    out_f, in_f = w.shape
    a = torch.randn(rank, in_f, generator=g).div_(math.sqrt(in_f))
    decay = torch.arange(1, rank + 1, dtype=torch.float32).pow_(-0.5)
    b = torch.randn(out_f, rank, generator=g) * decay
    # ||B A||_F^2 = tr((B^T B)(A A^T)): r x r, no out x in product needed.
    norm_ba = math.sqrt(float(((b.T @ b) * (a @ a.T)).sum()))
    rel = _uniform(g, 0.01, 0.03)
    b *= rel * float(w.norm()) / (scale * norm_ba)
    return a, b


# --------------------------------------------------------------------------
# Driver


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}")
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}") from None


def make_synthetic(
    outdir: str | Path,
    size: str = "1.3b",
    blocks: int | None = None,
    rank: int = 32,
    alpha: float | None = None,
    seed: int = 0,
    dtype: str | torch.dtype = torch.bfloat16,
    target_layout: str = "original",
    shard_bytes: int = 2_000_000_000,
    lora_dtype: str | torch.dtype = torch.bfloat16,
) -> dict[str, Path]:
    """Write a synthetic base, distilled target and LoRA under ``outdir``.

    ``size`` is ``"1.3b"`` or ``"14b"``; ``blocks`` keeps only the first N
    blocks (outside-block layers are always written). ``alpha`` defaults to
    ``rank`` (scale 1). ``dtype`` applies to base and target, ``lora_dtype``
    to the LoRA factors (alphas are float32 scalars). With
    ``target_layout="diffusers"`` the target is a folder ``outdir/target``
    (``model_index.json``, ``transformer/config.json``, shards of at most
    ``shard_bytes`` plus ``diffusion_pytorch_model.safetensors.index.json``,
    always indexed even with one shard).

    Same arguments and seed give the same tensor values on the same torch
    build. Returns ``{"base", "target", "lora"}`` -> path (``target`` is the
    folder for the diffusers layout). Overwrites existing files.
    """
    if size.lower() not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if target_layout not in ("original", "diffusers"):
        raise ValueError(f"target_layout must be 'original' or 'diffusers', got {target_layout!r}")
    spec = SIZES[size.lower()]
    dt, lora_dt = _parse_dtype(dtype), _parse_dtype(lora_dtype)
    if not 1 <= rank <= spec.dim:
        raise ValueError(f"rank must be in [1, {spec.dim}], got {rank}")
    alpha = float(rank if alpha is None else alpha)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    scale = alpha / rank

    params = wan_params(spec, blocks)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    n_blocks = spec.num_blocks if blocks is None else blocks
    arch = f"wan2.1-t2v-{size.lower()}"
    meta = {"format": "pt", "generator": "benchmarks/make_synthetic.py", "seed": str(seed),
            "size": size.lower(), "blocks": str(n_blocks)}

    model_entries = [(p.name, dt, p.shape) for p in params]
    lora_entries = []
    for p in params:
        if p.lora:
            mod = "diffusion_model." + p.name[: -len(".weight")]
            out_f, in_f = p.shape
            lora_entries += [(f"{mod}.lora_A.weight", lora_dt, (rank, in_f)),
                             (f"{mod}.lora_B.weight", lora_dt, (out_f, rank)),
                             (f"{mod}.alpha", torch.float32, ())]

    requests = []  # the (rows, cols) of every orthonormal factor, in the order drawn
    for p in params:
        if p.kind == "linear":
            o, i = p.shape[0], p.numel // p.shape[0]
            requests += [(o, min(o, i)), (i, min(o, i))]
    pool = _OrthoPool(seed, requests)

    paths = {"base": outdir / "base.safetensors", "lora": outdir / "lora.safetensors"}
    if target_layout == "original":
        paths["target"] = outdir / "target.safetensors"
        target_name = lambda n: n  # noqa: E731
    else:
        paths["target"] = outdir / "target"
        tdir = paths["target"] / "transformer"
        tdir.mkdir(parents=True, exist_ok=True)
        for old in tdir.glob("diffusion_pytorch_model*.safetensors"):
            old.unlink()  # stale shards of another shard count would confuse loaders
        target_name = to_diffusers_name
    lora_meta = {
        "format": "pt", "generator": "benchmarks/make_synthetic.py", "seed": str(seed),
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": f"{arch}/lora",
        "modelspec.title": f"synthetic {arch} LoRA r{rank} seed{seed}",
        "rank": str(rank), "alpha": repr(alpha),
    }

    with contextlib.ExitStack() as stack:
        base_w = stack.enter_context(StreamingSafetensorsWriter(
            paths["base"], model_entries, {**meta, "role": "base"}))
        if target_layout == "original":
            target_w = stack.enter_context(StreamingSafetensorsWriter(
                paths["target"], model_entries, {**meta, "role": "target"}))
        else:
            target_w = stack.enter_context(_ShardedWriter(
                tdir, [(to_diffusers_name(n), d, s) for n, d, s in model_entries],
                shard_bytes, {**meta, "role": "target"}))
        lora_w = stack.enter_context(StreamingSafetensorsWriter(
            paths["lora"], lora_entries, lora_meta))

        for p in params:
            g = _generator(seed, p.name)
            if p.kind == "linear":
                o = p.shape[0]
                w, wt = _matrix_pair(o, p.numel // o, pool, g)
                if p.lora:
                    a, b = _lora_pair(w, rank, scale, _generator(seed, "lora", p.name))
                w, wt = w.reshape(p.shape), wt.reshape(p.shape)
            else:
                w, wt = _vector_pair(p, spec.dim, g)
            base_w.write(p.name, w.to(dt))
            target_w.write(target_name(p.name), wt.to(dt))
            del w, wt
            if p.lora:
                mod = "diffusion_model." + p.name[: -len(".weight")]
                lora_w.write(f"{mod}.lora_A.weight", a.to(lora_dt))
                lora_w.write(f"{mod}.lora_B.weight", b.to(lora_dt))
                lora_w.write(f"{mod}.alpha", torch.tensor(alpha, dtype=torch.float32))

    if target_layout == "diffusers":
        _write_diffusers_json(paths["target"], spec, n_blocks, target_w)
    return paths


def _write_diffusers_json(folder: Path, spec: ModelSpec, n_blocks: int, sharded: _ShardedWriter):
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.33.0",
        "transformer": ["diffusers", "WanTransformer3DModel"],
    }, indent=2) + "\n")
    (folder / "transformer" / "config.json").write_text(json.dumps({
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": "0.33.0",
        "patch_size": list(spec.patch_size),
        "num_attention_heads": spec.num_heads,
        "attention_head_dim": spec.dim // spec.num_heads,
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
        "text_dim": spec.text_dim,
        "freq_dim": spec.freq_dim,
        "ffn_dim": spec.ffn_dim,
        "num_layers": n_blocks,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    }, indent=2) + "\n")
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": sharded.total_size},
                    "weight_map": sharded.weight_map}, indent=2) + "\n")


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints a one-line summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--size", default="1.3b", choices=sorted(SIZES))
    ap.add_argument("--blocks", type=int, default=None, help="only the first N blocks")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: rank)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bf16", choices=sorted(_DTYPES))
    ap.add_argument("--target-layout", default="original", choices=("original", "diffusers"))
    ap.add_argument("--shard-mb", type=float, default=2000.0,
                    help="max diffusers shard size in MB (default 2000)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    try:
        paths = make_synthetic(args.outdir, size=args.size, blocks=args.blocks, rank=args.rank,
                               alpha=args.alpha, seed=args.seed, dtype=args.dtype,
                               target_layout=args.target_layout,
                               shard_bytes=int(args.shard_mb * 1e6))
    except ValueError as e:
        ap.error(str(e))
    dt = time.perf_counter() - t0
    spec = SIZES[args.size]
    params = wan_params(spec, args.blocks)
    n_lora = sum(p.lora for p in params)
    n_blocks = spec.num_blocks if args.blocks is None else args.blocks
    gb = lambda p: _tree_size(p) / 1e9  # noqa: E731
    print(f"{args.size} x{n_blocks} blocks seed={args.seed} {args.dtype}: "
          f"base {len(params)} tensors {gb(paths['base']):.2f} GB, "
          f"target ({args.target_layout}) {gb(paths['target']):.2f} GB, "
          f"lora {n_lora} modules r={args.rank} alpha={args.rank if args.alpha is None else args.alpha:g} "
          f"{gb(paths['lora']) * 1e3:.1f} MB -> {args.outdir} in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
