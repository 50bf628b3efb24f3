"""Where and how layers are computed: the device, the precision, CPU threads, memory given back.

Nothing here knows the rule; the conversion asks this module for a ``Compute`` once per
run and enters it for the duration of the run only.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import CasaError


def resolve_device(name: str | None):
    """'auto' -> the first CUDA device when there is one, else the CPU."""
    import torch

    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CasaError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N", setting="device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CasaError(f"device {name} asked for, but no CUDA device is available", "use the cpu device",
                            setting="device", example="cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CasaError(f"device {name} does not exist ({torch.cuda.device_count()} CUDA devices)",
                            "use cuda:0 or auto", setting="device")
    elif dev.type != "cpu":
        raise CasaError(f"unsupported device {name!r}", "use auto, cpu, cuda or cuda:N", setting="device")
    return dev


def cpu_workers(requested: int | None = None) -> tuple[int, int]:
    """(layers computed side by side, threads for each) on this machine's CPU."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    workers = max(1, min(requested or (2 if cores >= 2 else 1), cores))
    return workers, max(1, cores // workers)


@dataclass(frozen=True)
class Compute:
    """One run's compute settings: device, dtype, exactness, CPU workers and their threads."""
    device: object            # torch.device
    dtype: object             # torch dtype of the spectral work
    exact: bool               # float64 throughout, LAPACK's SVD
    workers: int              # layers computed side by side
    threads: int | None       # threads per worker (CPU), None: leave torch's setting alone
    cache: object | None = None   # spectral_cache.SpectralCache of the base's bases, or None

    @classmethod
    def for_options(cls, options) -> Compute:
        """The compute a run with these ``RunOptions`` gets (device checked here)."""
        import torch

        device = resolve_device(options.device)
        exact = options.precision == "float64"
        workers, threads = cpu_workers(options.workers) if device.type == "cpu" else (1, None)
        cache = None
        if getattr(options, "cache", None):
            from .spectral_cache import SpectralCache

            cache = SpectralCache.open(options.cache, options.cache_limit_gb)
        return cls(device, torch.float64 if exact else torch.float32, exact, workers, threads, cache)

    def describe(self) -> dict:
        """The report's figures on how layers are computed (the solver is reported per layer)."""
        import torch

        out = {"torch": torch.__version__}
        if self.device.type == "cpu":
            out |= {"cpu_workers": self.workers, "threads_per_worker": self.threads}
        return out

    @contextmanager
    def limits(self):
        """Hold the CPU thread limits for the duration of a run, then restore them.

        torch's and the BLAS libraries' thread counts are process settings: they are changed
        only when a run computes layers side by side, only while it runs, and one run at a
        time (a run that starts while another holds the limits computes under those), so the
        process is left as it was found.
        """
        if self.threads is None or self.workers == 1 or not _LIMITS_LOCK.acquire(blocking=False):
            yield
            return
        import torch
        from threadpoolctl import threadpool_limits

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with threadpool_limits(self.threads):
                yield
        finally:
            torch.set_num_threads(before)
            _LIMITS_LOCK.release()


_LIMITS_LOCK = threading.Lock()


def sync(device) -> None:
    """Wait for queued GPU work (so that stage timings mean something)."""
    if getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def release_freed_memory() -> None:
    """Give the pages of freed tensors back to the system (glibc keeps them by default)."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_libc = _load_libc()
