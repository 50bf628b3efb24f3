"""LoHa and LoKr layers (LyCORIS, PEFT) as exact low-rank factors ``B @ A`` of their full update.

LoHa: ``dW = (w1a @ w1b) * (w2a @ w2b)``. Row-wise Khatri-Rao products give it exactly
with rank ``r1 * r2``: ``B[i, (a, b)] = w1a[i, a] w2a[i, b]``, ``A[(a, b), j] = w1b[a, j] w2b[b, j]``.
LoKr: ``dW = kron(W1, W2)``, and ``kron(B1 A1, B2 A2) = kron(B1, B2) @ kron(A1, A2)``; a full
``W1`` or ``W2`` is split as ``W @ I`` or ``I @ W``, whichever is thinner. Where that rank
would exceed ``min(out, in)`` the dense update is used with an identity on its short side.
So the engine sees an ordinary pair; the converted layer is written as a standard LoRA.

Tucker-decomposed (conv) variants are not materialised: their keys pass through.
A layer's scale is its ``.alpha`` (kohya's key) over its ``dim``, or from PEFT's config;
LyCORIS' DoRA (``.dora_scale``) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import kohya

ALPHA = kohya.ALPHA
MARKERS = (".hada_w1", ".hada_w2", ".lokr_w1", ".lokr_w2")
DORA = ".dora_scale"
LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
TUCKER = ("hada_t1", "hada_t2", "lokr_t1", "lokr_t2")


@dataclass(frozen=True)
class Adapter:
    """One LoHa or LoKr layer as the file holds it."""
    kind: str                      # "loha" or "lokr"
    prefix: str
    parts: dict                    # part name (hada_w1_a ...) -> key
    out_features: int
    in_features: int
    rank: int                      # rank of the exact factors handed to the engine
    dim: int | None                # the rank ``alpha`` is divided by (LyCORIS convention), if any
    widths: tuple[int, int] = (0, 0)   # inner widths of the two halves; their product is the exact split's

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.parts.values())


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def find(keys, shape) -> list[Adapter]:
    """Every 2-D LoHa / LoKr layer among ``keys``; ``shape(key)`` gives header shapes."""
    groups: dict[str, dict[str, str]] = {}
    for key in keys:
        prefix, _, part = key.rpartition(".")
        if part in LOHA or part in LOKR or part in TUCKER:
            groups.setdefault(prefix, {})[part] = key
    out = []
    for prefix, parts in groups.items():
        if any(p in parts for p in TUCKER):
            continue
        adapter = _loha(prefix, parts, shape) if "hada_w1_a" in parts else _lokr(prefix, parts, shape)
        if adapter is not None:
            out.append(adapter)
    return out


def _loha(prefix, parts, shape) -> Adapter | None:
    if not all(p in parts for p in LOHA):
        return None
    w1a, w1b, w2a, w2b = (shape(parts[p]) for p in LOHA)
    if not all(len(s) == 2 for s in (w1a, w1b, w2a, w2b)) or w1a[0] != w2a[0] or w1b[1] != w2b[1] \
            or w1a[1] != w1b[0] or w2a[1] != w2b[0]:
        return None
    m, n = w1a[0], w1b[1]
    return Adapter("loha", prefix, dict(parts), m, n, min(w1a[1] * w2a[1], m, n), w1b[0], (w1a[1], w2a[1]))


def _side(parts, i, shape):
    """(rows, cols, rank of its thin split, decomposed rank or None) of W1 or W2; None if absent."""
    full, a, b = f"lokr_w{i}", f"lokr_w{i}_a", f"lokr_w{i}_b"
    if full in parts:
        s = shape(parts[full])
        return (s[0], s[1], min(s), None) if len(s) == 2 else None
    if a in parts and b in parts:
        sa, sb = shape(parts[a]), shape(parts[b])
        if len(sa) == 2 and len(sb) == 2 and sa[1] == sb[0]:
            return sa[0], sb[1], sa[1], sb[0]
    return None


def _lokr(prefix, parts, shape) -> Adapter | None:
    s1, s2 = _side(parts, 1, shape), _side(parts, 2, shape)
    if s1 is None or s2 is None:
        return None
    m, n = s1[0] * s2[0], s1[1] * s2[1]
    # ComfyUI / LyCORIS: alpha is divided by w2_b's rank if W2 is split, else by w1_b's
    dim = s2[3] if s2[3] is not None else s1[3]
    return Adapter("lokr", prefix, dict(parts), m, n, min(s1[2] * s2[2], m, n), dim, (s1[2], s2[2]))


def factors(adapter: Adapter, read):
    """Exact ``(B, A)`` with ``B @ A`` = the adapter's update (scale not applied)."""
    import torch

    def get(part):
        t = read(adapter.parts[part])
        return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)

    m, n = adapter.out_features, adapter.in_features
    # the width of the exact split is known from the header: where it would be wider than the matrix
    # itself (up to r1 * r2 columns), the dense update is built instead, never the wide factors
    wide = _width(adapter) > min(m, n)
    if adapter.kind == "loha":
        w1a, w1b, w2a, w2b = (get(p) for p in LOHA)
        if wide:
            dense = (w1a @ w1b) * (w2a @ w2b)
        else:
            B = (w1a[:, :, None] * w2a[:, None, :]).reshape(w1a.shape[0], -1)
            A = (w1b[:, None, :] * w2b[None, :, :]).reshape(-1, w1b.shape[1])
    else:
        B1, A1 = _split(adapter, 1, get)
        B2, A2 = _split(adapter, 2, get)
        if wide:
            dense = torch.kron(B1 @ A1, B2 @ A2)
        else:
            B, A = torch.kron(B1, B2), torch.kron(A1, A2)
    if not wide:
        return B.contiguous(), A.contiguous()
    eye = torch.eye(min(m, n), dtype=dense.dtype)
    return (dense, eye) if n <= m else (eye, dense)


def _width(adapter: Adapter) -> int:
    """The number of columns of the exact split ``B`` (before any dense fallback), from the parts' shapes."""
    return adapter.widths[0] * adapter.widths[1]


def _split(adapter, i, get):
    import torch

    full = f"lokr_w{i}"
    if full in adapter.parts:
        w = get(full)
        p, q = w.shape
        return (w, torch.eye(q, dtype=w.dtype)) if q <= p else (torch.eye(p, dtype=w.dtype), w)
    return get(f"lokr_w{i}_a"), get(f"lokr_w{i}_b")
