"""Lazy, read-one-tensor-at-a-time access to safetensors files and pickled checkpoints.

Only headers are read up front (checked entry by entry, bounded in size). Each
tensor is read on request with one seek and one read at the offsets its header
gave, through the file's one handle: no mapping of a multi-GB file stays in the
process, memory does not grow with model size, and a file of 10,000 tensors is not
parsed again for each of them. Pickled
checkpoints (``.pt``, ...) go through ``sources.pickled`` (weights-only, mapped).
A store can also hold derived tensors: computed on read from stored ones
(LoHa/LoKr factors), readable by key but never listed among the stored keys.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from . import dtypes
from .errors import CasaError

# The largest header read. safetensors itself allows 100 MB, but parsing that much JSON can take
# gigabytes (a real LoRA's or model's header, kohya's training metadata included, is well under
# 1 MiB), so a longer header is refused before any of it is read.
MAX_HEADER = 16 << 20


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like, read from a header."""
    file: Path
    key: str
    dtype: str                  # safetensors tag (casa_core.dtypes)
    shape: tuple[int, ...]
    offset: int = -1            # safetensors: where its bytes start in the file; -1: not a safetensors tensor
    nbytes: int = 0


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse a safetensors header: tensor infos and the ``__metadata__`` map.

    Raises CasaError for an empty, truncated or non-safetensors file, a header over
    ``MAX_HEADER`` bytes, and an entry whose dtype, shape or offsets are not what the
    format allows (the message names its key).
    """
    path = Path(path)
    bad = CasaError(f"{path} is not a readable safetensors file (empty, truncated or another format)",
                    "re-download it or pick the right file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise bad
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER and n <= size - 8:
                raise CasaError(f"{path} has a {n / (1 << 20):.0f} MiB header, over the {MAX_HEADER >> 20} MiB "
                                "a LoRA or model header can need", "the file is damaged or hostile; pick another")
            if n <= 1 or n > size - 8:
                raise bad
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, PermissionError):
            raise CasaError(f"cannot read {path}: permission denied", "check the file's permissions") from None
        raise bad from None
    if not isinstance(header, dict):
        raise bad
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CasaError(f"{path} has a malformed __metadata__ (it must map names to strings)",
                        "the file is damaged; re-download it or re-save it")
    infos: dict[str, TensorInfo] = {}
    data = 8 + n
    for key, h in header.items():
        infos[key] = _entry(path, key, h, data, size)
    return infos, dict(meta)


def _entry(path: Path, key: str, h, data: int, size: int) -> TensorInfo:
    """One header entry, checked: a known dtype, a shape of whole numbers, offsets that hold exactly it."""
    def refuse(what: str):
        return CasaError(f"tensor {key} in {path.name} has {what}", "the file is damaged; re-download it")

    if not isinstance(h, dict):
        raise refuse("no dtype, shape and offsets")
    dtype = dtypes.known(h.get("dtype"))
    if dtype is None:
        raise refuse(f"an unknown dtype {str(h.get('dtype'))[:20]!r}")
    shape, offsets = h.get("shape"), h.get("data_offsets")
    if not isinstance(shape, list) or not all(_int(d) and d >= 0 for d in shape):
        raise refuse(f"an invalid shape {str(shape)[:60]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise refuse(f"invalid data offsets {str(offsets)[:60]}")
    nbytes = dtype.bytes * math.prod(shape)
    if offsets[1] - offsets[0] != nbytes:
        raise refuse(f"a shape {shape} ({nbytes} bytes) its offsets ({offsets[1] - offsets[0]} bytes) do not hold")
    if data + offsets[1] > size:
        raise CasaError(f"{path} is truncated ({size} bytes, its header promises {data + offsets[1]})",
                        "re-download the file")
    return TensorInfo(path, key, dtype.tag, tuple(shape), data + offsets[0], nbytes)


class TensorStore:
    """A set of safetensors or pickled files seen as one lazy ``key -> tensor`` map."""

    def __init__(self, files):
        from .sources import pickled

        self.files = [Path(f) for f in files]
        self.infos: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self._pickled: dict[Path, pickled.PickledFile] = {}
        self._derived: dict[str, tuple[TensorInfo, object]] = {}
        self._handles: dict[Path, tuple] = {}
        self._open_lock = threading.Lock()
        for f in self.files:
            if pickled.is_pickled(f):
                pf = self._pickled[f] = pickled.PickledFile(f)
                infos = {k: TensorInfo(f, k, dtype, shape) for k, (dtype, shape) in pf.tensors.items()}
                meta = {}
            else:
                infos, meta = read_header(f)
            self.infos.update(infos)
            self.metadata.update(meta)

    def keys(self):
        """The stored keys (derived ones are not listed)."""
        return self.infos.keys()

    def __contains__(self, key: str) -> bool:
        return key in self.infos

    def info(self, key: str) -> TensorInfo:
        """Header facts of a stored or derived key."""
        return self.infos[key] if key in self.infos else self._derived[key][0]

    def shape(self, key: str) -> tuple[int, ...]:
        return self.info(key).shape

    def container(self, file: Path) -> str:
        """For a pickled file, the path of the state dict used inside it (``generator_ema``); else ''."""
        pf = self._pickled.get(Path(file))
        return pf.container if pf else ""

    def derive(self, key: str, dtype: str, shape: tuple[int, ...], make) -> None:
        """Register a tensor that ``make()`` computes from stored ones when ``key`` is read."""
        anchor = self.files[0] if self.files else Path()
        self._derived[key] = (TensorInfo(anchor, key, dtype, tuple(shape)), make)

    def read(self, key: str):
        """Read one tensor as stored (its own dtype), on the CPU."""
        if key in self._derived:
            return self._derived[key][1]()
        info = self.infos[key]
        if info.file in self._pickled:
            return self._pickled[info.file].read(key)
        return self._read_stored(info)

    def _handle(self, file: Path):
        """The file's one open handle and its lock (each file is opened once, on its first read)."""
        with self._open_lock:
            if file not in self._handles:
                try:
                    self._handles[file] = (open(file, "rb"), threading.Lock())
                except OSError as exc:
                    raise CasaError(f"cannot read {file}: {exc.strerror or exc}",
                                    "check that the file is still there and readable") from None
            return self._handles[file]

    def _read_stored(self, info: TensorInfo):
        """A safetensors tensor from its header's offsets: one positioned read, no second parse of the header."""
        import torch

        dtype = getattr(torch, dtypes.known(info.dtype).name)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        fh, lock = self._handle(info.file)
        # placed at the alignment the file offset has, as in safetensors' mapping: the math kernels round
        # differently at other alignments, and the same inputs must keep giving byte-identical outputs
        block = torch.empty(info.nbytes + 64, dtype=torch.uint8)
        shift = (info.offset - block.data_ptr()) % 64
        if shift % dtype.itemsize:
            shift = (-block.data_ptr()) % 64
        raw = block[shift: shift + info.nbytes]
        view, got = memoryview(raw.numpy()), 0
        try:
            if hasattr(os, "preadv"):   # positioned reads: threads share the handle without a lock
                while got < info.nbytes:
                    n = os.preadv(fh.fileno(), [view[got:]], info.offset + got)
                    if n <= 0:
                        break
                    got += n
            else:
                with lock:
                    fh.seek(info.offset)
                    got = fh.readinto(view)
        except OSError as exc:
            raise CasaError(f"cannot read tensor {info.key} from {info.file}: {exc.strerror or exc}",
                            "the file may be damaged; re-download it") from None
        if got != info.nbytes:
            raise CasaError(f"cannot read tensor {info.key} from {info.file}: the file is shorter than its header "
                            "says (changed while open?)", "re-download the file")
        t = raw.view(dtype)
        if sys.byteorder == "big" and t.element_size() > 1:
            t = t.view(torch.uint8).reshape(-1, t.element_size()).flip(1).reshape(-1).view(dtype)
        return t.reshape(info.shape)

    def close(self) -> None:
        """Close the files opened for reading (a later read opens them again)."""
        with self._open_lock:
            for fh, _ in self._handles.values():
                fh.close()
            self._handles.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
