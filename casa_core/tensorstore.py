"""Lazy, read-one-tensor-at-a-time access to safetensors files and pickled checkpoints.

Only headers are read up front. Each tensor is read on request through a
``safe_open`` that is closed again at once, so no mapping of a multi-GB file
stays in the process and memory does not grow with model size. Pickled
checkpoints (``.pt``, ...) go through ``sources.pickled`` (weights-only, mapped).
A store can also hold derived tensors: computed on read from stored ones
(LoHa/LoKr factors), readable by key but never listed among the stored keys.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import CasaError


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like, read from a header."""
    file: Path
    key: str
    dtype: str                  # safetensors tag (casa_core.dtypes)
    shape: tuple[int, ...]


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse a safetensors header: tensor infos and the ``__metadata__`` map.

    Raises CasaError for an empty, truncated or non-safetensors file.
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
            if n <= 1 or n > min(size - 8, 100_000_000):
                raise bad
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, PermissionError):
            raise CasaError(f"cannot read {path}: permission denied", "check the file's permissions") from None
        raise bad from None
    if not isinstance(header, dict):
        raise bad
    meta = header.pop("__metadata__", None) or {}
    infos: dict[str, TensorInfo] = {}
    end = 0
    for key, h in header.items():
        try:
            start, stop = h["data_offsets"]
            infos[key] = TensorInfo(path, key, h["dtype"], tuple(int(d) for d in h["shape"]))
        except (KeyError, TypeError, ValueError):
            raise bad from None
        end = max(end, stop)
    if 8 + n + end > size:
        raise CasaError(f"{path} is truncated ({size} bytes, its header promises {8 + n + end})",
                        "re-download the file")
    return infos, {str(k): str(v) for k, v in meta.items()}


class TensorStore:
    """A set of safetensors or pickled files seen as one lazy ``key -> tensor`` map."""

    def __init__(self, files):
        from .sources import pickled

        self.files = [Path(f) for f in files]
        self.infos: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self._pickled: dict[Path, pickled.PickledFile] = {}
        self._derived: dict[str, tuple[TensorInfo, object]] = {}
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
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(info.file), framework="pt") as fh:
                return fh.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types
            raise CasaError(f"cannot read tensor {key} from {info.file}: {exc}",
                            "the file may be damaged; re-download it") from None
