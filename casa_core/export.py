"""Write the converted LoRA: chosen layout (``formats``), scale folded in, provenance, atomic rename."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import __version__, dtypes, formats, stwriter
from .errors import CasaError


@dataclass(frozen=True)
class ExportInfo:
    path: Path
    bytes: int
    tensors: int
    format: str
    dropped: tuple[str, ...] = ()   # pass-through keys the chosen layout cannot hold


def source_date() -> str | None:
    """``modelspec.date`` from ``SOURCE_DATE_EPOCH`` (reproducible builds), or None when it is unset."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None:
        return None
    import datetime

    try:
        ts = datetime.datetime.fromtimestamp(int(raw.strip()), datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise CasaError(f"SOURCE_DATE_EPOCH={shown!r} is not a Unix timestamp (whole seconds since 1970)",
                        "unset it, or set it to e.g. 1767225600") from None
    return ts.strftime("%Y-%m-%d")


def _pair_keys(lp, writer, family) -> tuple[str, str, str | None]:
    """(down key, up key, alpha key or None) of one converted layer; ``writer`` None keeps the input's keys."""
    pair = lp.pair
    if writer is None:
        # alpha stays only where the loaders need it, set to the rank
        return pair.down_key, pair.up_key, pair.alpha_key if formats.keeps_alpha(pair) else None
    pre = writer.key_prefix(lp.module, family)
    down, up, alpha = writer.WRITES
    return pre + down, pre + up, pre + alpha if alpha else None


def architecture(plan) -> str:
    """``modelspec.architecture``: the family's name for the base (its size, its expert), else from the
    first layer's input width."""
    family = plan.base.family
    if family.hidden_size(plan.base) is not None:
        return family.model_architecture(plan.base)
    return family.architecture(plan.layers[0].shape[1] if plan.layers else 0)


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
    layout = plan.lora.format if out_format == "same" else out_format
    writer = None if out_format == "same" else formats.WRITERS[out_format]
    family = plan.base.family
    dtype = factor_dtype(plan, out_dtype)
    tensors: dict[str, torch.Tensor] = {}
    ranks = set()
    for lp in plan.layers:
        res = results[lp.module]
        down_k, up_k, alpha_k = _pair_keys(lp, writer, family)
        down = res.down.reshape(res.down.shape[0], *plan.lora.store.shape(lp.pair.down_key)[1:])
        up = res.up.reshape(res.up.shape[0], res.up.shape[1], *plan.lora.store.shape(lp.pair.up_key)[2:])
        tensors[down_k] = down.to(dtype).contiguous()
        tensors[up_k] = up.to(dtype).contiguous()
        if alpha_k:
            tensors[alpha_k] = torch.tensor(float(res.rank_out), dtype=torch.float32)
        ranks.add(res.rank_out)
    module_of = formats.module_resolver(plan.base)
    dropped = []
    for key in plan.passthrough_keys:
        new = key if writer is None else formats.passthrough_key(key, writer, family, module_of)
        if new is None:
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
    date = source_date()
    if date is not None:
        meta["modelspec.date"] = date
    meta.update(formats.WRITERS[layout].header(ranks))
    for k, v in (provenance or {}).items():
        meta[f"casa.{k}"] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    info = _atomic_save(tensors, meta, output, layout)
    return ExportInfo(info.path, info.bytes, info.tensors, info.format, tuple(dropped))


def _atomic_save(tensors, meta, output: Path, layout: str) -> ExportInfo:
    from .outputs import atomic_write

    atomic_write(output, lambda fh: stwriter.write(tensors, fh, meta), "output")
    return ExportInfo(output, output.stat().st_size, len(tensors), layout)
