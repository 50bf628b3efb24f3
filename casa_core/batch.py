"""Many LoRAs onto one or more targets of one base, layer-major: ``casa batch``.

Per layer, the base's singular basis depends on the base only and each target's drift on
that target only; what depends on the LoRA (its routing, clusters, arbitration, factors) is
the cheap part. A batch therefore reads and decomposes each base layer once per pass
(``layers.analyse_base``), forms each target's drift once on it (``layers.pair_state``) and
concludes every LoRA of the pass on that pair. Each output is the ``Conversion`` of its
(LoRA, target) pair, written by ``Conversion.write``: its bytes are those ``casa convert``
writes for the same inputs and settings.

    batch = Batch(BatchSpec(base, [TargetSpec("fast", "fast.safetensors")],
                            [LoraSpec("a.safetensors")], "out"))
    summary = batch.run(cancel, progress)

A pass holds the factors of its outputs (in their written dtype) until it writes them;
``chunk`` LoRAs make one pass, so memory grows with ``chunk`` only by factors, and a cancel
keeps every output of the passes already finished. A LoRA that cannot be opened or does
not fit fails on its own: the others go on, and the summary lists why. An output already
written with the same provenance and options is skipped unless ``force``.

``executor`` "ray" or "ray:ADDRESS" runs the passes as Ray tasks, one per (target, LoRA
chunk), each computing its pair states once (``run_unit``; the Ray plumbing is in
``casa_core.scaling``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import methods
from .compute import Compute, release_freed_memory
from .conversion import Conversion, read_ahead, side_by_side, slim
from .distillation import DriftParts, StackedTarget, parse_weighted
from .errors import Cancelled, CasaError
from .settings import RunOptions, TransferSettings

PATTERN = "{lora}-{target}.safetensors"
SUMMARY = "batch-summary.json"
CHUNK = 8
# what one LoRA of a manifest may set for itself (RunOptions fields)
LORA_OPTIONS = ("rank", "out_format", "out_dtype", "layers")

WRITTEN, SKIPPED, FAILED, PENDING, CANCELLED = "written", "skipped", "failed", "pending", "cancelled"


@dataclass(frozen=True)
class TargetSpec:
    """One target: a checkpoint (``path``), or the base (``path`` None) with distillation ``loras``
    [(path, strength)] merged into it; ``name`` goes into the output names."""
    name: str | None = None
    path: str | None = None
    loras: tuple[tuple[str, float], ...] = ()

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.path:
            return _stem(self.path)
        return "+".join(_stem(p) for p, _ in self.loras) or "target"


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA of a batch, and what it sets for itself: its method and parameters, rank, layout,
    dtype and layers (the batch's otherwise), and output file names by target name."""
    path: str
    name: str | None = None
    lora_file: str | None = None
    settings: TransferSettings | None = None
    options: dict = field(default_factory=dict)          # RunOptions fields of LORA_OPTIONS
    outputs: dict = field(default_factory=dict)          # target name -> output file name

    @property
    def label(self) -> str:
        return self.name or _stem(self.lora_file or self.path)


