"""The compute devices the settings panel offers: every CUDA device, and the CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    id: str          # what RunOptions.device takes
    label: str       # what the user reads


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"


def cpu_free_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def list_devices() -> list[Device]:
    """Auto first, then each CUDA device with its name and free memory, then the CPU."""
    import torch

    out = []
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            name = torch.cuda.get_device_name(i)
            try:
                free, total = torch.cuda.mem_get_info(i)
                mem = f"{_gib(free)} free of {_gib(total)}"
            except RuntimeError:
                mem = "memory unknown"
            cuda.append(Device(f"cuda:{i}", f"cuda:{i} · {name} · {mem}"))
    out.append(Device("auto", f"Auto ({'cuda:0' if cuda else 'CPU'})"))
    out.extend(cuda)
    free = cpu_free_bytes()
    out.append(Device("cpu", f"CPU · {cpu_name()} · {os.cpu_count()} threads"
                             + (f" · {_gib(free)} free" if free else "")))
    return out
