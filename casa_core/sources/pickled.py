"""Pickled torch checkpoints (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) read lazily and safely.

Only ``torch.load(weights_only=True, mmap=True)`` is ever used: a file that needs
full unpickling is refused, because unpickling can run arbitrary code. The file
is memory-mapped, one tensor is copied out per read, and the mapping is renewed
after every ``REMAP_BYTES`` read, so resident pages stay bounded on any model size.
Mapped loading does not check that each storage's zip record is as long as the
storage, so ``check_records`` does, before the first read.
"""

from __future__ import annotations

import pickle
import re
import threading
import warnings
import zipfile
from pathlib import Path

from .. import dtypes
from ..errors import CasaError

SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

# Where training scripts put the weights, best first (Self-Forcing's EMA generator first).
CONTAINERS = ("generator_ema", "generator", "model", "state_dict", "module")

REMAP_BYTES = 256 << 20


def is_pickled(path: Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def _load(path: Path):
    import torch

    if not zipfile.is_zipfile(path):
        raise CasaError(f"{path.name} is not a zip-format torch checkpoint (an old torch.save format, "
                        "or not a checkpoint at all)", "re-save it with a recent torch or convert it to safetensors")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise CasaError(f"{path.name} needs full unpickling, which can run arbitrary code, so it is refused{what}",
                        "convert it to safetensors where you trust it, or get a safetensors release") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as exc:
        if isinstance(exc, PermissionError):
            raise CasaError(f"cannot read {path}: permission denied", "check the file's permissions") from None
        raise CasaError(f"{path.name} is not a readable torch checkpoint ({str(exc).splitlines()[0][:120]})",
                        "re-download it or pick the right file") from None


class _Anything:
    """Stands for every object a checkpoint's pickle builds, while ``_records`` only reads its storage ids."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _StorageKind:
    def __init__(self, name: str):
        self.name = name


def _records(path: Path) -> dict[str, tuple[str, int]]:
    """``record key -> (storage type name, element count)`` of every storage the pickle names.

    Read with an unpickler that imports nothing and builds nothing (only the storage ids count).
    """
    refs: dict[str, tuple[str, int]] = {}

    class Scan(pickle.Unpickler):
        def find_class(self, module, name):
            return _StorageKind(name) if module == "torch" and name.endswith("Storage") else _Anything

        def persistent_load(self, pid):
            if isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[1], _StorageKind):
                refs.setdefault(str(pid[2]), (pid[1].name, pid[4]))
            return _Anything()

    with zipfile.ZipFile(path) as zf, zf.open(_pickle_name(zf)) as fh:
        Scan(fh).load()
    return refs


def _pickle_name(zf: zipfile.ZipFile) -> str:
    return next(n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))


def check_records(path: Path) -> None:
    """Refuse a checkpoint whose storages do not have exactly their records' byte sizes.

    Memory-mapped loading takes each storage's size from the pickle and its offset from the
    zip, unchecked, so a record shorter than its storage would silently read the next one's bytes.
    """
    import torch

    def refuse(what: str) -> CasaError:
        return CasaError(f"{path.name} is damaged: {what}", "re-download it or re-save it from the trainer")

    try:
        refs = _records(path)
        with zipfile.ZipFile(path) as zf:
            root = _pickle_name(zf)[: -len("data.pkl")]
            for key, (kind, numel) in refs.items():
                try:
                    info = zf.getinfo(f"{root}data/{key}")
                except KeyError:
                    raise refuse(f"its storage {key} has no record") from None
                storage = getattr(torch, kind, None)
                with warnings.catch_warnings():  # the legacy typed storage classes warn when asked their dtype
                    warnings.simplefilter("ignore")
                    size = 1 if storage is torch.UntypedStorage else storage.dtype.itemsize
                if not isinstance(numel, int) or info.compress_type != zipfile.ZIP_STORED \
                        or info.file_size != numel * size:
                    raise refuse(f"its storage {key} should hold {numel} x {size} bytes but its record holds "
                                 f"{info.file_size}" + (" compressed" if info.compress_type else ""))
    except CasaError:
        raise
    except Exception as exc:  # an unreadable pickle or zip: the weights-only load decides first
        raise refuse(f"its storage records cannot be read ({type(exc).__name__})") from None


def _is_state_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values())


def pick_state_dict(obj, path: Path) -> tuple[dict, str]:
    """The state dict inside a loaded checkpoint and the container path that led to it."""
    trail: list[str] = []
    while isinstance(obj, dict) and not _is_state_dict(obj):
        name = next((c for c in CONTAINERS if isinstance(obj.get(c), dict) and obj[c]), None)
        if name is None:
            keys = ", ".join(str(k) for k in list(obj)[:6])
            raise CasaError(f"{path.name} holds no state dict (top-level keys: {keys or 'none'})",
                            f"pick a checkpoint with weights under one of {', '.join(CONTAINERS)}")
        trail.append(name)
        obj = obj[name]
    if not _is_state_dict(obj):
        raise CasaError(f"{path.name} holds a {type(obj).__name__}, not a dict of tensors",
                        "pick a checkpoint saved from a state_dict()")
    return obj, ".".join(trail)


class PickledFile:
    """One pickled checkpoint as a lazy ``key -> tensor`` map over its chosen state dict."""

    def __init__(self, path):
        import torch

        self.path = Path(path)
        loaded = _load(self.path)
        check_records(self.path)  # before any tensor of the mapping is read
        sd, self.container = pick_state_dict(loaded, self.path)
        # key -> (dtype tag, shape); non-tensor entries (step counters ...) are skipped
        self.tensors = {str(k): (dtypes.tag_or_name(v.dtype), tuple(v.shape))
                        for k, v in sd.items() if isinstance(v, torch.Tensor)}
        self._sd: dict | None = sd
        self._mapped = 0
        self._lock = threading.Lock()

    def read(self, key: str):
        """One tensor, copied out of the mapping (never a view of it)."""
        import torch

        with self._lock:
            if self._sd is None or self._mapped > REMAP_BYTES:
                self._sd = None  # drop the old mapping before making a new one
                self._sd, _ = pick_state_dict(_load(self.path), self.path)
                self._mapped = 0
            t = self._sd[key].clone(memory_format=torch.contiguous_format)
            self._mapped += t.numel() * t.element_size()
        return t
