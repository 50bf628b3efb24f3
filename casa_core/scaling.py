"""A batch past one machine: its passes as Ray tasks (``casa batch --executor ray[:ADDRESS]``).

One task per (target, LoRA chunk): the task opens the inputs itself (paths every worker
can read), computes each base layer's basis and its target's drift once for the chunk,
concludes the chunk's LoRAs on them and writes their outputs and reports into the output
folder (a shared filesystem), exactly as a local pass does; the driver only plans, hands
out the tasks and writes the summary. A task's outputs are written atomically, so a task
that dies (a lost worker: Ray retries it) leaves nothing partial, and its retry skips what
was finished. Ray is an optional dependency: ``pip install casa-studio[ray]``.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .errors import Cancelled, CasaError

RETRIES = 2           # a task whose worker died is run again this often (its finished outputs are skipped)


def _ray():
    try:
        import ray
    except ImportError:
        raise CasaError("the ray executor needs Ray, which is not installed",
                        "pip install casa-studio[ray], or use the local executor", setting="executor") from None
    return ray


def run_unit(spec, lora_indices: list[int], target_indices: list[int]) -> dict:
    """One task: a local batch over some LoRAs and targets of ``spec`` (no summary of its own);
    returns its entries (by LoRA and target index) and the shared work it did."""
    from .batch import Batch

    batch = Batch(replace(spec, summary=None, chunk=max(len(lora_indices), 1)))
    batch.prepare(lora_indices, target_indices)
    batch.run()
    return {"entries": [(e.lora_index, e.target_index, e.status, e.error, e.seconds) for e in batch.entries],
            "stats": dict(batch.stats)}


def resources(options) -> dict:
    """What one task asks of a worker: a CPU per layer computed side by side, a GPU when the device is one."""
    from .compute import cpu_workers

    gpu = options.device.startswith("cuda")
    if options.device == "auto":
        ray = _ray()
        gpu = ray.cluster_resources().get("GPU", 0) > 0
    return {"num_cpus": 1 if gpu else cpu_workers(options.workers)[0], "num_gpus": 1 if gpu else 0}


def run_on_ray(batch, address: str | None, cancel, progress, t0: float) -> None:
    """Run ``batch``'s pending outputs as Ray tasks and record their fate in ``batch.entries``."""
    from .batch import PENDING, Progress

    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise CasaError(f"cannot reach the Ray cluster at {address or 'local'} ({exc})",
                            "start it (ray start) or give its address", setting="executor") from None
    spec = batch.spec
    task = ray.remote(max_retries=RETRIES, **resources(spec.options))(run_unit)
    units = []
    for outs in batch.passes():
        loras = sorted({o.entry.lora_index for o in outs})
        for ti in sorted({o.entry.target_index for o in outs}):
            units.append((loras, [ti]))
    where = {(e.lora_index, e.target_index): e for e in batch.entries}
    refs = {task.remote(spec, loras, targets): (loras, targets) for loras, targets in units}
    done = 0
    try:
        while refs:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in ready:
                loras, targets = refs.pop(ref)
                done += 1
                try:
                    got = ray.get(ref)
                except ray.exceptions.RayError as exc:     # the task failed for good: its outputs did
                    why = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1]
                    got = {"stats": {}, "entries": [(li, ti, "failed", f"task failed: {why}", None)
                                                    for li in loras for ti in targets]}
                for k, v in got["stats"].items():
                    batch.stats[k] += v
                for li, ti, status, error, seconds in got["entries"]:
                    e = where.get((li, ti))
                    if e is None or e.status != PENDING:
                        continue
                    e.status, e.error, e.seconds = status, error, seconds
                    if progress is not None:
                        el = time.perf_counter() - t0
                        n = sum(x.status != PENDING for x in batch.entries)
                        progress(Progress(0, 1, done, len(units), n, len(batch.entries), el,
                                          el / done * (len(units) - done), e))
    except BaseException:
        for ref in refs:
            ray.cancel(ref)          # not forced: the task unwinds, its temporary file is removed
        raise