@dataclass
class BatchSpec:
    """Everything a batch is (plain data: it is what a remote task receives)."""
    base: str
    targets: list[TargetSpec]
    loras: list[LoraSpec]
    output_dir: str
    settings: TransferSettings = field(default_factory=TransferSettings)
    options: RunOptions = field(default_factory=RunOptions)
    pattern: str = PATTERN
    reports: bool = True                 # a run report beside every output
    force: bool = False                  # redo outputs already complete
    chunk: int = CHUNK                   # LoRAs per layer-major pass
    summary: str | None = SUMMARY        # the summary report's file name in output_dir (None: not written)

    def validate(self) -> BatchSpec:
        if not self.targets:
            raise CasaError("a batch needs at least one target", "give a target model or a distillation LoRA",
                            setting="target")
        if not self.loras:
            raise CasaError("a batch needs at least one LoRA", "give LoRA files, a folder, a pattern or a manifest",
                            setting="lora")
        if not (isinstance(self.chunk, int) and self.chunk > 0):
            raise CasaError(f"chunk must be a positive whole number, got {self.chunk!r}", "e.g. 8",
                            setting="chunk", example="8")
        for key in ("{lora}", "{target}"):
            if key not in self.pattern:
                raise CasaError(f"the output name pattern {self.pattern!r} lacks {key}",
                                "e.g. {lora}-{target}.safetensors", setting="pattern")
        try:
            self.pattern.format(lora="x", target="y")
        except (KeyError, IndexError, ValueError):
            raise CasaError(f"the output name pattern {self.pattern!r} names other fields than lora and target",
                            "e.g. {lora}-{target}.safetensors", setting="pattern") from None
        self.settings.validate()
        self.options.validate()
        for lora in self.loras:
            if lora.settings is not None:
                lora.settings.validate()
            unknown = sorted(set(lora.options) - set(LORA_OPTIONS))
            if unknown:
                raise CasaError(f"LoRA {lora.label}: {unknown[0]} cannot be set per LoRA",
                                f"per LoRA only {', '.join(LORA_OPTIONS)} may be set", setting="manifest")
            replace(self.options, **lora.options).validate()
        labels = [t.label for t in self.targets]
        for t in labels:
            if labels.count(t) > 1:
                raise CasaError(f"two targets are both named {t!r}", "give each target a name of its own",
                                setting="name")
        return self


@dataclass
class OutputEntry:
    """One (LoRA, target) output of a batch and what became of it."""
    lora: str
    target: str
    path: Path
    status: str = PENDING
    error: str | None = None
    report: Path | None = None
    seconds: float | None = None
    layers: int = 0
    lora_index: int = 0
    target_index: int = 0

    def to_dict(self) -> dict:
        return {"lora": self.lora, "target": self.target, "output": str(self.path), "status": self.status,
                "error": self.error, "report": None if self.report is None else str(self.report),
                "seconds": self.seconds, "layers": self.layers}


@dataclass(frozen=True)
class Progress:
    """Where a batch stands: passes, the layers of this pass, outputs finished, time left."""
    pass_index: int            # 0-based
    passes: int
    layer: int                 # layers of this pass done
    layers: int
    outputs_done: int          # written, skipped or failed, of all
    outputs: int
    elapsed: float
    eta: float | None          # seconds, None until something was measured
    entry: OutputEntry | None = None     # set when one output has just finished
    computing: tuple = ()      # (LoRA index, target index) of the outputs this pass computes


@dataclass
class BatchSummary:
    """What a batch did: every output's fate, the shared work and the time."""
    entries: list[OutputEntry]
    seconds: float
    passes: int
    base_layers: int           # base layers read and decomposed
    pairs: int                 # (layer, target) drifts formed
    concluded: int             # (layer, output) conclusions
    executor: str = "local"
    path: Path | None = None

    @property
    def failed(self) -> list[OutputEntry]:
        return [e for e in self.entries if e.status in (FAILED, CANCELLED, PENDING)]

    def count(self, status: str) -> int:
        return sum(e.status == status for e in self.entries)

    def to_dict(self) -> dict:
        from . import __version__

        return {"app": "casa-studio", "version": __version__, "executor": self.executor,
                "seconds": self.seconds, "passes": self.passes,
                "shared": {"base_layers": self.base_layers, "pairs": self.pairs, "concluded": self.concluded},
                "counts": {s: self.count(s) for s in (WRITTEN, SKIPPED, FAILED, CANCELLED, PENDING)},
                "outputs": [e.to_dict() for e in self.entries]}

    def write(self, path) -> Path:
        from .outputs import atomic_write

        blob = json.dumps(self.to_dict(), indent=1, default=str).encode()
        self.path = atomic_write(path, lambda fh: fh.write(blob), "summary")
        return self.path


# ---- inputs -------------------------------------------------------------------------------

