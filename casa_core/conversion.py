"""One conversion: open the sources, plan, compute layer by layer, re-arbitrate, export, report.

The CLI, the GUI and the tests all drive a ``Conversion``::

    conv = Conversion.open(base, target, lora)          # headers only
    report = conv.convert("out.safetensors", TransferSettings(), RunOptions())

or step by step (the GUI): ``conv.layers(settings, options, cancel)`` yields each layer's
``LayerResult`` as it is computed, ``conv.analysis(module, options)`` keeps one layer's
expensive analysis so that ``conv.rearbitrate`` can conclude it again with other
parameters without a new SVD, ``conv.export`` writes the file and ``conv.report()`` says
what was done.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from . import methods
from .compute import Compute, release_freed_memory
from .distillation import DriftParts, StackedTarget
from .errors import Cancelled, CasaError, OutOfMemory
from .layers import LayerResult, analyse_pair
from .methods.base import LayerInput
from .plan import LayerPlan, Plan, make_plan
from .report import RunReport
from .settings import RunOptions, TransferSettings


def _analysis_key(module: str, options: RunOptions, method: str) -> tuple:
    """What a kept analysis depends on: the layer, the method and how it was computed."""
    return module, method, options.precision, options.device, options.spectra


@dataclass
class _Analysis:
    """One layer's kept analysis, and what it was made for (``_analysis_key``)."""
    key: tuple
    value: object


