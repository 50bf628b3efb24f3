"""The ``casa`` command line: a thin shell over casa_core's functions.

Heavy imports (torch) happen inside the commands, so ``casa --version`` is instant.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from . import __version__, methods
from .errors import Cancelled, CasaError
from .spectral_cache import DEFAULT_LIMIT_GB


def _add_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", help="base model: .safetensors file, sharded index.json, diffusers folder, "
                   "pickled .pt/.pth/.ckpt, or a Hugging Face repo id org/name[@revision][:subfolder]")
    p.add_argument("--target", help="distilled target model (same kinds of input as --base); may be left out "
                   "when --target-lora gives the distillation as LoRAs on the base")
    p.add_argument("--target-lora", action="append", metavar="PATH[:STRENGTH]", default=None,
                   help="a distillation LoRA (lightx2v, CausVid, Wan2.2-Lightning ...) that, stacked on the base "
                   "(or on --target), makes the target; repeat to stack several; strength 1 by default")
    p.add_argument("--expert", choices=("high", "low"), default=None,
                   help="two-expert models (Wan2.2 A14B): the expert the LoRA was trained for")
    p.add_argument("--lora", help="LoRA trained on the base: .safetensors file, PEFT folder, or a Hugging Face "
                   "repo id (LoRA, LoHa and LoKr layers)")
    p.add_argument("--lora-file", metavar="NAME", help="which file to use when the LoRA folder or repo holds several")
    p.add_argument("--demo", action="store_true", help="use the bundled tiny demo inputs")
    p.add_argument("--layers", metavar="REGEX", help="only transfer layers whose canonical name matches")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="casa", description="Move a LoRA from a base video diffusion model "
                                 "onto a distilled variant with CASA (closed form, no data, no training).")
    ap.add_argument("--version", action="version", version=f"casa {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("convert", help="convert a LoRA for the distilled model")
    _add_sources(c)
    c.add_argument("--output", "-o", help="where to write the converted LoRA (.safetensors); with several "
                   "methods a folder (DIR/), which gets one file per method")
    _add_run_options(c, several=True)
    c.add_argument("--report", metavar="JSON", help="write per-layer figures to this JSON file (with several "
                   "methods: the comparison, each method's report and the per-method table)")
    c.add_argument("--table", metavar="CSV", help="with several methods: write the comparison table (per layer "
                   "and model-wide figures of every method) to this CSV file")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    _add_batch(sub)
    i = sub.add_parser("inspect", help="show what matches between the inputs (no SVD)")
    _add_sources(i)
    i.add_argument("--no-drift", action="store_true", help="skip reading weights for the drift column")
    i.add_argument("--json", action="store_true", help="print the plan as JSON")
    sub.add_parser("methods", help="list the transfer methods with their parameters and defaults")
    f = sub.add_parser("figures", help="print the per-layer figures of a run report or comparison (--report)")
    f.add_argument("report", help="the JSON file a 'casa convert --report' wrote")
    return ap


def _add_run_options(c: argparse.ArgumentParser, *, several: bool = False, defaults: bool = True) -> None:
    """The method, its parameters and how a conversion runs (``convert`` and ``batch``). ``several``:
    --method takes a comma-separated list; without ``defaults`` the method, format and dtype default
    to None (a batch's manifest may set them)."""
    names = methods.names()
    help_ = "; ".join(f"{m.name}: {m.title}" for m in methods.available())
    if several:
        help_ += (". Several, comma-separated (casa,direct,projection), run in one pass sharing each "
                  "layer's decomposition and write one file per method into the --output folder")
    c.add_argument("--method", choices=_MethodList() if several else names, default=names[0] if defaults else None,
                   metavar="{" + ",".join(names) + "}", help=help_ + " (see 'casa methods')")
    c.add_argument("--rank", default=None, help="output rank: N, 'full' (exact), or 'auto[:FRACTION]': per layer "
                   "the smallest rank (at least the input's) keeping FRACTION (default 0.9) of the update's "
                   "energy; default: the input's rank")
    c.add_argument("--max-rank", type=int, default=None, metavar="N",
                   help="cap of --rank auto (default 4 x the input's rank)")
    for info in methods.all_params().values():
        c.add_argument(_flag(info.name), dest=info.name, type=float, default=None, metavar="X",
                       help=f"{info.help} (default {info.default:g}; {_owners(info.name)})".replace("%", "%%"))
    c.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    c.add_argument("--precision", default="auto", choices=("auto", "float32", "float64"))
    c.add_argument("--workers", type=int, default=None,
                   help="CPU only: layers computed side by side, each on cores/workers threads "
                        "(default 2 when there are 2 or more cores; 1 computes one layer on all cores)")
    c.add_argument("--format", dest="out_format", default="same" if defaults else None,
                   choices=("same", "comfy", "kohya", "diffusers"),
                   help="output layout; 'same' keeps the input's layout and key names")
    c.add_argument("--dtype", dest="out_dtype", default="same" if defaults else None,
                   choices=("same", "float32", "float16", "bfloat16"))
    c.add_argument("--provenance-paths", action="store_true",
                   help="also record the inputs' absolute paths in the output's metadata (by default local "
                        "inputs are named by file name, size and hash)")
    c.add_argument("--cache", metavar="DIR", help="keep the base's singular bases in this folder, so that later "
                   "runs on the same base skip the decomposition (same output bytes)")
    c.add_argument("--cache-limit", metavar="GB", type=float, default=DEFAULT_LIMIT_GB,
                   help=f"the most the cache folder may hold; the least recently used bases go "
                        f"(default {DEFAULT_LIMIT_GB:g})")


def _say_cache(options, quiet: bool) -> None:
    if options.cache and not quiet:
        from .spectral_cache import SpectralCache

        _say(SpectralCache.open(options.cache, options.cache_limit_gb).describe(), file=sys.stderr)


class _Grouped(argparse.Action):
    """--target, --target-lora and --name, kept in the order given (they form target groups)."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest) or [])
        items.append((option_string.lstrip("-"), values))
        setattr(namespace, self.dest, items)


def _add_batch(sub) -> None:
    b = sub.add_parser("batch", help="convert many LoRAs onto one or more targets in one layer-major pass",
                       description="Every LoRA onto every target, layer by layer: each base layer is read and "
                       "decomposed once, each target's drift formed once, only the LoRA's part is repeated. "
                       "Targets: each --target starts one; --target-lora PATH[:STRENGTH] adds a distillation "
                       "LoRA to the open target group (or opens one on the base); --name names and closes it.")
    b.add_argument("--base", help="base model (as for convert)")
    for flag, what in (("--target", "a distilled target model (starts a target group)"),
                       ("--target-lora", "PATH[:STRENGTH]: a distillation LoRA merged into the target group's "
                                         "model (the base when the group has no --target)"),
                       ("--name", "name of the target group just given (default: from its file names)")):
        b.add_argument(flag, dest="target_groups", action=_Grouped, metavar=flag[2:].upper().replace("-", "_"),
                       help=what)
    b.add_argument("--lora", action="append", default=[], metavar="PATH",
                   help="a LoRA file, a folder of LoRAs, or a glob pattern (quoted); repeat for more")
    b.add_argument("--manifest", metavar="FILE", help="a TOML or JSON file listing the base, targets, LoRAs, "
                   "per-LoRA options and output names (see README)")
    b.add_argument("--output-dir", "-o", help="folder the outputs are written to")
    b.add_argument("--pattern", default=None, help="output file names (default {lora}-{target}.safetensors)")
    _add_run_options(b, defaults=False)
    b.add_argument("--layers", metavar="REGEX", help="only transfer layers whose canonical name matches")
    b.add_argument("--chunk", type=int, default=None,
                   help="LoRAs computed together in one pass (default 8): memory grows by their factors, a cancel "
                        "keeps the outputs of finished passes")
    b.add_argument("--force", action="store_true", help="redo outputs already complete with the same provenance")
    b.add_argument("--no-reports", action="store_true", help="no run report beside each output")
    b.add_argument("--executor", default="local",
                   help="local, or ray[:ADDRESS] to run the passes as tasks on a Ray cluster (pip install "
                        "casa-studio[ray])")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress output")


class _MethodList:
    """--method's choices: a registered name, or several comma-separated (argparse asks ``in``)."""

    def __contains__(self, value) -> bool:
        parts = str(value).split(",")
        return all(p in methods.names() for p in parts)

    def __iter__(self):
        return iter(methods.names())


# settings named by the core's messages -> the flags that set them
_FLAGS = {"device": "--device", "rank": "--rank", "precision": "--precision", "format": "--format",
          "dtype": "--dtype", "workers": "--workers", "layers": "--layers", "lora_file": "--lora-file",
          "method": "--method", "base": "--base", "target": "--target", "lora": "--lora", "output": "--output",
          "report": "--report", "max_rank": "--max-rank", "target_lora": "--target-lora", "expert": "--expert",
          "output_dir": "--output-dir", "pattern": "--pattern", "chunk": "--chunk", "manifest": "--manifest",
          "executor": "--executor", "name": "--name", "cache": "--cache", "cache_limit": "--cache-limit"}


def _flag(setting: str) -> str:
    return _FLAGS.get(setting) or "--" + setting.replace("_", "-")


def _owners(name: str) -> str:
    owners = [m.name for m in methods.available() if any(p.name == name for p in m.Params.describe())]
    return "method " + ", ".join(owners)


def _settings(args):
    """The method named by --method with the parameters given as flags (others refused)."""
    return _settings_list(args)[0]


def _settings_list(args):
    """Each method --method names, with the parameters given as flags that it takes; a flag none of
    them takes is refused."""
    from .settings import TransferSettings

    chosen = [methods.get(name) for name in (args.method or methods.DEFAULT).split(",")]
    given = {name: getattr(args, name) for name in methods.all_params() if getattr(args, name) is not None}
    own = {p.name for m in chosen for p in m.Params.describe()}
    foreign = sorted(set(given) - own)
    if foreign:
        which = ",".join(m.name for m in chosen)
        raise CasaError(f"{_flag(foreign[0])} does not apply to --method {which}",
                        f"it takes {', '.join(_flag(p) for p in sorted(own)) or 'no parameters'}")
    out = []
    for m in chosen:
        mine = {p.name for p in m.Params.describe()}
        out.append(TransferSettings.of(m.name, **{k: v for k, v in given.items() if k in mine}))
    return out


def cmd_methods(args) -> int:
    for m in methods.available():
        print(f"{m.name}: {m.title}")
        for p in m.Params.describe():
            bounds = (f"[{p.minimum:g}, {p.maximum:g}]" if p.maximum is not None
                      else f">= {p.minimum:g}" if p.minimum is not None else "")
            print(f"  {_flag(p.name):<10} {p.default:<6g} {bounds:<10} {p.help}")
        if not m.Params.describe():
            print("  (no parameters)")
    return 0


def _fill_demo(args) -> None:
    if args.demo:
        from .resources import demo_inputs

        d = demo_inputs()
        for role in ("base", "target", "lora"):
            if getattr(args, role) is None:
                setattr(args, role, str(d[role]))


def _sources(args):
    _fill_demo(args)
    missing = [f"--{r}" for r in ("base", "target", "lora") if not getattr(args, r)
               and not (r == "target" and args.target_lora)]
    if missing:
        raise CasaError(f"missing {', '.join(missing)}", "give all three inputs (the target as a checkpoint, or as "
                        "distillation LoRAs with --target-lora), or --demo for the bundled demo")
    from .conversion import Conversion

    return Conversion.open(args.base, args.target, args.lora, target_loras=args.target_lora or (),
                           expert=args.expert, lora_file=args.lora_file, layers=args.layers)


class _Progress:
    """A progress bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.t0 = time.perf_counter()
        self.total = total
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="layer", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, i, total, res):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(_clean_line(res.name), refresh=False)
            self.bar.update(1)
            return
        el = time.perf_counter() - self.t0
        eta = el / (i + 1) * (total - i - 1)
        _say(f"[{i + 1}/{total}] {res.name} {res.summary()} eta {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def cmd_convert(args) -> int:
    from .settings import RunOptions, parse_rank

    several = "," in args.method
    if args.output is None:
        if not args.demo:
            raise CasaError("missing --output", "give the path of the converted LoRA to write")
        args.output = "casa-demo-output" + ("/" if several else ".safetensors")
    settings = [s.validate() for s in _settings_list(args)]
    options = RunOptions(rank=parse_rank(args.rank, args.max_rank), device=args.device, precision=args.precision,
                         out_format=args.out_format, out_dtype=args.out_dtype, layers=args.layers,
                         view_size=0, workers=args.workers, provenance_paths=args.provenance_paths,
                         cache=args.cache, cache_limit_gb=args.cache_limit).validate()
    import os

    # (os.path.isdir answers False for a name the filesystem refuses; the output check says why)
    folder = several or args.output.endswith(("/", "\\")) or os.path.isdir(args.output)
    if folder:
        return _compare(args, settings, options)
    if args.table:
        raise CasaError("--table is written by a comparison", "name several methods (--method casa,direct) "
                        "and an output folder")
    settings = settings[0]
    conv = _sources(args)
    cancel = threading.Event()
    progress = _Progress(len(conv.plan.layers), args.quiet)
    try:
        report = conv.convert(args.output, settings, options, cancel=cancel, on_result=progress,
                              report=args.report)
    finally:
        progress.close()
    if not args.quiet:
        t, out = report.totals, report.output
        _say(f"wrote {out.path} ({out.format}, {out.tensors} tensors, {out.bytes / 1e6:.1f} MB): "
              f"{t.layers} layers in {t.seconds:.1f}s, {len(report.passthrough_keys)} keys passed through, "
              f"mean energy kept {t.mean_energy_kept:.3f}", file=sys.stderr)
        for line in _stack_notes(conv.plan.target):
            _say(line, file=sys.stderr)
        if out.dropped:
            _say(f"note: the {out.format} layout cannot hold {len(out.dropped)} pass-through keys "
                  f"(e.g. {out.dropped[0]}); they were left out; use --format same to keep them",
                  file=sys.stderr)
        _say(_model_line(report.model), file=sys.stderr)
        _rank_note(conv.results.values(), options)
    _say_cache(options, args.quiet)
    return 0


def _model_line(fig: dict) -> str:
    def f(key):
        return "-" if fig.get(key) is None else f"{fig[key]:.3f}"

    return (f"model-wide: energy kept {f('energy_kept')} (min {f('min_energy_kept')}), LoRA routing restored "
            f"{f('lora_restored_share')} / capped {f('lora_capped_share')} / reused {f('lora_reused_share')}, "
            f"drift undone {f('drift_undone')}")


def _rank_note(results, options) -> None:
    from .ranks import AutoRank

    if not isinstance(options.rank, AutoRank):
        return
    results = list(results)
    short = [r for r in results if r.rank_capped]
    ranks = [r.rank_out for r in results]
    line = (f"auto rank {options.rank}: ranks {min(ranks)} to {max(ranks)} (total {sum(ranks)}); "
            + (f"{len(short)} layers hit the cap short of {options.rank.fraction:g} (e.g. {short[0].name}, "
               f"keeps {short[0].energy_kept:.3f}); raise --max-rank to keep more" if short
               else f"every layer keeps at least {options.rank.fraction:g}"))
    _say(line, file=sys.stderr)


def _compare(args, settings, options) -> int:
    """Several methods in one pass: one file per method in the output folder, the comparison report."""
    from pathlib import Path

    folder = Path(args.output)
    conv = _sources(args)
    stem = Path(conv.plan.lora.path).stem
    outputs = {s.method: folder / f"{stem}.{s.method}.safetensors" for s in settings}
    if folder.exists() and not folder.is_dir():
        raise CasaError(f"{folder} is a file; with several methods the output is a folder that gets one file "
                        "per method", "give a folder, e.g. out/")
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CasaError(f"cannot make the output folder {folder}: {exc.strerror or exc}",
                        "give a folder you can write to") from None
    cancel = threading.Event()
    progress = _Progress(len(conv.plan.layers), args.quiet)
    try:
        comp = conv.compare(outputs, settings, options, cancel=cancel, report=args.report,
                            on_result=lambda i, n, by: progress(i, n, next(iter(by.values()))))
        if args.table:
            from .outputs import atomic_write

            blob = comp.csv().encode()
            atomic_write(Path(args.table), lambda fh: fh.write(blob), "table")
    except BaseException:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    finally:
        progress.close()
    if not args.quiet:
        _say(f"wrote {len(outputs)} files into {folder}:", file=sys.stderr)
        _print_summary(comp.summary, file=sys.stderr)
    _say_cache(options, args.quiet)
    return 0


def _print_summary(rows, file=None) -> None:
    def f(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    _say(f"  {'method':<18} {'energy kept':>11} {'restored':>9} {'capped':>7} {'reused':>7} {'drift undone':>12} "
         f"{'rank':>6} {'MB':>8}", file=file)
    for r in rows:
        size = f(r["bytes"] / 1e6, ".2f") if r.get("bytes") is not None else "-"
        _say(f"  {r['method']:<18} {f(r['energy_kept']):>11} {f(r['lora_restored_share']):>9} "
             f"{f(r['lora_capped_share']):>7} {f(r['lora_reused_share']):>7} {f(r['drift_undone']):>12} "
             f"{r['rank_out_total']:>6} {size:>8}", file=file)


def cmd_figures(args) -> int:
    """The per-layer figures of a run report (or of every method of a comparison), as a table."""
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(args.report).read_text())
    except (OSError, ValueError) as exc:
        raise CasaError(f"cannot read the report {args.report}: {exc}", "give a JSON file written by --report") \
            from None
    reports = data.get("reports") or {data.get("settings", {}).get("method", "?"): data}
    if not isinstance(reports, dict) or not all(isinstance(r, dict) and "layers" in r for r in reports.values()):
        raise CasaError(f"{args.report} is not a run report", "give a JSON file written by --report")

    def f(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    for method, rep in reports.items():
        _say(f"{method}:")
        _say(f"  {'layer':<28} {'rank':>9} {'energy kept':>11} {'restored':>9} {'capped':>7} {'reused':>7} "
             f"{'drift undone':>12}")
        for name, fig in rep["layers"].items():
            rank = f"{fig.get('rank_in')}->{fig.get('rank_out')}" + ("*" if fig.get("rank_capped") else "")
            _say(f"  {name:<28} {rank:>9} {f(fig.get('energy_kept')):>11} {f(fig.get('lora_restored_share')):>9} "
                 f"{f(fig.get('lora_capped_share')):>7} {f(fig.get('lora_reused_share')):>7} "
                 f"{f(fig.get('drift_undone')):>12}")
        if rep.get("model"):
            _say("  " + _model_line(rep["model"]))
        if any(fig.get("rank_capped") for fig in rep["layers"].values()):
            _say("  * the auto rank hit its cap before keeping its fraction")
    if data.get("summary"):
        _say("\nmodel-wide:")
        _print_summary(data["summary"])
    return 0


def _stack_notes(target) -> list[str]:
    """What a user must know about an output made for a target given as distillation LoRAs."""
    from .distillation import StackedTarget

    if not isinstance(target, StackedTarget):
        return []
    return [f"note: it was converted for a target of distillation LoRAs: {target.usage()}"]


def _target_groups(items) -> list:
    """--target / --target-lora / --name, in order, to TargetSpecs (see the batch command's help)."""
    from .batch import TargetSpec
    from .distillation import parse_weighted

    groups: list[dict] = []
    open_ = None
    for kind, value in items or []:
        if kind == "target":
            open_ = {"path": value, "loras": [], "name": None}
            groups.append(open_)
        elif kind == "target-lora":
            if open_ is None:
                open_ = {"path": None, "loras": [], "name": None}
                groups.append(open_)
            w = parse_weighted(value)     # as convert reads --target-lora
            open_["loras"].append((w.spec, w.strength))
        else:
            if open_ is None:
                raise CasaError(f"--name {value} follows no target", "give it after the --target or "
                                "--target-lora it names")
            open_["name"], open_ = value, None
    return [TargetSpec(g["name"], g["path"], tuple(g["loras"])) for g in groups]


def cmd_batch(args) -> int:
    from dataclasses import replace

    from .batch import CHUNK, FAILED, PATTERN, SKIPPED, WRITTEN, Batch, BatchSpec, LoraSpec, expand_loras, read_manifest
    from .settings import RunOptions, TransferSettings, parse_rank

    man = read_manifest(args.manifest) if args.manifest else {"targets": [], "loras": [], "options": {}}
    base = args.base or man.get("base")
    if not base:
        raise CasaError("missing --base", "give the base model the LoRAs were trained on")
    out_dir = args.output_dir or man.get("output_dir")
    if not out_dir:
        raise CasaError("missing --output-dir", "give the folder to write the outputs to")
    given = args.method is not None or any(getattr(args, n) is not None for n in methods.all_params())
    settings = _settings(args).validate() if given or man.get("settings") is None else man["settings"]
    opts = dict(man.get("options") or {})
    rank = parse_rank(args.rank, args.max_rank) if args.rank is not None or args.max_rank is not None else None
    for name, value in (("rank", rank),
                        ("out_format", args.out_format), ("out_dtype", args.out_dtype), ("layers", args.layers)):
        if value is not None:
            opts[name] = value
    options = replace(RunOptions(device=args.device, precision=args.precision, view_size=0, workers=args.workers,
                                 provenance_paths=args.provenance_paths, cache=args.cache,
                                 cache_limit_gb=args.cache_limit), **opts).validate()
    loras = [LoraSpec(p) for p in expand_loras(args.lora)] + man["loras"]
    spec = BatchSpec(base, _target_groups(args.target_groups) + man["targets"], loras, out_dir,
                     settings or TransferSettings(), options, pattern=args.pattern or man.get("pattern") or PATTERN,
                     reports=not args.no_reports, force=args.force,
                     chunk=args.chunk if args.chunk is not None else man.get("chunk") or CHUNK)
    batch = Batch(spec)
    entries = batch.prepare()
    progress = _BatchProgress(args.quiet)
    if not args.quiet:
        todo = sum(e.status == "pending" for e in entries)
        _say(f"{len(entries)} outputs ({len(spec.loras)} LoRAs x {len(spec.targets)} targets): {todo} to compute, "
             f"{sum(e.status == SKIPPED for e in entries)} complete already, "
             f"{sum(e.status == FAILED for e in entries)} failed", file=sys.stderr)
    try:
        summary = batch.run(progress=progress, executor=args.executor)
    except (Cancelled, KeyboardInterrupt, _Signalled) as exc:
        progress.close()
        kept = sum(e.status == WRITTEN for e in batch.entries)
        _say(f"casa: cancelled; finished outputs kept: {kept}; nothing partial was written", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, _Signalled) else 130
    progress.close()
    failed = summary.failed
    if not args.quiet or failed:
        _say(f"batch: {summary.count(WRITTEN)} written, {summary.count(SKIPPED)} complete already, {len(failed)} "
             f"failed, in {summary.seconds:.1f}s (base layers decomposed {summary.base_layers}, target drifts "
             f"{summary.pairs}); summary {summary.path}", file=sys.stderr)
        for e in failed:
            _say(f"  failed: {e.lora} -> {e.target}: {e.error}", file=sys.stderr)
    _say_cache(options, args.quiet)
    return 1 if failed else 0


class _BatchProgress:
    """Layers of the pass and outputs finished, with the time left: a bar on a terminal, else a line for
    each finished output and one every few seconds."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.last = quiet, None, 0.0
        self.tty = not quiet and sys.stderr.isatty()

    def __call__(self, p) -> None:
        if self.quiet:
            return
        if p.entry is not None:
            e = p.entry
            line = (f"[{p.outputs_done}/{p.outputs}] {e.lora} -> {e.target}: {e.status}"
                    + (f" ({e.error})" if e.error else f" {e.path}"))
            if self.bar is not None:
                self.bar.write(_clean_line(line), file=sys.stderr)
            else:
                _say(line, file=sys.stderr, flush=True)
            return
        eta = "" if p.eta is None else f" eta {p.eta:.0f}s"
        text = f"pass {p.pass_index + 1}/{p.passes} layer {p.layer}/{p.layers}, outputs {p.outputs_done}/{p.outputs}"
        if self.tty:
            from tqdm import tqdm

            if self.bar is None or self.bar.total != p.layers:
                self.close()
                self.bar = tqdm(total=p.layers, unit="layer", file=sys.stderr, dynamic_ncols=True)
            self.bar.set_postfix_str(f"pass {p.pass_index + 1}/{p.passes}, outputs {p.outputs_done}/{p.outputs}"
                                     f"{eta}", refresh=False)
            self.bar.update(p.layer - self.bar.n)
        elif time.perf_counter() - self.last > 5 or p.layer == p.layers:
            self.last = time.perf_counter()
            _say(text + eta, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_inspect(args) -> int:
    """What matches between any two or three inputs, and why not; the plan when all three fit."""
    import json

    from .drift import layer_drift
    from .plan import make_plan
    from .sources import open_lora, open_model
    from .sources.compat import verdicts

    _fill_demo(args)
    given = [r for r in ("base", "target", "lora") if getattr(args, r) or (r == "target" and args.target_lora)]
    if len(given) < 2:
        raise CasaError("inspect needs at least two of --base, --target and --lora",
                        "give two inputs to compare (the target may be --target-lora), three to see the plan, "
                        "or --demo")
    from .experts import check_choice
    from .sources import open_target

    base = open_model(args.base, "base", expert=args.expert) if args.base else None
    target = open_target(args.target, args.target_lora or (), base=base, expert=args.expert) \
        if "target" in given else None
    lora = open_lora(args.lora, lora_file=args.lora_file) if args.lora else None
    check_choice(args.expert, [base, target], [lora])
    checks = verdicts(base, target, lora)
    plan = error = None
    if len(given) == 3:
        try:
            plan = make_plan(base, target, lora, layers=args.layers)
        except CasaError as exc:
            error = exc
    desc = plan.describe() if plan else {}
    if plan and not args.no_drift:
        for row, lp in zip(desc["layers"], plan.layers, strict=False):
            row["drift"] = layer_drift(plan, lp)
    if args.json:
        print(json.dumps(desc | {"checks": checks}, indent=1))  # JSON escapes control characters itself
    else:
        _print_checks(checks)
        if plan:
            _print_plan(desc, plan)
    if error is not None:
        raise error
    return 0


def _print_checks(checks) -> None:
    from .sources.compat import LoraFacts, ModelFacts

    for role, facts in checks["sources"].items():
        _say(f"{role:<8}{(LoraFacts if role == 'lora' else ModelFacts)(**facts).line()}")
        for line in facts.get("distillation", ()):
            _say(f"{'':<8}+ distillation LoRA {line}")
    m = checks["matches"]
    if "base-target" in m:
        bt = m["base-target"]
        line = f"\nbase vs target: {bt['shared']} tensors in common"
        line += f", {len(bt['mismatched'])} differ in shape" if bt["mismatched"] else ", all shapes agree"
        _say(line)
        if bt["ignored_target_extras"]:
            _say(f"  ignored: the target's extra layers the base lacks: {', '.join(bt['ignored_target_extras'][:6])}")
        if bt["only_base"]:
            _say(f"  missing from the target: {', '.join(bt['only_base'][:6])}")
    for role in ("base", "target"):
        lm = m.get(f"lora-{role}")
        if lm is None:
            continue
        _say(f"\nlora vs {role}: {lm['fits']} of {lm['total']} LoRA layers fit")
        if lm["mismatched"]:
            first = lm["mismatched"][0]
            _say(f"  {len(lm['mismatched'])} differ in shape (first: {first['name']} is "
                  f"{'x'.join(map(str, first['left']))} in the LoRA, {'x'.join(map(str, first['right']))} "
                  f"in the {role})")
        if lm["unknown"]:
            _say(f"  {len(lm['unknown'])} name no layer of the {role} (first: {lm['unknown'][0]})")
        if lm["not_linear"]:
            _say(f"  {len(lm['not_linear'])} fit but are not 2-D linears; they pass through")
    for p in checks["problems"]:
        _say(f"\n! {p}")


def _print_plan(desc, plan) -> None:
    _say(f"\n{len(plan.layers)} layers will transfer:")
    _say(f"  {'layer':<28} {'shape':>12} {'rank':>5} {'scale':>8} {'drift':>8}")
    for row in desc["layers"]:
        drift = f"{row['drift']:.4f}" if "drift" in row else "-"
        _say(f"  {row['module']:<28} {'x'.join(map(str, row['shape'])):>12} {row['rank']:>5} "
              f"{row['scale']:>8.4g} {drift:>8}")
    if desc["passed_through"]:
        _say(f"\n{len(desc['passed_through'])} LoRA layers pass through unchanged:")
        for p in desc["passed_through"]:
            _say(f"  {p['prefix']}: {p['reason']}")
    if desc["other_keys"]:
        _say(f"\n{len(desc['other_keys'])} other keys pass through unchanged (diff, diff_b, ...):")
        for k in desc["other_keys"][:20]:
            _say(f"  {k}")
        if len(desc["other_keys"]) > 20:
            _say(f"  ... and {len(desc['other_keys']) - 20} more")
    split = [p for p in plan.lora.pairs if p.kind == "lora" and p.source_keys]
    if split:
        fused = sorted({p.source_keys[0] for p in split})
        _say(f"\nnote: {len(fused)} LoRA layers on fused projections (e.g. {fused[0]}) are read as {len(split)} "
             "pairs, one per projection (its rows of the up factor, the shared down factor), and written so")
    converted = sorted({lp.pair.kind for lp in plan.layers} - {"lora"})
    if converted:
        from .sources.compat import KIND_NAMES

        _say(f"\nnote: {'/'.join(KIND_NAMES[k] for k in converted)} layers are materialised and "
              "written as a standard LoRA")


def _clean_line(text: str) -> str:
    """One line safe for a terminal: every control character (from key names in strangers' files) escaped,
    newlines too, so that a name cannot forge a line of its own."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _say(text="", file=None, **kwargs) -> None:
    """Print one line that may carry names from a file (keys, layers, paths) with control characters escaped;
    only the leading newlines the CLI itself puts there stay."""
    text = str(text)
    body = text.lstrip("\n")
    print("\n" * (len(text) - len(body)) + _clean_line(body), file=file or sys.stdout, **kwargs)


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so temporary files are removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum, frame):
    raise _Signalled(signum)


def _catch_signals() -> None:
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise_signalled)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _catch_signals()
    try:
        return {"convert": cmd_convert, "batch": cmd_batch, "inspect": cmd_inspect, "methods": cmd_methods,
                "figures": cmd_figures}[args.command](args)
    except CasaError as exc:
        flag = f" ({' '.join(filter(None, (_flag(exc.setting), exc.example)))})" if exc.setting else ""
        print(f"casa: error: {_clean_line(exc)}{flag}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("casa: cancelled; nothing was written", file=sys.stderr)
        return 130
    except _Signalled as sig:
        print("casa: cancelled; nothing was written", file=sys.stderr)
        return 128 + sig.signum


if __name__ == "__main__":
    sys.exit(main())
