"""Plan a transfer (no math), then stream it one layer at a time.

The same functions serve the CLI and the GUI: ``make_plan`` matches the three
sources, ``iter_transfer`` yields one ``LayerResult`` per layer and honours a
cancel flag between layers, ``export.write_lora`` writes the file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial

from .engine import LayerResult, analyze, conclude, direct
from .errors import Cancelled, CasaError, OutOfMemory
from .lora import LoraSource
from .models import ModelSource
from .plan import LayerPlan, PassThrough, Plan, make_plan  # noqa: F401  (re-exported)
from .settings import RunOptions, TransferSettings


def resolve_device(name: str):
    """'auto' -> the first CUDA device when there is one, else the CPU."""
    import torch

    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CasaError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CasaError(f"device {name} asked for, but no CUDA device is available", "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CasaError(f"device {name} does not exist ({torch.cuda.device_count()} CUDA devices)",
                            "use cuda:0 or --device auto")
    elif dev.type != "cpu":
        raise CasaError(f"unsupported device {name!r}", "use auto, cpu, cuda or cuda:N")
    return dev


def _precision(options: RunOptions):
    """(compute dtype, exact): float64 means LAPACK's SVD and float64 throughout."""
    import torch

    exact = options.precision == "float64"
    return (torch.float64 if exact else torch.float32), exact


def _read_layer(plan: Plan, lp: LayerPlan) -> list:
    """[W_s, W_t, B, A] of one layer (a list, so that whoever computes it can let go of them)."""
    wkey = f"{lp.module}.weight"
    return [plan.base.read(wkey), plan.target.read(wkey),
            plan.lora.read(lp.pair.up_key), plan.lora.read(lp.pair.down_key)]


def iter_transfer(plan: Plan, settings: TransferSettings, options: RunOptions,
                  cancel: threading.Event | None = None) -> Iterator[LayerResult]:
    """Yield one LayerResult per planned layer, in plan order; raise Cancelled when ``cancel`` is set.

    On a GPU one layer is computed at a time while the next is read from disk. On a CPU
    with two or more cores two layers are computed side by side, each on half the cores:
    the eigensolver gains nothing from a second thread (0.30 s on one core or two for a
    1536 x 1536 Gram matrix, measured), the matrix products split evenly, so two layers at
    once keep every core busy. At most ``workers`` layers' weights are held at a time.
    """
    settings.validate()
    options.validate()
    device = resolve_device(options.device)
    dtype, exact = _precision(options)
    workers, threads = cpu_workers(options.workers) if device.type == "cpu" else (1, None)
    job = partial(_compute, plan, settings, options, device, dtype, exact)
    if workers == 1:
        yield from _iter_sequential(plan, job, cancel)
        return
    n = len(plan.layers)
    with _thread_limits(threads), ThreadPoolExecutor(workers, thread_name_prefix="casa-layer") as pool:
        futures: dict[int, Future] = {}
        submitted = 0

        def fill(oldest: int) -> None:
            # keep every worker busy, so that a fast layer queued behind a slow one does not
            # wait for it; finished layers wait for their turn (only their factors are held)
            nonlocal submitted
            while (submitted < n and submitted < oldest + 4 * workers
                   and sum(not f.done() for f in futures.values()) < workers):
                futures[submitted] = pool.submit(job, plan.layers[submitted])
                submitted += 1

        try:
            for i in range(n):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                fill(i)
                while not futures[i].done():
                    _wait_any([f for f in futures.values() if not f.done()], cancel)
                    fill(i)
                yield futures.pop(i).result()
        finally:  # a cancel, an error or a consumer that stops early: drop what has not started
            for fut in futures.values():
                fut.cancel()


def cpu_workers(requested: int | None = None) -> tuple[int, int]:
    """(layers computed side by side, threads for each) on this machine's CPU."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    workers = max(1, min(requested or (2 if cores >= 2 else 1), cores))
    return workers, max(1, cores // workers)


@contextmanager
def _thread_limits(threads: int):
    """torch's and the BLAS libraries' thread counts for the duration of a run."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)


def _wait_any(running: list[Future], cancel: threading.Event | None) -> None:
    """Wait until one of ``running`` finishes, honouring the cancel flag while waiting."""
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
        if done:
            return