class Conversion:
    """A LoRA and a (base, target) pair, matched; the layers computed so far and what they were computed with."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.results: dict[str, LayerResult] = {}
        self.settings: TransferSettings | None = None      # what ``results`` were computed with
        self.options: RunOptions | None = None
        self.seconds: float | None = None                  # the last full run's compute time
        self.last_export = None
        self.compared: dict[str, dict[str, LayerResult]] = {}   # the last comparison: method -> module -> result
        self._kept: _Analysis | None = None

    @classmethod
    def open(cls, base, target, lora, *, target_loras=(), expert: str | None = None, lora_file: str | None = None,
             layers: str | None = None, progress=None, cancel: threading.Event | None = None) -> Conversion:
        """Open the inputs lazily (local paths or Hugging Face repo ids) and plan.

        ``target`` is a checkpoint, or None where the target is the base plus ``target_loras``:
        distillation LoRAs, each ``(path or repo id, strength)``, a ``distillation.WeightedLora`` or
        ``"PATH[:STRENGTH]"`` (``distillation.parse_weighted``), stacked on the target (or the base).
        ``expert`` (``high`` / ``low``) picks one transformer of two-expert models (Wan2.2 A14B).
        """
        from .sources import open_lora, open_model, open_target

        hub = {"progress": progress, "cancel": cancel}
        base_src = open_model(base, "base", expert=expert, **hub)
        target_src = open_target(target, target_loras, base=base_src, expert=expert, **hub)
        lora_src = open_lora(lora, lora_file=lora_file, **hub)
        from .experts import check_choice

        check_choice(expert, [base_src, target_src], [lora_src])
        return cls(make_plan(base_src, target_src, lora_src, layers=layers))

    # ---- questions about the plan ---------------------------------------------

    def layer(self, module: str) -> LayerPlan:
        for lp in self.plan.layers:
            if lp.module == module:
                return lp
        raise KeyError(module)

    @property
    def complete(self) -> bool:
        return all(lp.module in self.results for lp in self.plan.layers)

    def drift(self, module: str) -> float:
        """Relative distillation drift ||W_t - W_s|| / ||W_s|| of one planned layer (reads, no SVD)."""
        from .drift import layer_drift

        return layer_drift(self.plan, self.layer(module))

    # ---- computing --------------------------------------------------------------

    def layers(self, settings: TransferSettings, options: RunOptions,
               cancel: threading.Event | None = None, *, resume=None) -> Iterator[LayerResult]:
        """Compute every planned layer, yielding each result in plan order; raise Cancelled on ``cancel``.

        ``resume``: results of an earlier, cancelled run with the same ``settings`` and ``options``
        (module -> LayerResult); those layers are kept as they are and not computed (nor yielded)
        again, so a run picks up where a cancel stopped it. Each layer is computed on its own, so
        the results are those of a run from the start.

        Results are kept in ``results``; ``settings`` / ``options`` record what they were
        computed with once every layer is done. On a GPU one layer is computed at a time
        while the next is read from disk. On a CPU with two or more cores two layers are
        computed side by side, each on half the cores: the eigensolver gains nothing from a
        second thread (0.30 s on one core or two for a 1536 x 1536 Gram matrix, measured),
        the matrix products split evenly, so two layers at once keep every core busy. At most
        ``workers`` layers' weights are held at a time.
        """
        settings.validate()
        options.validate()
        for s in (options.overrides or {}).values():
            s.validate()
        compute = Compute.for_options(options)
        kept = {lp.module: resume[lp.module] for lp in self.plan.layers if resume and lp.module in resume}
        self.results.clear()
        self.results.update(kept)
        self.settings = self.options = None
        t0 = time.perf_counter()
        job = _LayerJob(self.plan, [settings], options, compute)
        todo = [lp for lp in self.plan.layers if lp.module not in kept]
        with compute.limits():
            for (res,) in (_sequential(todo, job, cancel) if compute.workers == 1 else
                           side_by_side(todo, job, compute.workers, cancel)):
                self.results[res.name] = res
                yield res
        self.settings, self.options, self.seconds = settings, options, time.perf_counter() - t0

    def compare_layers(self, settings: list[TransferSettings], options: RunOptions,
                       cancel: threading.Event | None = None) -> Iterator[dict[str, LayerResult]]:
        """Several methods in one pass: each layer is read and its pair analysed (the base's basis, the
        drift, and the target's basis if a method needs it) once, then every method concludes on it;
        yields {method: result} per layer in plan order. Each result is the one a run of that method
        alone gives (same bytes). Per-layer overrides do not apply here."""
        names = [s.method for s in settings]
        if len(set(names)) != len(names) or not names:
            raise CasaError(f"each method may be compared once, got {', '.join(names) or 'none'}",
                            "name every method once", setting="method")
        for s in settings:
            s.validate()
        options = replace(options.validate(), overrides={})
        compute = Compute.for_options(options)
        job = _LayerJob(self.plan, settings, options, compute)
        with compute.limits():
            for results in (_sequential(self.plan.layers, job, cancel) if compute.workers == 1 else
                            side_by_side(self.plan.layers, job, compute.workers, cancel)):
                yield {s.method: r for s, r in zip(settings, results, strict=True)}

    def run(self, settings: TransferSettings, options: RunOptions, *, cancel: threading.Event | None = None,
            on_result: Callable[[int, int, LayerResult], None] | None = None, keep: Callable | None = None) -> None:
        """Compute every layer (see ``layers``); ``on_result(index, total, result)`` after each,
        ``keep(result)`` may slim a result before it is kept (the CLI drops the views)."""
        total = len(self.plan.layers)
        for i, res in enumerate(self.layers(settings, options, cancel)):
            if keep is not None:
                keep(res)
            if on_result is not None:
                on_result(i, total, res)
        if cancel is not None and cancel.is_set():
            raise Cancelled()

    def analysis(self, module: str, options: RunOptions, method: str = methods.DEFAULT):
        """The expensive analysis of one layer for ``method``, valid for any of its parameters.

        The last one asked for is kept, so that concluding the same layer again (other
        thresholds, a per-layer override) needs no new SVD.
        """
        if self.has_analysis(module, options, method):
            return self._kept.value
        compute = Compute.for_options(options)
        lp = self.layer(module)
        value = _analyse(self.plan, lp, methods.get(method), None, compute, spectra=options.spectra,
                         tensors=None)
        self._kept = _Analysis(_analysis_key(module, options, method), value)
        return value

    def has_analysis(self, module: str, options: RunOptions, method: str = methods.DEFAULT) -> bool:
        """Whether ``analysis`` would answer at once (no read, no SVD)."""
        return self._kept is not None and self._kept.key == _analysis_key(module, options, method)

    def rearbitrate(self, module: str, settings: TransferSettings, options: RunOptions) -> LayerResult:
        """Conclude one layer again with ``settings`` (its analysis kept or made); the result replaces
        the layer's, and ``settings`` becomes its override unless it equals the run's settings."""
        settings.validate()
        analysis = self.analysis(module, options, settings.method)
        try:
            res = methods.get(settings.method).conclude(analysis, settings, options.rank, options.view_size)
        except _cuda_oom():
            raise OutOfMemory(module) from None
        self.results[module] = res
        if self.options is not None:
            overrides = dict(self.options.overrides or {})
            if settings == self.settings:
                overrides.pop(module, None)
            else:
                overrides[module] = settings
            self.options = replace(self.options, overrides=overrides)
        return res

    # ---- writing ------------------------------------------------------------------

    def protected(self):
        """What the inputs occupy (files, and folders given as inputs): no write may land there."""
        from .outputs import Protected

        prot = Protected()
        for f in getattr(self.plan.target, "files", list)():    # distillation LoRAs
            prot.add_file(f)
        for src in (self.plan.base, self.plan.target):
            for f in src.store.files:
                prot.add_file(f)
            given = Path(src.path)
            if given.is_dir():
                prot.add_folder(given)
            elif given.name.endswith(".json"):      # a sharded checkpoint's index: its shards' folder
                prot.add_folder(given.parent)
        lora = self.plan.lora
        for f in [lora.path, *lora.store.files]:
            prot.add_file(f)
        if lora.peft is not None:                  # a PEFT folder (adapter_config.json beside the weights)
            prot.add_folder(Path(lora.path).parent)
        return prot

    def check_output(self, output, report=None) -> None:
        """Refuse an output (or report) that would overwrite an input or cannot be written; before any work."""
        from .export import source_date
        from .outputs import check_destination

        source_date()   # an unusable SOURCE_DATE_EPOCH is refused before the work, not after it
        prot = self.protected()
        check_destination(output, "output", prot, setting="output")
        if report is not None:
            check_destination(report, "report", prot, setting="report", others=[("output", output)])

    def export(self, output, settings: TransferSettings | None = None, options: RunOptions | None = None,
               results: dict[str, LayerResult] | None = None):
        """Write the computed layers (``results``: by default this conversion's) with provenance to
        ``output``, atomically; returns ExportInfo."""
        from .export import write_lora

        settings = settings or self.settings
        options = options or self.options
        results = self.results if results is None else results
        if settings is None or options is None:
            raise CasaError("no layer has been computed yet", "run the conversion first")
        self.check_output(output)
        missing = [lp.module for lp in self.plan.layers if lp.module not in results]
        if missing:
            raise CasaError(f"{len(missing)} layers have no result yet (first: {missing[0]})",
                            "run the conversion first")
        self.last_export = write_lora(self.plan, results, output, out_format=options.out_format,
                                      out_dtype=options.out_dtype, provenance=self.provenance(settings, options))
        return self.last_export

    def provenance(self, settings: TransferSettings, options: RunOptions) -> dict:
        """What the written file records of how it was made (``casa.*`` metadata)."""
        plan = self.plan
        lora_sha = plan.lora.sha256
        provenance = {
            "method": settings.method, "settings": settings.to_dict(),
            "overrides": {k: v.to_dict() for k, v in (options.overrides or {}).items()},
            "rank": str(options.rank or "same as input"), "precision": options.precision,
            "lora_sha256": lora_sha,
            "base": _model_identity(plan.base, options.provenance_paths),
            "target": _model_identity(plan.target, options.provenance_paths),
            "lora": _lora_identity(plan.lora, lora_sha, options.provenance_paths),
        }
        expert = getattr(plan.base, "expert", None) or getattr(plan.target, "expert", None)
        if expert:
            provenance["expert"] = expert
        if isinstance(plan.target, StackedTarget):
            # the output is meant for the model with those distillation LoRAs loaded beside it
            provenance["stack_with"] = plan.target.stack_with()
            provenance["usage"] = plan.target.usage()
        return provenance

    def report(self, export=None, *, write_seconds: float | None = None, options: RunOptions | None = None,
               seconds: float | None = None) -> RunReport:
        """What the last run did (and wrote): the typed run report."""
        options = options or self.options
        settings = self.settings
        if settings is None or options is None:
            raise CasaError("no layer has been computed yet", "run the conversion first")
        results = [self.results[lp.module] for lp in self.plan.layers if lp.module in self.results]
        return RunReport.build(self.plan, results, settings, options, Compute.for_options(options),
                               export, self.seconds if seconds is None else seconds, write_seconds)

    def convert(self, output, settings: TransferSettings, options: RunOptions, *,
                cancel: threading.Event | None = None, on_result=None, report=None) -> RunReport:
        """Run the whole transfer and write ``output`` (and the JSON ``report``); returns the run report.

        ``on_result(index, total, result)`` is called after each layer. A cancel or an
        error leaves nothing at ``output``.
        """
        settings.validate()
        options.validate()
        self.check_output(output, report)
        t0 = time.perf_counter()
        self.run(settings, options, cancel=cancel, on_result=on_result, keep=self._slim(options))
        return self.write(output, settings, options, report=report, seconds_before=time.perf_counter() - t0)

    def write(self, output, settings: TransferSettings, options: RunOptions, *, report=None,
              seconds_before: float = 0.0, extra: dict | None = None) -> RunReport:
        """Export every computed layer to ``output`` and write the JSON ``report`` (when given); returns
        the run report. ``seconds_before``: the compute time to add to the write time in the totals."""
        t_write = time.perf_counter()
        info = self.export(output, settings, options)
        t_write = time.perf_counter() - t_write
        rep = self.report(info, write_seconds=t_write, seconds=seconds_before + t_write)
        rep.extra.update(extra or {})
        if report is not None:
            rep.write(report)
        return rep

    def _slim(self, options: RunOptions) -> Callable[[LayerResult], None]:
        """What a run that writes a file keeps of a result: the factors in the written dtype, no views."""
        from .export import factor_dtype

        dtype = factor_dtype(self.plan, options.out_dtype)
        return lambda res: slim(res, dtype)

    def compare(self, outputs: dict[str, Path], settings: list[TransferSettings], options: RunOptions, *,
                cancel: threading.Event | None = None, on_result=None, report=None):
        """Run several methods in one pass (``compare_layers``) and write one file per method,
        ``outputs[method]``, each the bytes a single-method ``convert`` writes; returns the
        ``report.Comparison`` (written as JSON to ``report`` when given). ``on_result(index,
        total, {method: result})`` after each layer. A cancel or an error leaves no file behind."""
        from .report import Comparison

        for s in settings:
            self.check_output(outputs[s.method])
        if report is not None:
            from .outputs import check_destination

            check_destination(report, "report", self.protected(), setting="report",
                              others=[("output", outputs[s.method]) for s in settings])
        t0 = time.perf_counter()
        keep = self._slim(options)
        per: dict[str, dict[str, LayerResult]] = {s.method: {} for s in settings}
        total = len(self.plan.layers)
        for i, by_method in enumerate(self.compare_layers(settings, options, cancel)):
            for method, res in by_method.items():
                keep(res)
                per[method][res.name] = res
            if on_result is not None:
                on_result(i, total, by_method)
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        seconds = time.perf_counter() - t0
        compute = Compute.for_options(options)
        reports, written = {}, []
        try:
            for s in settings:
                t_write = time.perf_counter()
                info = self.export(outputs[s.method], s, options, per[s.method])
                written.append(info.path)
                reports[s.method] = RunReport.build(self.plan, [per[s.method][lp.module] for lp in self.plan.layers],
                                                    s, options, compute, info, seconds,
                                                    time.perf_counter() - t_write)
        except BaseException:
            for path in written:    # all files or none
                Path(path).unlink(missing_ok=True)
            raise
        self.compared = per
        comp = Comparison.build(reports, per, [lp.module for lp in self.plan.layers])
        if report is not None:
            comp.write(report)
        return comp


def slim(res: LayerResult, dtype) -> LayerResult:
    """What a file needs of a result: the factors, in the written dtype (the views are for the GUI)."""
    res.views = None
    res.up, res.down = res.up.to(dtype), res.down.to(dtype)
    return res


# ---- provenance ------------------------------------------------------------------------

def _model_identity(model, with_path: bool = False):
    """A hub model as repo@commit; a local one by name, size and the sha256 of what its headers say
    (names, dtypes, shapes, offsets, metadata, as the store read them; hashing the weights of a
    28-57 GB checkpoint would take minutes), never by its absolute path unless ``with_path``.
    A target with distillation LoRAs: its model (``base`` where it is the base) and each LoRA."""
    if isinstance(model, StackedTarget):
        return {"model": "base" if model.on_base else _model_identity(model.model, with_path),
                "distillation_loras": [{"lora": _lora_identity(d.lora, d.lora.sha256, with_path),
                                        "strength": d.strength} for d in model.loras]}
    if model.from_hub:
        return model.identity
    import hashlib

    store = model.store
    headers = {"tensors": sorted((i.file.name, i.key, i.dtype, list(i.shape), i.offset, i.nbytes)
                                 for i in store.infos.values()),
               "metadata": sorted(store.metadata.items())}
    out = {"name": Path(model.path).name, "files": len(store.files),
           "bytes": sum(f.stat().st_size for f in store.files),
           "header_sha256": hashlib.sha256(json.dumps(headers).encode()).hexdigest()}
    return out | ({"path": str(Path(model.path).resolve())} if with_path else {})


def _lora_identity(lora, sha256: str, with_path: bool = False):
    if lora.from_hub:
        return lora.identity
    out = {"name": Path(lora.path).name, "bytes": Path(lora.path).stat().st_size, "sha256": sha256}
    return out | ({"path": str(Path(lora.path).resolve())} if with_path else {})


# ---- computing one layer ----------------------------------------------------------

def analyse_layer(name: str, W_s, W_t, B, A, scale: float, *, method: str = methods.DEFAULT, params=None,
                  dtype=None, device="cpu", exact: bool = False, spectra: bool = False, consume: bool = False,
                  drift=None, cache=None):
    """One layer's analysis for ``method`` from its tensors (the conversion, benchmarks, tests).

    ``params``: the method's parameters the analysis may be narrowed to (None: valid for any).
    ``consume``: W_t is the caller's own copy in ``dtype`` on ``device``, to be overwritten.
    ``drift``: D_fft given in place of W_t (``layers.analyse_pair``).
    ``cache``: a ``spectral_cache.SpectralCache`` for the base's basis.
    The result goes to ``methods.get(method).conclude``.
    """
    import torch

    m = methods.get(method)
    pair = None
    if m.uses_models:
        pair = analyse_pair(name, W_s, W_t, dtype=dtype or torch.float32, device=device, exact=exact,
                            spectra=spectra, consume=consume, drift=drift, cache=cache)
    return m.analyse(LayerInput(name, B, A, scale), pair, params, spectra=spectra)


def _cuda_oom():
    import torch

    return torch.cuda.OutOfMemoryError


def _read_layer(plan: Plan, lp: LayerPlan, models: bool = True) -> list:
    """[W_s, W_t, B, A] of one layer (a list, so that whoever computes it can let go of them).

    A target with distillation LoRAs gives W_t as the parts of its drift (``DriftParts``).
    """
    wkey = f"{lp.module}.weight"
    lora = [plan.lora.read(lp.pair.up_key), plan.lora.read(lp.pair.down_key)]
    if not models:
        return [None, None, *lora]
    target = plan.target.read_drift(wkey) if isinstance(plan.target, StackedTarget) else plan.target.read(wkey)
    return [plan.base.read(wkey), target, *lora]


def _analyse(plan: Plan, lp: LayerPlan, method, params, compute: Compute, *, spectra: bool, tensors=None):
    """Read (unless given) one layer and run ``method``'s analysis on it."""
    if tensors is None:
        tensors = _read_layer(plan, lp, method.uses_models)
    W_s, W_t, B, A = tensors
    tensors.clear()   # the reader's references too
    try:
        pair = _pair(lp, W_s, W_t, compute, spectra) if method.uses_models else None
        del W_s, W_t
        return method.analyse(LayerInput(lp.module, B, A, lp.scale), pair, params, spectra=spectra)
    except _cuda_oom():
        raise OutOfMemory(lp.module) from None


def _pair(lp: LayerPlan, W_s, W_t, compute: Compute, spectra: bool):
    """The layer's PairState from the file's tensors (as ``analyse_layer`` makes it)."""
    # the file's copies (bf16 as a rule) go now; W_t's own copy becomes D_fft in place
    W_s = W_s.to(device=compute.device, dtype=compute.dtype)
    drift = None
    if isinstance(W_t, DriftParts):     # a target of distillation LoRAs: D_fft from its parts
        drift, W_t = W_t.drift(W_s, compute.dtype, compute.device), None
    else:
        W_t = W_t.to(device=compute.device, dtype=compute.dtype, copy=True)
    return analyse_pair(lp.module, W_s, W_t, dtype=compute.dtype, device=compute.device, exact=compute.exact,
                        spectra=spectra, consume=True, drift=drift, cache=compute.cache)


class _LayerJob:
    """Read, analyse and conclude one planned layer with each of a run's settings (one, with its
    per-layer overrides; or several methods compared), sharing the read and the pair's analysis."""

    def __init__(self, plan: Plan, settings: list[TransferSettings], options: RunOptions, compute: Compute):
        self.plan, self.settings, self.options, self.compute = plan, list(settings), options, compute

    def settings_for(self, lp: LayerPlan) -> list[TransferSettings]:
        first = (self.options.overrides or {}).get(lp.module, self.settings[0])
        return [first, *self.settings[1:]]

    def read(self, lp: LayerPlan) -> list:
        return _read_layer(self.plan, lp, any(methods.get(s.method).uses_models for s in self.settings_for(lp)))

    def __call__(self, lp: LayerPlan, tensors=None, t_read: float | None = None) -> tuple[LayerResult, ...]:
        if tensors is None:
            t0 = time.perf_counter()
            tensors = self.read(lp)
            t_read = time.perf_counter() - t0
        todo = [(s, methods.get(s.method)) for s in self.settings_for(lp)]
        W_s, W_t, B, A = tensors
        tensors.clear()   # the reader's references too
        out = []
        try:
            pair = (_pair(lp, W_s, W_t, self.compute, self.options.spectra)
                    if any(m.uses_models for _, m in todo) else None)
            del W_s, W_t
            for s, method in todo:
                analysis = method.analyse(LayerInput(lp.module, B, A, lp.scale), pair if method.uses_models else None,
                                          s.params, spectra=self.options.spectra)
                res = method.conclude(analysis, s, self.options.rank, self.options.view_size)
                del analysis
                res.stages = {"read": t_read, **res.stages}
                if self.options.view_size and pair is not None:
                    from .views import update_routing

                    res.routing = update_routing(pair, res.up, res.down, self.options.view_size)
                out.append(res)
        except _cuda_oom():
            raise OutOfMemory(lp.module) from None
        del pair
        release_freed_memory()
        return tuple(out)


def _sequential(layers: list[LayerPlan], job: _LayerJob, cancel: threading.Event | None) -> Iterator[LayerResult]:
    """One layer at a time, the next one read while this one is computed."""
    return read_ahead(layers, job.read, job, cancel)


def read_ahead(items: list, read: Callable, compute: Callable, cancel: threading.Event | None) -> Iterator:
    """``compute(item, read(item), seconds waited for the read)`` for one item at a time, the next item's
    ``read`` running meanwhile in a thread of its own."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="casa-read") as pool:
        pending = pool.submit(read, items[0]) if items else None
        for i, item in enumerate(items):
            if cancel is not None and cancel.is_set():
                pending.cancel()
                raise Cancelled()
            t0 = time.perf_counter()
            got = pending.result()
            t_read = time.perf_counter() - t0
            if i + 1 < len(items):
                pending = pool.submit(read, items[i + 1])
            yield compute(item, got, t_read)


def side_by_side(items: list, job: Callable, workers: int, cancel: threading.Event | None) -> Iterator:
    """``job(item)`` for ``workers`` items at once (layers of a plan), the results yielded in order."""
    n = len(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="casa-layer") as pool:
        futures: dict[int, Future] = {}
        submitted = 0

        def fill(oldest: int) -> None:
            # keep every worker busy, so that a fast layer queued behind a slow one does not
            # wait for it; finished layers wait for their turn (only their factors are held)
            nonlocal submitted
            while (submitted < n and submitted < oldest + 4 * workers
                   and sum(not f.done() for f in futures.values()) < workers):
                futures[submitted] = pool.submit(job, items[submitted])
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


def _wait_any(running: list[Future], cancel: threading.Event | None) -> None:
    """Wait until one of ``running`` finishes, honouring the cancel flag while waiting."""
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
        if done:
            return
