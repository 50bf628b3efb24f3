"""Ray plumbing for work past one machine (``casa batch --executor ray[:ADDRESS]``).

``run_tasks`` runs one function over many argument tuples as Ray tasks: it joins (or starts)
the cluster, asks each task for the resources ``resources`` says, retries a task whose
worker died, hands each result to the caller as it arrives, turns a task that failed for
good into a failure of that task alone, and cancels what is left on a cancel or an error.
What a task does is the caller's (``batch.run_unit``); the inputs must be paths every
worker can read, and outputs land where every worker writes (a shared filesystem). Ray is
an optional dependency: ``pip install casa-studio[ray]``.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import Cancelled, CasaError

RETRIES = 2           # a task whose worker died is run again this often


def _ray():
    try:
        import ray
    except ImportError:
        raise CasaError("the ray executor needs Ray, which is not installed",
                        "pip install casa-studio[ray], or use the local executor", setting="executor") from None
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (None: the one this process started, or a new local one)."""
    ray = _ray()
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise CasaError(f"cannot reach the Ray cluster at {address or 'local'} ({exc})",
                        "start it (ray start) or give its address", setting="executor") from None


def resources(device: str, workers: int | None) -> dict:
    """What one task asks of a worker: a CPU per layer computed side by side, or one GPU."""
    from .compute import cpu_workers

    ray = _ray()
    gpu = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    return {"num_cpus": 1 if gpu else cpu_workers(workers)[0], "num_gpus": 1 if gpu else 0}


def run_tasks(func: Callable, calls: list[tuple], *, address: str | None, device: str, workers: int | None,
              cancel=None, on_result: Callable[[tuple, object, str | None], None]) -> None:
    """``func(*args)`` for each ``args`` of ``calls`` as Ray tasks; ``on_result(args, result, error)`` for
    each as it finishes (``error``: why the task failed for good, ``result`` None then)."""
    connect(address)
    ray = _ray()
    task = ray.remote(max_retries=RETRIES, **resources(device, workers))(func)
    refs = {task.remote(*args): args for args in calls}
    try:
        while refs:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in ready:
                args = refs.pop(ref)
                try:
                    result, error = ray.get(ref), None
                except ray.exceptions.RayError as exc:
                    cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()
                    result, error = None, f"task failed: {cause[-1] if cause else type(exc).__name__}"
                on_result(args, result, error)
    except BaseException:
        for ref in refs:
            ray.cancel(ref)          # not forced: the task unwinds, its temporary file is removed
        raise