def _stem(path: str) -> str:
    """A name from a path or a repo id: the file's stem, a folder's name, a repo's last part."""
    text = str(path).rstrip("/\\")
    name = text.replace("\\", "/").split("/")[-1].split("@")[0].split(":")[0] or text
    for suffix in (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def expand_loras(items: list[str]) -> list[str]:
    """LoRA arguments to LoRAs: a glob pattern (``*``, ``?``, ``[``) expands to its files, a folder of
    LoRA files to the ``.safetensors`` files in it (a PEFT folder, with ``adapter_config.json``, is one
    LoRA), anything else (a file, a repo id) is itself. Sorted, each once."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if any(c in item for c in "*?[") and not p.exists():
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise CasaError(f"no LoRA matches {item!r}", "check the pattern", setting="lora")
            out += found
        elif p.is_dir() and not (p / "adapter_config.json").exists():
            found = sorted(str(f) for f in p.iterdir() if f.suffix == ".safetensors" and f.is_file())
            if not found:
                raise CasaError(f"folder {p} holds no .safetensors LoRA", "pick the folder of your LoRAs",
                                setting="lora")
            out += found
        else:
            out.append(item)
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]


_MANIFEST_TOP = {"base", "output_dir", "pattern", "target", "lora", "method", "settings", "rank", "format",
                 "dtype", "layers", "chunk"}
_MANIFEST_TARGET = {"name", "path", "loras"}
_MANIFEST_LORA = {"path", "name", "lora_file", "method", "settings", "rank", "format", "dtype", "layers",
                  "output"}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?(:\S+)?")
_OPTION_KEYS = {"rank": "rank", "format": "out_format", "dtype": "out_dtype", "layers": "layers"}


def read_manifest(path) -> dict:
    """A batch manifest (TOML or JSON): base, targets, LoRAs with their own options and output names.

    Returns {"base", "output_dir", "pattern", "chunk", "targets": [TargetSpec], "loras": [LoraSpec],
    "settings": TransferSettings | None, "options": {RunOptions field: value}} with relative paths
    resolved against the manifest's folder; keys it does not know are refused.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CasaError(f"cannot read manifest {path}: {exc.strerror or exc}", "check the path",
                        setting="manifest") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise CasaError(f"manifest {path.name} is not valid {kind} ({str(exc).splitlines()[0]})",
                        "fix the file", setting="manifest") from None
    if not isinstance(data, dict):
        raise CasaError(f"manifest {path.name} is not a table of settings", "see docs/batch in the README",
                        setting="manifest")
    here = path.parent

    def where(p):
        if not isinstance(p, str) or not p:
            raise CasaError(f"manifest {path.name}: a path must be a text, got {p!r}", "quote the path",
                            setting="manifest")
        q = Path(p).expanduser()
        if q.is_absolute():
            return str(q)
        local = here / q
        if local.exists() or any(c in p for c in "*?[") or not _REPO_ID.fullmatch(p):
            return str(local)
        return p             # a Hugging Face repo id

    def check(table: dict, known: set, what: str) -> None:
        if not isinstance(table, dict):
            raise CasaError(f"manifest {path.name}: each {what} must be a table", f"e.g. [[{what}]]",
                            setting="manifest")
        unknown = sorted(set(table) - known)
        if unknown:
            raise CasaError(f"manifest {path.name}: unknown {what} key {unknown[0]!r}",
                            f"use {', '.join(sorted(known))}", setting="manifest")

    def settings_of(table: dict) -> TransferSettings | None:
        if "method" not in table and "settings" not in table:
            return None
        params = table.get("settings", {})
        if not isinstance(params, dict):
            raise CasaError(f"manifest {path.name}: settings must be a table of parameters", "e.g. {tau = 0.3}",
                            setting="manifest")
        return TransferSettings.of(table.get("method", methods.DEFAULT), **params)

    def options_of(table: dict) -> dict:
        out = {}
        for key, name in _OPTION_KEYS.items():
            if key in table:
                value = table[key]
                if key == "rank" and isinstance(value, str):
                    from .settings import parse_rank

                    value = parse_rank(value)
                out[name] = value
        return out

    check(data, _MANIFEST_TOP, "manifest")
    targets = []
    for t in data.get("target", []):
        check(t, _MANIFEST_TARGET, "target")
        loras = []
        for item in t.get("loras", []):
            if isinstance(item, dict):
                strength = item.get("strength", 1.0)
                if isinstance(strength, bool) or not isinstance(strength, int | float):
                    raise CasaError(f"manifest {path.name}: the strength {strength!r} of a target's LoRA is not a "
                                    "number", "e.g. strength = 1.0", setting="manifest")
                loras.append((where(item.get("path")), float(strength)))
            else:
                w = parse_weighted(item)      # PATH[:STRENGTH], read as casa convert --target-lora reads it
                loras.append((where(w.spec), w.strength))
        targets.append(TargetSpec(t.get("name"), where(t["path"]) if "path" in t else None, tuple(loras)))
    loras = []
    for item in data.get("lora", []):
        if isinstance(item, str):
            item = {"path": item}
        check(item, _MANIFEST_LORA, "lora")
        if "path" not in item:
            raise CasaError(f"manifest {path.name}: a LoRA without a path", "give each [[lora]] a path",
                            setting="manifest")
        outputs = item.get("output", {})
        if not isinstance(outputs, dict):
            raise CasaError(f"manifest {path.name}: a LoRA's output must name a file per target",
                            "e.g. output = {fast = \"a-fast.safetensors\"}", setting="manifest")
        expanded = expand_loras([where(item["path"])])
        if len(expanded) > 1 and (item.get("name") or outputs):
            raise CasaError(f"manifest {path.name}: {item['path']} names several LoRAs but sets one name or output",
                            "list them one by one", setting="manifest")
        for p in expanded:
            loras.append(LoraSpec(p, item.get("name"), item.get("lora_file"), settings_of(item), options_of(item),
                                  dict(outputs)))
    return {"base": where(data["base"]) if "base" in data else None,
            "output_dir": where(data["output_dir"]) if "output_dir" in data else None,
            "pattern": data.get("pattern"), "chunk": data.get("chunk"), "targets": targets, "loras": loras,
            "settings": settings_of(data), "options": options_of(data)}


