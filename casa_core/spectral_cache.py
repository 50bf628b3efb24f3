"""A persistent cache of base layers' thin singular bases (``--cache DIR``).

The base's basis (``layers.analyse_base``: the Gram matrix, its float64 eigensolver, U or not)
is the largest part of a conversion on the CPU and depends on the base weight only. The cache
keeps it on disk, one safetensors file per layer, named by the sha256 of the weight's bytes as
the run computes with them (its working dtype, so the same file read again, or another file
holding the same tensor, gives the same key) and of what the result depends on besides: the
working dtype, whether the run is exact, the device kind, torch's version and this package's.
A later conversion or batch on the same base reads U, sigma and V back instead of
decomposing: the same tensors, so the same output bytes.

Entries are written through a temporary file and a rename; the least recently used go when the
cache outgrows its size limit. ``describe`` says how many entries and bytes it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CasaError

SUFFIX = ".basis.safetensors"
_OPEN: dict = {}
_OPEN_LOCK = threading.Lock()
DEFAULT_LIMIT_GB = 20.0


def check_limit(limit_gb) -> None:
    """A cache size limit is a positive number of GB, or None (no limit)."""
    if limit_gb is not None and not (isinstance(limit_gb, int | float) and limit_gb > 0):
        raise CasaError(f"the cache size limit must be a positive number of GB, got {limit_gb!r}",
                        f"e.g. {DEFAULT_LIMIT_GB:g}", setting="cache_limit", example=f"{DEFAULT_LIMIT_GB:g}")


def _strided(t, stride, device):
    """``t`` on ``device`` with the strides it was computed with (a transposed layout stays transposed)."""
    import torch

    stride = tuple(t.stride() if stride is None else stride)
    out = torch.empty_strided(tuple(t.shape), stride, dtype=t.dtype, device=device)
    out.copy_(t)
    return out


@dataclass
class SpectralCache:
    """A folder of cached bases, at most ``limit_bytes`` of them (None: no limit)."""
    folder: Path
    limit_bytes: int | None = int(DEFAULT_LIMIT_GB * 1e9)
    hits: int = 0
    stored: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, folder, limit_gb: float | None = DEFAULT_LIMIT_GB) -> SpectralCache:
        """The cache of ``folder`` (one object per folder in a process, so its counts add up over runs)."""
        folder = Path(folder)
        key = (os.path.abspath(folder), limit_gb)
        with _OPEN_LOCK:
            if key not in _OPEN:
                _OPEN[key] = cls._make(folder, limit_gb)
            return _OPEN[key]

    @classmethod
    def _make(cls, folder: Path, limit_gb: float | None) -> SpectralCache:
        check_limit(limit_gb)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CasaError(f"cannot use cache folder {folder}: {exc.strerror or exc}",
                            "pick a folder you can write to", setting="cache") from None
        if not os.access(folder, os.W_OK):
            raise CasaError(f"cache folder {folder} cannot be written", "pick a folder you can write to",
                            setting="cache")
        return cls(folder, None if limit_gb is None else int(limit_gb * 1e9))

    @staticmethod
    def key(Ws, exact: bool) -> str:
        """What a basis depends on: the weight's bytes (working dtype), shape, precision, device, versions."""
        import torch

        from . import __version__

        t = Ws.detach().contiguous().cpu()
        h = hashlib.sha256(f"{list(t.shape)}|{t.dtype}|{exact}|{Ws.device.type}|{torch.__version__}|"
                           f"{__version__}|".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def get(self, key: str, device):
        """(U or None, sigma, V, solver) for ``key``, on ``device``; None when it is not cached (or unreadable)."""
        from safetensors import SafetensorError, safe_open

        path = self._path(key)
        try:
            with safe_open(path, "pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            os.utime(path)                       # recently used
        except (OSError, SafetensorError, ValueError):
            return None
        if "sigma" not in tensors or "V" not in tensors:
            return None
        try:
            strides = json.loads(meta.get("strides", "{}"))
            out = {k: _strided(t, strides.get(k), device) for k, t in tensors.items()}
        except (ValueError, TypeError, RuntimeError):
            return None
        with self._lock:
            self.hits += 1
        return out.get("U"), out["sigma"], out["V"], meta.get("solver", "")

    def put(self, key: str, U, sigma, V, solver: str) -> None:
        """Keep a basis (best effort: a full disk or a read-only folder only means no cache)."""
        from . import stwriter
        from .outputs import atomic_write

        given = {"sigma": sigma, "V": V} | ({"U": U} if U is not None else {})
        tensors = {k: t.detach().cpu() for k, t in given.items()}
        # the layout too: the products that follow see the same tensors, strides included
        meta = {"solver": solver, "strides": json.dumps({k: list(t.stride()) for k, t in given.items()})}
        try:
            atomic_write(self._path(key), lambda fh: stwriter.write(tensors, fh, meta), "cache entry")
        except CasaError:
            return
        with self._lock:
            self.stored += 1
            self._evict()

    def entries(self) -> list[os.DirEntry]:
        try:
            return [e for e in os.scandir(self.folder) if e.name.endswith(SUFFIX) and e.is_file()]
        except OSError:
            return []

    def size(self) -> tuple[int, int]:
        """(entries, bytes)."""
        sizes = []
        for e in self.entries():
            try:
                sizes.append(e.stat().st_size)
            except OSError:
                pass
        return len(sizes), sum(sizes)

    def _evict(self) -> None:
        """Remove the least recently used entries until the cache fits its limit."""
        if self.limit_bytes is None:
            return
        found = []
        for e in self.entries():
            try:
                st = e.stat()
            except OSError:
                continue
            found.append((st.st_mtime_ns, st.st_size, e.path))
        total = sum(s for _, s, _ in found)
        for _, size, path in sorted(found):
            if total <= self.limit_bytes:
                break
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass

    def describe(self) -> str:
        n, size = self.size()
        limit = "no limit" if self.limit_bytes is None else f"limit {self.limit_bytes / 1e9:.1f} GB"
        return (f"spectral cache {self.folder}: {n} bases, {size / 1e9:.2f} GB ({limit}); this run read {self.hits}, "
                f"stored {self.stored}")
