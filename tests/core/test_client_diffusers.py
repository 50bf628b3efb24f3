"""A real client: diffusers loads the converted files and applies the engine's update."""

import json

import pytest
import torch

from casa_core.conversion import Conversion
from casa_core.resources import demo_inputs
from casa_core.settings import RunOptions, TransferSettings
from tests.conftest import GOLDEN_DIR

pytest.importorskip("diffusers")
pytest.importorskip("peft")
from tests.clients import diffusers_applied_updates, golden_wan_config  # noqa: E402


def _convert(base, target, lora, tmp_path, formats, rank=None):
    conv = Conversion.open(base, target, lora)
    settings = TransferSettings()
    conv.run(settings, RunOptions(device="cpu", rank=rank, view_size=0))
    outs = {}
    for fmt in formats:
        out = tmp_path / f"{fmt}.safetensors"
        conv.export(out, settings, RunOptions(out_format=fmt, rank=rank))
        outs[fmt] = out
    return dict(conv.results), outs


def _check(results, path, config):
    applied = diffusers_applied_updates(path, config)
    assert set(applied) == set(results), sorted(set(applied) ^ set(results))[:5]
    for name, res in results.items():
        want = res.up.double() @ res.down.double()
        got = applied[name].double()
        assert torch.allclose(got, want, rtol=0, atol=2e-6 * want.abs().max()), name


@pytest.mark.parametrize("fmt", ["same", "comfy", "diffusers"])
def test_demo_outputs_load_in_diffusers(fmt, tmp_path):
    d = demo_inputs()
    results, outs = _convert(d["base"], d["target"], d["lora"], tmp_path, [fmt])
    config = json.loads((d["target"] / "transformer" / "config.json").read_text())
    _check(results, outs[fmt], config)


@pytest.mark.parametrize("fmt", ["same", "comfy", "diffusers"])
def test_golden_comfy_case_with_outside_layers_loads(fmt, tmp_path):
    case = GOLDEN_DIR / "comfy-lora_original-base_diffusers-target"
    results, outs = _convert(case / "base.safetensors", case / "target", case / "lora.safetensors", tmp_path, [fmt])
    _check(results, outs[fmt], golden_wan_config())


@pytest.mark.parametrize("fmt", ["same", "kohya"])
def test_golden_kohya_case_loads(fmt, tmp_path):
    """diffusers reads kohya files only for block layers (formats.md); this case holds only those."""
    case = GOLDEN_DIR / "kohya-lora_diffusers-base_krea-bf16-target"
    results, outs = _convert(case / "base", case / "target.safetensors", case / "lora.safetensors", tmp_path, [fmt],
                             rank=3)
    _check(results, outs[fmt], golden_wan_config())
