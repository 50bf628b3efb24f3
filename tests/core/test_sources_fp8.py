"""fp8 models (float8_e4m3fn, float8_e5m2, and "scaled" files) read as float32 within fp8 rounding."""

import pytest
import torch
from safetensors.torch import save_file

from casa_core.conversion import Conversion
from casa_core.models import ModelSource
from casa_core.settings import RunOptions, TransferSettings
from tests.core import factories as f

# relative rounding of a normal number (half an ulp) and the smallest subnormal step, per format
FORMATS = {torch.float8_e4m3fn: (2.0 ** -4, 2.0 ** -9, 448.0), torch.float8_e5m2: (2.0 ** -3, 2.0 ** -16, 57344.0)}


@pytest.fixture(scope="module")
def base_t():
    return f.model_tensors(0)


@pytest.fixture(scope="module")
def target(base_t):
    return f.drifted(base_t, 3)


def fp8_file(t, path, dtype, scaled=None, prefix="model.diffusion_model."):
    """ComfyUI-style fp8 repack: 2-D weights in fp8, the rest as is; ``scaled``: None, 'tensor' or 'row'.

    Returns the file and what a reader must give back (the exact dequantised values).
    """
    out, want = {}, {}
    if scaled:
        out[prefix + "scaled_fp8"] = torch.zeros(2, dtype=dtype)
    for k, v in t.items():
        if not (k.endswith(".weight") and v.dim() == 2):
            out[prefix + k] = v
            want[k] = v
            continue
        if scaled is None:
            q = v.to(dtype)
            want[k] = q.float()
        else:
            amax = v.abs().amax(dim=1, keepdim=True) if scaled == "row" else v.abs().max()
            s = (amax / FORMATS[dtype][2]).float()
            q = (v / s).to(dtype)
            want[k] = q.float() * s
            module = k[: -len(".weight")]
            name = ".weight_scale" if scaled == "row" else ".scale_weight"
            out[prefix + module + name] = s.reshape(-1) if scaled == "row" else s.reshape(())
            out[prefix + module + ".scale_input"] = torch.tensor(1.0)
        out[prefix + k] = q
    save_file(out, path)
    return path, want


@pytest.mark.parametrize("dtype", list(FORMATS), ids=["e4m3fn", "e5m2"])
@pytest.mark.parametrize("scaled", [None, "tensor", "row"])
def test_reads_within_fp8_rounding(tmp_path, target, dtype, scaled):
    path, want = fp8_file(target, tmp_path / "fp8.safetensors", dtype, scaled)
    m = ModelSource(path, "target")
    assert set(m.canonical_keys()) == set(target)   # scales and the marker are not model tensors
    assert m.quantisation.endswith({torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}[dtype])
    assert m.quantisation.startswith("scaled") == bool(scaled)
    rel, sub, top = FORMATS[dtype]
    for k, w in target.items():
        got = m.read(k)
        assert torch.equal(got, want[k]), k
        if k.endswith(".weight") and w.dim() == 2:
            assert got.dtype == torch.float32
            if scaled == "row":
                step = sub * w.abs().amax(dim=1, keepdim=True) / top
            else:
                step = sub * (w.abs().max() / top if scaled else 1.0)
            assert bool(((got - w).abs() <= rel * w.abs() + step).all()), k


def test_scaled_fp8_target_converts_like_its_float32_values(tmp_path, base_t, target):
    """The same numbers reach the engine as from a float32 file of the dequantised weights."""
    base = f.write_model(base_t, tmp_path / "base.safetensors")
    fp8, want = fp8_file(target, tmp_path / "wan_fp8_scaled.safetensors", torch.float8_e4m3fn, "tensor")
    ref = f.write_model(want, tmp_path / "ref.safetensors")
    lora = f.write_lora(f.lora_factors(base_t, 1, rank=4), tmp_path / "lora.safetensors", alpha=2.0)
    opts = RunOptions(rank="full", device="cpu", view_size=0)
    few = r"blocks\.0\.(self_attn\.q|ffn\.0)"
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    Conversion.open(base, fp8, lora, layers=few).convert(a, TransferSettings(), opts)
    Conversion.open(base, ref, lora, layers=few).convert(b, TransferSettings(), opts)
    ga, gb = f.read_updates(a), f.read_updates(b)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


def test_fp8_base_and_target(tmp_path, base_t, target):
    """Both sides in fp8 (a plain e4m3 base, an e5m2 target): the plan reads, the shapes agree."""
    base, _ = fp8_file(base_t, tmp_path / "base.safetensors", torch.float8_e4m3fn, None, prefix="")
    tgt, _ = fp8_file(target, tmp_path / "target.safetensors", torch.float8_e5m2, "tensor")
    lora = f.write_lora(f.lora_factors(target, 1, rank=4), tmp_path / "lora.safetensors")
    conv = Conversion.open(base, tgt, lora)
    plan = conv.plan
    assert len(plan.layers) == 25
    assert plan.base.read("blocks.1.ffn.2.weight").dtype == torch.float32
