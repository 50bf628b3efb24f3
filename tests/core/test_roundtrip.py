"""Every model layout and LoRA format in, every output format out, with alpha != rank.

With the target identical to the base the rule must give back the input update
exactly, so these round trips check reading, scaling, naming and writing at once.
"""

import pytest
import torch

from casa_core.conversion import Conversion
from casa_core.settings import RunOptions, TransferSettings
from tests.core import factories as f

MODEL_LAYOUTS = {
    "original-file-f32": dict(layout="original"),
    "original-prefixed-bf16": dict(layout="original", prefix="model.diffusion_model.", dtype=torch.bfloat16),
    "original-diffusion_model-f16": dict(layout="original", prefix="diffusion_model.", dtype=torch.float16),
    "krea-model-prefix": dict(layout="original", prefix="model."),
    "original-sharded-index": dict(layout="original", shards=3),
    "diffusers-folder": dict(layout="diffusers", folder="diffusers", shards=2),
    "diffusers-transformer-folder-bf16": dict(layout="diffusers", folder="transformer", dtype=torch.bfloat16),
    "diffusers-single-file": dict(layout="diffusers"),
}

LORA_FORMATS = {
    "comfy-lora_A-alpha": dict(fmt="comfy", alpha=2.0),
    "comfy-lora_down-alpha": dict(fmt="comfy", alpha=8.0, style="lora_down"),
    "comfy-no-alpha": dict(fmt="comfy"),
    "kohya-alpha": dict(fmt="kohya", alpha=1.0, style="lora_down"),
    "diffusers-metadata-alpha": dict(fmt="diffusers", alpha=2.0),
}


def _exact(model_kw, lora_kw, tmp_path, out_format="same", rank="full"):
    t = f.model_tensors(0)
    base = f.write_model(t, tmp_path / "base" / "base.safetensors", **model_kw)
    target = f.write_model(t, tmp_path / "target" / "target.safetensors", **model_kw)
    factors = f.lora_factors(t, 1, rank=4)
    lora = f.write_lora(factors, tmp_path / "lora.safetensors", **lora_kw)
    conv = Conversion.open(base, target, lora)
    plan = conv.plan
    assert len(plan.layers) == len(factors)
    out = tmp_path / "out.safetensors"
    conv.convert(out, TransferSettings(), RunOptions(rank=rank, device="cpu", out_format=out_format, view_size=0))
    got = f.read_updates(out)
    alpha = lora_kw.get("alpha")
    scale = alpha / 4 if alpha is not None else 1.0
    return plan, got, factors, scale


@pytest.mark.parametrize("layout", MODEL_LAYOUTS, ids=list(MODEL_LAYOUTS))
def test_model_layouts(layout, tmp_path):
    """Base = target in any layout: the output applies the input update exactly (per layer)."""
    kw = MODEL_LAYOUTS[layout]
    plan, got, factors, scale = _exact(kw, LORA_FORMATS["comfy-lora_A-alpha"], tmp_path)
    assert plan.base.layout == kw["layout"]
    for m, (B, A) in factors.items():
        want = scale * B.double() @ A.double()
        g = got[f"diffusion_model.{m}"]
        assert torch.allclose(g, want, rtol=0, atol=1e-5 * want.abs().max()), m


@pytest.mark.parametrize("fmt", LORA_FORMATS, ids=list(LORA_FORMATS))
@pytest.mark.parametrize("out_format", ["same", "comfy", "kohya", "diffusers"])
def test_lora_formats(fmt, out_format, tmp_path):
    """Each input format, written in each output format, keeps the update with the scale folded in."""
    lora_kw = LORA_FORMATS[fmt]
    plan, got, factors, scale = _exact(MODEL_LAYOUTS["diffusers-folder"], lora_kw, tmp_path, out_format)
    assert plan.lora.format == lora_kw["fmt"]
    from casa_core.formats import WRITERS

    for lp in plan.layers:
        B, A = factors[lp.module]
        want = scale * B.double() @ A.double()
        layout = plan.lora.format if out_format == "same" else out_format
        pre = lp.pair.prefix if out_format == "same" else WRITERS[layout].key_prefix(lp.module, plan.base.family)
        assert pre in got, (pre, sorted(got)[:3])
        assert torch.allclose(got[pre], want, rtol=0, atol=1e-5 * want.abs().max()), lp.module


def test_default_rank_is_input_rank(tmp_path):
    from safetensors import safe_open

    plan, got, factors, scale = _exact(MODEL_LAYOUTS["original-file-f32"], LORA_FORMATS["kohya-alpha"],
                                       tmp_path, rank=None)
    with safe_open(tmp_path / "out.safetensors", "pt") as fh:
        keys = list(fh.keys())
        meta = fh.metadata()
        down = [k for k in keys if k.endswith(".lora_down.weight")]
        assert all(fh.get_slice(k).get_shape()[0] == 4 for k in down)
        # kohya keeps an alpha equal to the rank, so loaders apply scale 1
        assert all(float(fh.get_tensor(k)) == 4.0 for k in keys if k.endswith(".alpha"))
    assert meta["format"] == "pt" and meta["ss_network_dim"] == "4"
    assert "casa.lora_sha256" in meta and "casa.settings" in meta