def _open_target(base_src, spec: TargetSpec):
    """The target's source: a checkpoint, or it (or the base) with distillation LoRAs stacked on it."""
    from .sources import open_target

    return open_target(spec.path, list(spec.loras), base=base_src)


# ---- one output ---------------------------------------------------------------------------

@dataclass
class _Output:
    """A planned output: its conversion, settings and options, and the factors computed so far."""
    entry: OutputEntry
    conv: Conversion
    settings: TransferSettings
    options: RunOptions
    dtype: object
    fingerprint: str
    results: dict = field(default_factory=dict)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settings_for(self, module: str) -> TransferSettings:
        return (self.options.overrides or {}).get(module, self.settings)

    def fail(self, exc: BaseException, module: str | None = None) -> None:
        if self.entry.status == FAILED:
            return
        text = str(exc) if isinstance(exc, CasaError) else f"{type(exc).__name__}: {exc}"
        self.entry.status, self.entry.error = FAILED, (f"{module}: {text}" if module else text)
        self.results.clear()


def _fingerprint(provenance: dict, options: RunOptions) -> str:
    """What an output depends on beyond its provenance (layout, dtype, layers), hashed with it."""
    from . import __version__

    blob = json.dumps({"provenance": provenance, "version": __version__, "format": options.out_format,
                       "dtype": options.out_dtype, "layers": options.layers}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _complete(out: _Output) -> bool:
    """Whether the output is already written, whole, with the provenance and options it would get now:
    its header's ``casa.*`` provenance matches, and its report records the same fingerprint and size."""
    from .tensorstore import read_header

    path, report = out.entry.path, out.entry.report
    if not path.is_file() or report is None or not report.is_file():
        return False
    try:
        rep = json.loads(report.read_text())
        _, meta = read_header(path)
    except (OSError, ValueError, CasaError):
        return False
    if not isinstance(rep, dict) or (rep.get("batch") or {}).get("fingerprint") != out.fingerprint:
        return False
    if (rep.get("output") or {}).get("bytes") != path.stat().st_size:
        return False
    prov = out.conv.provenance(out.settings, out.options)
    return all(meta.get(f"casa.{k}") == (v if isinstance(v, str) else json.dumps(v, sort_keys=True))
               for k, v in prov.items())


# ---- the batch ----------------------------------------------------------------------------------

class Batch:
    """A batch: opened and planned by ``prepare``, computed and written by ``run``."""

    def __init__(self, spec: BatchSpec, *, compute: Compute | None = None):
        self.spec = spec.validate()
        self.compute = compute
        self.entries: list[OutputEntry] = []
        self._outputs: list[_Output] = []
        self.base = None
        self.stats = {"base_layers": 0, "pairs": 0, "concluded": 0}
        self._stats_lock = threading.Lock()

    # ---- opening and planning -----------------------------------------------------------

    def prepare(self, lora_indices=None, target_indices=None) -> list[OutputEntry]:
        """Open the base and the targets, open and plan every (LoRA, target) output (headers only).

        A LoRA that cannot be opened, or an output that cannot be planned or written, fails alone;
        a base or a target that cannot be opened fails the batch (it is a CasaError). Outputs
        already complete are skipped (unless ``force``).
        """
        from .export import factor_dtype
        from .plan import make_plan
        from .sources import open_lora, open_model

        spec = self.spec
        out_dir = Path(spec.output_dir)
        if not out_dir.is_dir():
            raise CasaError(f"output folder {out_dir} does not exist", "create it first", setting="output_dir")
        self.base = open_model(spec.base, "base")
        t_idx = range(len(spec.targets)) if target_indices is None else target_indices
        l_idx = range(len(spec.loras)) if lora_indices is None else lora_indices
        targets = [(i, spec.targets[i], _open_target(self.base, spec.targets[i])) for i in t_idx]
        names: dict[Path, str] = {}
        for li in l_idx:
            ls = spec.loras[li]
            try:
                lora = open_lora(ls.path, lora_file=ls.lora_file)
                lora_error = None
            except CasaError as exc:
                lora, lora_error = None, exc
            settings = ls.settings or spec.settings
            options = replace(spec.options, **ls.options)
            for ti, ts, target in targets:
                name = ls.outputs.get(ts.label) or spec.pattern.format(lora=ls.label, target=ts.label)
                path = out_dir / name
                if Path(name).name != name or name in ("", ".", ".."):
                    raise CasaError(f"output name {name!r} is not a plain file name", "give a name without folders",
                                    setting="pattern")
                if path in names:
                    raise CasaError(f"outputs {names[path]} and {ls.label}/{ts.label} would both be {path.name}",
                                    "give the LoRAs or targets distinct names", setting="pattern")
                names[path] = f"{ls.label}/{ts.label}"
                entry = OutputEntry(ls.label, ts.label, path, lora_index=li, target_index=ti,
                                    report=path.with_name(path.name.removesuffix(".safetensors") + ".report.json")
                                    if spec.reports else None)
                self.entries.append(entry)
                if lora_error is not None:
                    entry.status, entry.error = FAILED, str(lora_error)
                    continue
                try:
                    conv = Conversion(make_plan(self.base, target, lora, layers=options.layers))
                    conv.check_output(path, entry.report)
                    out = _Output(entry, conv, settings, options, factor_dtype(conv.plan, options.out_dtype), "")
                    out.fingerprint = _fingerprint(conv.provenance(settings, options), options)
                except CasaError as exc:
                    entry.status, entry.error = FAILED, str(exc)
                    continue
                entry.layers = len(conv.plan.layers)
                if not spec.force and spec.reports and _complete(out):
                    entry.status = SKIPPED
                    continue
                self._outputs.append(out)
        return self.entries

    # ---- computing ----------------------------------------------------------------------------------

    def passes(self) -> list[list[_Output]]:
        """The pending outputs by pass: ``chunk`` LoRAs (with all their targets) per pass."""
        by_lora: dict[int, list[_Output]] = {}
        for out in self._outputs:
            by_lora.setdefault(out.entry.lora_index, []).append(out)
        groups = list(by_lora.values())
        c = self.spec.chunk
        return [[o for g in groups[i:i + c] for o in g] for i in range(0, len(groups), c)]

    def run(self, cancel: threading.Event | None = None, progress: Callable[[Progress], None] | None = None,
            *, executor: str = "local") -> BatchSummary:
        """Prepare (unless done), compute and write every pending output; returns the summary (also
        written to ``output_dir`` unless ``summary`` is None). Raises Cancelled on ``cancel`` (or
        KeyboardInterrupt) once the summary of what was finished is written."""
        t0 = time.perf_counter()
        if not self.entries:
            self.prepare()
        kind, _, address = executor.partition(":")
        if kind not in ("local", "ray"):
            raise CasaError(f"unknown executor {executor!r}", "use local, ray or ray:ADDRESS", setting="executor")
        passes = self.passes()
        self._units = sum(len({lp.module for o in outs for lp in o.conv.plan.layers}) for outs in passes)
        self._units_done = 0
        try:
            if kind == "ray":
                self._run_on_ray(address or None, cancel, progress, t0)
            else:
                compute = self.compute or Compute.for_options(self.spec.options)
                with compute.limits():
                    for i, outs in enumerate(passes):
                        self._run_pass(outs, compute, cancel, progress, i, len(passes), t0)
        except (Cancelled, KeyboardInterrupt):
            for e in self.entries:
                if e.status == PENDING:
                    e.status, e.error = CANCELLED, "cancelled before it was finished"
            self._summary(t0, executor)
            raise
        return self._summary(t0, executor)

    def _run_on_ray(self, address: str | None, cancel, progress, t0: float) -> None:
        """The pending outputs as Ray tasks, one per (target, LoRA chunk) (``run_unit``); their fate is
        recorded in ``entries`` as each task finishes."""
        from .scaling import run_tasks

        units = []
        for outs in self.passes():
            loras = sorted({o.entry.lora_index for o in outs})
            units += [(self.spec, loras, [ti]) for ti in sorted({o.entry.target_index for o in outs})]
        where = {(e.lora_index, e.target_index): e for e in self.entries}
        done = 0

        def record(args, result, error) -> None:
            nonlocal done
            done += 1
            _, loras, targets = args
            if result is None:
                result = {"stats": {}, "entries": [(li, ti, FAILED, error, None) for li in loras for ti in targets]}
            for k, v in result["stats"].items():
                self.stats[k] += v
            for li, ti, status, why, seconds in result["entries"]:
                e = where.get((li, ti))
                if e is None or e.status != PENDING:
                    continue
                e.status, e.error, e.seconds = status, why, seconds
                if progress is not None:
                    el = time.perf_counter() - t0
                    n = sum(x.status != PENDING for x in self.entries)
                    progress(Progress(0, 1, done, len(units), n, len(self.entries), el,
                                      el / done * (len(units) - done), e))

        run_tasks(run_unit, units, address=address, device=self.spec.options.device,
                  workers=self.spec.options.workers, cancel=cancel, on_result=record)

    def _summary(self, t0: float, executor: str) -> BatchSummary:
        s = BatchSummary(self.entries, time.perf_counter() - t0, len(self.passes()), executor=executor,
                         **self.stats)
        if self.spec.summary:
            s.write(Path(self.spec.output_dir) / self.spec.summary)
        return s

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _run_pass(self, outs: list[_Output], compute: Compute, cancel, progress, index: int, passes: int,
                  t0: float) -> None:
        """One layer-major pass over ``outs``: every layer any of them transfers, in the base's order."""
        order = {k: i for i, k in enumerate(self.base.canonical_keys())}
        modules: dict[str, list[tuple[_Output, object]]] = {}
        for out in outs:
            for lp in out.conv.plan.layers:
                modules.setdefault(lp.module, []).append((out, lp))
        names = sorted(modules, key=lambda m: order.get(f"{m}.weight", len(order)))
        work = [(m, modules[m]) for m in names]
        computing = tuple((o.entry.lora_index, o.entry.target_index) for o in outs)
        done_before = sum(e.status in (WRITTEN, SKIPPED, FAILED) for e in self.entries)
        total = len(self.entries)
        # one at a time (a GPU, one CPU worker) with the next layer read meanwhile, else side by side
        layers = (read_ahead(work, self._read, lambda w, got, _t: self._layer(w, compute, got), cancel)
                  if compute.workers == 1 else
                  side_by_side(work, lambda w: self._layer(w, compute), compute.workers, cancel))
        for j, _ in enumerate(layers):
            self._units_done += 1
            if progress is not None:
                el = time.perf_counter() - t0
                eta = el / self._units_done * (self._units - self._units_done)
                progress(Progress(index, passes, j + 1, len(work), done_before, total, el, eta, None, computing))
        for out in outs:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            self._write(out)
            if progress is not None:
                done = sum(e.status in (WRITTEN, SKIPPED, FAILED) for e in self.entries)
                progress(Progress(index, passes, len(work), len(work), done, total, time.perf_counter() - t0, None,
                                  out.entry))

    def _read(self, work) -> dict:
        """What one layer of the pass reads: the base's weight (when a method reads the models), each
        target's weight, each output's LoRA factors (with its read time); a target or LoRA that cannot be
        read is kept as its exception, to fail its outputs alone."""
        module, items = work
        wkey = f"{module}.weight"
        live = [(o, lp) for o, lp in items if o.entry.status != FAILED]
        uses = [methods.get(o.settings_for(module).method).uses_models for o, _ in live]
        got = {"W_s": self.base.read(wkey) if any(uses) else None, "W_t": {}, "lora": {}}
        for (o, lp), u in zip(live, uses, strict=True):
            target = o.conv.plan.target
            if u and id(target) not in got["W_t"]:
                try:
                    # a target of distillation LoRAs gives the parts of its drift (DriftParts)
                    got["W_t"][id(target)] = (target.read_drift(wkey) if isinstance(target, StackedTarget)
                                              else target.read(wkey))
                except Exception as exc:     # a target that cannot be read fails its outputs, not the batch
                    got["W_t"][id(target)] = exc
            t0 = time.perf_counter()
            try:
                factors = (o.conv.plan.lora.read(lp.pair.up_key), o.conv.plan.lora.read(lp.pair.down_key))
            except Exception as exc:         # one LoRA's trouble is its own
                factors = exc
            got["lora"][id(o)] = (factors, time.perf_counter() - t0)
        return got

    def _layer(self, work, compute: Compute, got: dict | None = None) -> None:
        """One layer for every output of the pass that transfers it: the base's basis once, each
        target's drift once, then every LoRA concluded on its target's pair. ``got``: what ``_read``
        read for it already (read now otherwise)."""
        from .layers import analyse_base, pair_state

        module, items = work
        got = self._read(work) if got is None else got
        live = [(o, lp) for o, lp in items if o.entry.status != FAILED and id(o) in got["lora"]]
        uses = [methods.get(o.settings_for(module).method).uses_models for o, _ in live]
        base_state = None
        if any(uses):
            t0 = time.perf_counter()
            W_s = got.pop("W_s").to(device=compute.device, dtype=compute.dtype)
            base_state = analyse_base(module, W_s, dtype=compute.dtype, device=compute.device, exact=compute.exact,
                                      cache=compute.cache)
            del W_s
            self._count("base_layers")
            base_state.seconds = time.perf_counter() - t0
        by_target: dict[int, list] = {}
        for (o, lp), u in zip(live, uses, strict=True):
            by_target.setdefault(id(o.conv.plan.target), []).append((o, lp, u))
        for tid, group in by_target.items():
            pair = None
            if any(u for _, _, u in group):
                W_t = got["W_t"].pop(tid)
                try:
                    if isinstance(W_t, Exception):
                        raise W_t
                    if isinstance(W_t, DriftParts):
                        W_s = base_state.Ws.T if base_state.transposed else base_state.Ws
                        pair = pair_state(base_state, None, drift=W_t.drift(W_s, compute.dtype, compute.device))
                    else:
                        pair = pair_state(base_state, W_t.to(device=compute.device, dtype=compute.dtype, copy=True),
                                          consume=True)
                    self._count("pairs")
                except Exception as exc:     # a target that cannot be read fails its outputs, not the batch
                    for o, _, u in group:
                        if u:
                            o.fail(exc, module)
                del W_t
            for o, lp, u in group:
                if o.entry.status == FAILED or (u and pair is None):
                    continue
                self._conclude(o, lp, pair if u else None, *got["lora"].pop(id(o)))
            del pair
        del base_state, got
        release_freed_memory()

    def _conclude(self, out: _Output, lp, pair, factors, t_read: float) -> None:
        """Conclude one output's layer on its pair (None for a method that does not read the models)."""
        from .conversion import _cuda_oom
        from .errors import OutOfMemory
        from .methods.base import LayerInput

        t0 = time.perf_counter()
        try:
            if isinstance(factors, Exception):
                raise factors
            B, A = factors
            s = out.settings_for(lp.module)
            method = methods.get(s.method)
            analysis = method.analyse(LayerInput(lp.module, B, A, lp.scale), pair, s.params,
                                      spectra=out.options.spectra)
            res = method.conclude(analysis, s, out.options.rank, out.options.view_size)
            del analysis
        except _cuda_oom():
            out.fail(OutOfMemory(lp.module), lp.module)
            return
        except Exception as exc:          # one LoRA's trouble is its own: the batch goes on
            out.fail(exc, lp.module)
            return
        res.stages = {"read": t_read, **res.stages}
        slim(res, out.dtype)
        self._count("concluded")
        with out.lock:
            if out.entry.status != FAILED:
                out.results[lp.module] = res
                out.seconds += t_read + time.perf_counter() - t0

    def _write(self, out: _Output) -> None:
        """Export one output of a finished pass (and its report), or record why it failed."""
        entry = out.entry
        if entry.status == FAILED:
            return
        conv = out.conv
        conv.results = {lp.module: out.results[lp.module] for lp in conv.plan.layers if lp.module in out.results}
        conv.settings, conv.options, conv.seconds = out.settings, out.options, out.seconds
        try:
            conv.write(entry.path, out.settings, out.options, report=entry.report, seconds_before=out.seconds,
                       extra={"batch": {"fingerprint": out.fingerprint, "lora": entry.lora,
                                        "target": entry.target}})
        except CasaError as exc:
            out.fail(exc)
            return
        finally:
            conv.results = {}
            out.results.clear()
        entry.status, entry.seconds = WRITTEN, out.seconds


def run_unit(spec: BatchSpec, lora_indices: list[int], target_indices: list[int]) -> dict:
    """One Ray task: a local batch over some LoRAs and targets of ``spec`` (no summary of its own);
    returns its entries (by LoRA and target index) and the shared work it did. A retried task skips
    the outputs its first attempt finished."""
    batch = Batch(replace(spec, summary=None, chunk=max(len(lora_indices), 1)))
    batch.prepare(lora_indices, target_indices)
    batch.run()
    return {"entries": [(e.lora_index, e.target_index, e.status, e.error, e.seconds) for e in batch.entries],
            "stats": dict(batch.stats)}