def _iter_sequential(plan: Plan, job, cancel: threading.Event | None) -> Iterator[LayerResult]:
    """One layer at a time, the next one read while this one is computed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="casa-read") as pool:
        pending = pool.submit(_read_layer, plan, plan.layers[0]) if plan.layers else None
        for i, lp in enumerate(plan.layers):
            if cancel is not None and cancel.is_set():
                pending.cancel()
                raise Cancelled()
            t0 = time.perf_counter()
            tensors = pending.result()
            t_read = time.perf_counter() - t0
            if i + 1 < len(plan.layers):
                pending = pool.submit(_read_layer, plan, plan.layers[i + 1])
            yield job(lp, tensors, t_read)


def _compute(plan: Plan, settings: TransferSettings, options: RunOptions, device, dtype, exact: bool,
             lp: LayerPlan, tensors=None, t_read: float | None = None) -> LayerResult:
    """Read (unless given) and transfer one layer."""
    import torch

    if tensors is None:
        t0 = time.perf_counter()
        tensors = _read_layer(plan, lp)
        t_read = time.perf_counter() - t0
    W_s, W_t, B, A = tensors
    tensors.clear()   # the reader's references too
    s = (options.overrides or {}).get(lp.module, settings)
    try:
        if s.method == "direct":
            res = direct(lp.module, B, A, lp.scale, options.rank, s)
        else:
            # the file's copies (bf16 as a rule) go now; W_t's own copy becomes D_fft in place
            W_s = W_s.to(device=device, dtype=dtype)
            W_t = W_t.to(device=device, dtype=dtype, copy=True)
            state = analyze(lp.module, W_s, W_t, B, A, lp.scale, dtype=dtype, device=device,
                            exact=exact, spectra=options.spectra, consume=True, settings=s)
            del W_s, W_t
            res = conclude(state, s, options.rank, options.view_size)
    except torch.cuda.OutOfMemoryError:
        raise OutOfMemory(lp.module) from None
    res.stages = {"read": t_read, **res.stages}
    _release_freed_memory()
    return res


def _release_freed_memory() -> None:
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


def open_sources(base, target, lora, *, lora_file: str | None = None, progress=None,
                 cancel: threading.Event | None = None) -> tuple[ModelSource, ModelSource, LoraSource]:
    """Open the three inputs lazily (headers only): local paths or Hugging Face repo ids.

    ``lora_file`` picks the LoRA in a folder or repo holding several; ``progress`` and
    ``cancel`` reach hub downloads (see ``sources.hub.resolve``).
    """
    from .sources import open_lora, open_model

    hub = {"progress": progress, "cancel": cancel}
    return (open_model(base, "base", **hub), open_model(target, "target", **hub),
            open_lora(lora, lora_file=lora_file, **hub))


def layer_state(plan: Plan, lp: LayerPlan, options: RunOptions):
    """Read one planned layer and run the expensive analysis (for re-arbitration in the GUI)."""
    import torch

    dtype, exact = _precision(options)
    W_s, W_t, B, A = _read_layer(plan, lp)
    try:
        return analyze(lp.module, W_s, W_t, B, A, lp.scale, dtype=dtype, device=resolve_device(options.device),
                       exact=exact, spectra=options.spectra)
    except torch.cuda.OutOfMemoryError:
        raise OutOfMemory(lp.module) from None


def export_results(plan: Plan, results: dict[str, LayerResult], output, settings: TransferSettings,
                   options: RunOptions):
    """Write converted layers (canonical module -> LayerResult) with provenance; atomic."""
    from .export import check_output, sha256_file, write_lora

    check_output(output, [plan.lora.path, *plan.base.store.files, *plan.target.store.files])
    missing = [lp.module for lp in plan.layers if lp.module not in results]
    if missing:
        raise CasaError(f"{len(missing)} layers have no result yet (first: {missing[0]})", "run the conversion first")
    provenance = {
        "method": settings.method, "settings": settings.to_dict(),
        "overrides": {k: v.to_dict() for k, v in (options.overrides or {}).items()},
        "rank": str(options.rank or "same as input"), "precision": options.precision,
        "lora_sha256": sha256_file(plan.lora.path),
        "base": plan.base.identity, "target": plan.target.identity, "lora": plan.lora.identity,
    }
    return write_lora(plan, results, output, out_format=options.out_format, out_dtype=options.out_dtype,
                      provenance=provenance)


def convert(plan: Plan, output, settings: TransferSettings, options: RunOptions, *,
            cancel: threading.Event | None = None, on_result=None) -> dict:
    """Run the whole transfer and write ``output``; returns the run report.

    ``on_result(index, total, result)`` is called after each layer. A cancel or an
    error leaves nothing at ``output``.
    """
    from .export import check_output, factor_dtype
    from .report import build_report

    settings.validate()
    options.validate()
    check_output(output, [plan.lora.path, *plan.base.store.files, *plan.target.store.files])
    t0 = time.perf_counter()
    results: dict[str, LayerResult] = {}
    total = len(plan.layers)
    dtype = factor_dtype(plan, options.out_dtype)
    for i, res in enumerate(iter_transfer(plan, settings, options, cancel)):
        # the views are for the GUI; the written file needs only the factors, in its dtype
        res.views = None
        res.up, res.down = res.up.to(dtype), res.down.to(dtype)
        results[res.name] = res
        if on_result is not None:
            on_result(i, total, res)
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    t_write = time.perf_counter()
    info = export_results(plan, results, output, settings, options)
    t_write = time.perf_counter() - t_write
    device = str(resolve_device(options.device))
    report = build_report(plan, list(results.values()), settings, options, info,
                          time.perf_counter() - t0, device)
    report["totals"]["write_seconds"] = t_write
    return report
