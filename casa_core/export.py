"""Write the converted LoRA: chosen layout, scale folded in, provenance, atomic rename."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__, dtypes, names, stwriter
from .errors import CasaError
from .lora import KOHYA_PREFIXES

# tails of LoRA keys after the module name, longest first
_TAILS = (".lora_A.default.weight", ".lora_B.default.weight", ".lora_A.weight", ".lora_B.weight",
          ".lora_down.weight", ".lora_up.weight", ".lora_alpha", ".alpha", ".diff_b", ".diff",
          ".dora_scale")


@dataclass(frozen=True)
class ExportInfo:
    path: Path
    bytes: int
    tensors: int
    format: str
    dropped: tuple[str, ...] = ()   # pass-through keys the chosen layout cannot hold


def check_output(output: Path, inputs) -> None:
    """Refuse an output that would overwrite an input or cannot be written; before any work."""
    output = Path(output)
    if output.is_dir():
        raise CasaError(f"output {output} is a folder", "give a file name ending in .safetensors")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise CasaError(f"output folder {parent} does not exist", "create it or pick another output path")
    try:  # a real probe: permissions, read-only mounts and full disks all show here
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise CasaError(f"output folder {parent} cannot be written", "pick a folder you can write to") from None
    out = output.resolve()
    for src in inputs:
        if src is None:
            continue
        src = Path(src).resolve()
        if out == src:
            raise CasaError(f"output {output} is one of the inputs", "pick a new file name for the output")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def key_prefix(module: str, fmt: str, family) -> str:
    """The key prefix a canonical module gets in an output format."""
    if fmt == "comfy":
        return f"diffusion_model.{module}"
    if fmt == "kohya":
        return "lora_unet_" + module.replace(".", "_")
    if fmt == "diffusers":
        return "transformer." + family.to_diffusers(module)
    raise ValueError(fmt)


def _pair_keys(lp, fmt: str, family) -> tuple[str, str, str | None]:
    """(down key, up key, alpha key or None) of one converted layer."""
    if fmt == "same":
        pair = lp.pair
        down = pair.down_key
        up = pair.up_key
        # alpha stays only where the loaders need it (kohya; FastVideo's lora_alpha), set to rank
        keep_alpha = pair.alpha_key and (pair.prefix.startswith(KOHYA_PREFIXES)
                                         or pair.alpha_key.endswith(".lora_alpha"))
        return down, up, pair.alpha_key if keep_alpha else None
    pre = key_prefix(lp.module, fmt, family)
    if fmt == "kohya":
        return pre + ".lora_down.weight", pre + ".lora_up.weight", pre + ".alpha"
    return pre + ".lora_A.weight", pre + ".lora_B.weight", None


def _rename_passthrough(key: str, fmt: str, family, kohya_index: dict[str, str]) -> str:
    if fmt == "same":
        return key
    for tail in _TAILS:
        if key.endswith(tail):
            stem = key[: -len(tail)]
            if stem.startswith(KOHYA_PREFIXES):
                module = kohya_index.get(stem.split("lora_unet_", 1)[1].lstrip("_"))
            else:
                bare = names.strip_prefix(stem)
                module = family.to_canonical(bare, family.is_diffusers_name(bare))
            return key_prefix(module, fmt, family) + tail if module else key
    return key


def architecture(plan) -> str:
    """``modelspec.architecture``: from the base's hidden size, else from the first layer's input width."""
    family = plan.base.family
    dim = family.hidden_size(plan.base)
    if dim is None:
        dim = plan.layers[0].shape[1] if plan.layers else 0
    return family.architecture(dim)


def factor_dtype(plan, out_dtype: str = "same"):
    """The torch dtype the written factors have."""
    import torch

    return getattr(torch, dtypes.written(plan.lora.factor_dtype() if out_dtype == "same" else out_dtype))


def write_lora(plan, results, output, *, out_format: str = "same", out_dtype: str = "same",
               provenance: dict | None = None) -> ExportInfo:
    """Write converted factors and pass-through keys to ``output`` via a temporary file.

    ``results`` maps canonical module -> LayerResult (or anything with ``up``/``down``).
    Nothing is left at ``output`` or beside it if writing fails.
    """
    import torch

    output = Path(output)
    fmt = out_format
    layout = plan.lora.format if fmt == "same" else fmt
    dtype = factor_dtype(plan, out_dtype)
    tensors: dict[str, torch.Tensor] = {}
    ranks = set()
    for lp in plan.layers:
        res = results[lp.module]
        down_k, up_k, alpha_k = _pair_keys(lp, fmt, plan.base.family)
        down = res.down.reshape(res.down.shape[0], *plan.lora.store.shape(lp.pair.down_key)[1:])
        up = res.up.reshape(res.up.shape[0], res.up.shape[1], *plan.lora.store.shape(lp.pair.up_key)[2:])
        tensors[down_k] = down.to(dtype).contiguous()
        tensors[up_k] = up.to(dtype).contiguous()
        if alpha_k:
            tensors[alpha_k] = torch.tensor(float(res.rank_out), dtype=torch.float32)
        ranks.add(res.rank_out)
    kohya_index = names.underscore_index(plan.base.modules(), plan.base.family)
    dropped = []
    for key in plan.passthrough_keys:
        new = _rename_passthrough(key, fmt, plan.base.family, kohya_index)
        if fmt == "diffusers":
            # diffusers' own layout has a bias update (lora_B.bias) but no form for a full diff,
            # and refuses the whole file when any key lacks "lora"
            if new.endswith(".diff_b"):
                new = new[: -len(".diff_b")] + ".lora_B.bias"
            elif "lora" not in new:
                dropped.append(key)
                continue
        if new in tensors:
            continue
        tensors[new] = plan.lora.store.read(key)
    meta = {
        "format": "pt",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture(plan),
        "modelspec.implementation": "casa-studio",
        "modelspec.title": plan.lora.metadata.get("modelspec.title", plan.lora.path.stem),
        "casa.version": __version__,
        "casa.layout": layout,
    }
    for k in ("modelspec.date", "modelspec.author", "modelspec.description"):
        if k in plan.lora.metadata:
            meta[k] = plan.lora.metadata[k]
    if "SOURCE_DATE_EPOCH" in os.environ:
        import datetime

        ts = datetime.datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), datetime.timezone.utc)
        meta["modelspec.date"] = ts.strftime("%Y-%m-%d")
    if layout == "kohya":
        r = max(ranks) if ranks else 0
        meta["ss_network_dim"] = str(r)
        meta["ss_network_alpha"] = str(r)
    for k, v in (provenance or {}).items():
        meta[f"casa.{k}"] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    info = _atomic_save(tensors, meta, output, layout)
    return ExportInfo(info.path, info.bytes, info.tensors, info.format, tuple(dropped))


def _atomic_save(tensors, meta, output: Path, layout: str) -> ExportInfo:
    fd, tmp = tempfile.mkstemp(dir=output.parent if str(output.parent) else ".",
                               prefix=f".{output.name}.", suffix=".part")
    os.close(fd)
    try:
        stwriter.save(tensors, tmp, meta)
        os.replace(tmp, output)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CasaError(f"cannot write {output}: {exc.strerror or exc}",
                            "check free disk space and permissions") from None
        raise
    return ExportInfo(output, output.stat().st_size, len(tensors), layout)
