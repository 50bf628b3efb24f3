"""``casa inspect`` on any two or three sources: what matches, and why not, from headers alone."""

import json

import pytest
import torch
from safetensors.torch import save_file

from casa_core import cli, names
from casa_core.compute import Compute
from casa_core.conversion import Conversion
from casa_core.report import RunReport
from casa_core.settings import RunOptions, TransferSettings
from tests.core import factories as f


def run(capsys, *args):
    code = cli.main(["inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    """A Wan2.1 1.3B-shaped base (a few real-size layers) and a LoRA trained on the 14B."""
    d = tmp_path_factory.mktemp("sized")
    base = {f"blocks.0.self_attn.{x}.weight": torch.zeros(1536, 1536, dtype=torch.bfloat16) for x in "qk"}
    base["head.head.weight"] = torch.zeros(64, 1536, dtype=torch.bfloat16)
    save_file(base, d / "wan2.1_t2v_1.3B_bf16.safetensors")
    lora = {}
    for x in "qkvo":
        p = f"diffusion_model.blocks.0.self_attn.{x}"
        lora |= {f"{p}.lora_A.weight": torch.zeros(4, 5120), f"{p}.lora_B.weight": torch.zeros(5120, 4)}
    save_file(lora, d / "wan14b_style.safetensors")
    return d / "wan2.1_t2v_1.3B_bf16.safetensors", d / "wan14b_style.safetensors"


def test_14b_lora_for_a_1_3b_model_is_plain_to_see(capsys, sized):
    base, lora = sized
    code, out, err = run(capsys, "--base", base, "--lora", lora)
    assert code == 0, err
    assert "dim 1536 (Wan2.1 1.3B)" in out and "layers fit dim 5120 (Wan2.1 14B)" in out
    assert "lora vs base: 0 of 4 LoRA layers fit" in out
    assert "2 differ in shape (first: blocks.0.self_attn.k is 5120x5120 in the LoRA, 1536x1536 in the base)" in out
    assert "! the LoRA was trained for dim 5120 (Wan2.1 14B) but the base has dim 1536 (Wan2.1 1.3B)" in out


def test_three_sources_that_do_not_fit(capsys, sized):
    """The comparison is printed, then the one-line error, exit 2."""
    base, lora = sized
    code, out, err = run(capsys, "--base", base, "--target", base, "--lora", lora)
    assert code == 2
    assert "the LoRA was trained for dim 5120" in out and "base vs target: 3 tensors in common" in out
    assert err.startswith("casa: error: LoRA shapes do not fit") and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def fastwan(tmp_path_factory):
    d = tmp_path_factory.mktemp("fastwan")
    t = f.model_tensors(0)
    extra = dict(t)
    for b in range(2):
        extra[f"blocks.{b}.to_gate_compress.weight"] = torch.zeros(32, 32)
        extra[f"blocks.{b}.to_gate_compress.bias"] = torch.zeros(32)
    base = f.write_model(t, d / "base.safetensors")
    target = f.write_model(f.drifted(extra, 2), d / "fastwan", layout="diffusers", folder="diffusers")
    lora = f.write_lora(f.lora_factors(t, 1, rank=4), d / "lora.safetensors")
    return base, target, lora


def test_distilled_extras_are_ignored_and_listed(capsys, fastwan):
    base, target, lora = fastwan
    code, out, err = run(capsys, "--base", base, "--target", target, "--no-drift")
    assert code == 0, err
    assert "ignored: the target's extra layers the base lacks: blocks.*.to_gate_compress.bias (2), " \
           "blocks.*.to_gate_compress.weight (2)" in out
    code, out, err = run(capsys, "--base", base, "--target", target, "--lora", lora, "--json", "--no-drift")
    desc = json.loads(out)
    assert desc["target"]["ignored_layers"] == ["blocks.*.to_gate_compress.bias (2)",
                                                "blocks.*.to_gate_compress.weight (2)"]
    assert desc["checks"]["problems"] == [] and len(desc["layers"]) == 25
    # and the run report carries them
    plan, options = Conversion.open(base, target, lora).plan, RunOptions(device="cpu")
    report = RunReport.build(plan, [], TransferSettings(), options, Compute.for_options(options)).to_dict()
    assert report["inputs"]["target"]["ignored_layers"] == desc["target"]["ignored_layers"]


def test_base_and_target_of_different_sizes(capsys, tmp_path):
    def model(d):
        return {"blocks.0.self_attn.q.weight": torch.zeros(d, d), "head.head.weight": torch.zeros(16, d)}

    small = f.write_model(model(32), tmp_path / "small.safetensors")
    big = f.write_model(model(48), tmp_path / "big.safetensors")
    code, out, _ = run(capsys, "--base", small, "--target", big, "--no-drift")
    assert code == 0 and "! the base has dim 32 but the target dim 48: pick a target distilled from this base" in out


def test_lora_for_another_family(capsys, fastwan, tmp_path):
    base, _, _ = fastwan
    sdxl = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}
    save_file(sdxl, tmp_path / "sdxl.safetensors")
    code, out, _ = run(capsys, "--base", base, "--lora", tmp_path / "sdxl.safetensors")
    assert code == 0 and "1 name no layer of the base" in out and "probably for another model family" in out


def test_needs_two_sources(capsys, fastwan):
    code, _, err = run(capsys, "--base", fastwan[0])
    assert code == 2 and "at least two of --base, --target and --lora" in err


def test_lyc_kinds_are_shown(capsys, fastwan, tmp_path):
    base, target, _ = fastwan
    sd = {}
    for m, (o, i) in (("blocks.0.self_attn.q", (32, 32)), ("blocks.1.ffn.2", (32, 80))):
        p = "lora_unet_" + m.replace(".", "_")
        sd |= {f"{p}.hada_w1_a": torch.ones(o, 2), f"{p}.hada_w1_b": torch.ones(2, i),
               f"{p}.hada_w2_a": torch.ones(o, 2), f"{p}.hada_w2_b": torch.ones(2, i)}
    save_file(sd, tmp_path / "loha.safetensors")
    code, out, _ = run(capsys, "--base", base, "--target", target, "--lora", tmp_path / "loha.safetensors",
                       "--no-drift")
    assert code == 0 and "(kohya format; 2 LoHa layers, rank 4" in out
    assert "LoHa layers are materialised and written as a standard LoRA" in out
    assert names.strip_prefix("base_model.model.blocks.0.attn1.to_q") == "blocks.0.attn1.to_q"
