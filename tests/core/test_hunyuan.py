"""HunyuanVideo as a second family, end to end with diffusers' own HunyuanVideoTransformer3DModel.

A tiny random model is the base, a drifted copy the distilled target (as FastHunyuan is, in the
diffusers layout); LoRAs are made by PEFT itself and written in diffusers and musubi/kohya naming
too. diffusers loads the converted file and applies the engine's update. The original layout's
fused q/k/v weights are read exactly, as their blocks of rows; so is a LoRA on the fused layers.
"""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from casa_core import cli
from casa_core.conversion import Conversion
from casa_core.families import hunyuan
from casa_core.models import ModelSource
from casa_core.settings import RunOptions, TransferSettings
from tests.core import factories

peft = pytest.importorskip("peft")
diffusers = pytest.importorskip("diffusers")

CONFIG = {"in_channels": 4, "out_channels": 4, "num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 2,
          "num_single_layers": 2, "num_refiner_layers": 1, "mlp_ratio": 2.0, "patch_size": 1, "patch_size_t": 1,
          "text_embed_dim": 16, "pooled_projection_dim": 8, "rope_axes_dim": (2, 2, 4)}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "proj_mlp",
           "norm1.linear", "norm1_context.linear", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
           "ff_context.net.2", "norm_out.linear"]


def _model(seed=0):
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HunyuanVideoTransformer3DModel(**CONFIG)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base (a diffusers folder), target (a drifted transformer folder), and three LoRA files for the base."""
    root = tmp_path_factory.mktemp("hunyuan")
    base = _model()
    base.save_pretrained(str(root / "base" / "transformer"))
    (root / "base" / "model_index.json").write_text(json.dumps({"_class_name": "HunyuanVideoPipeline"}))
    target = _model()
    target.load_state_dict(factories.drifted(_state(base), 9))
    target.save_pretrained(str(root / "FastHunyuan"))
    # a LoRA made by PEFT itself (a PEFT folder), then the same factors in diffusers and musubi naming
    tuned = peft.get_peft_model(_model(), peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                          target_modules=TARGETS))
    tuned.save_pretrained(str(root / "peft"))
    raw = load_file(str(root / "peft" / "adapter_model.safetensors"))
    bare = {k.removeprefix("base_model.model."): v for k, v in raw.items()}
    save_file({"transformer." + k: v for k, v in bare.items()}, str(root / "diffusers.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": 8})})
    musubi = {}
    for k, v in bare.items():
        module, part = k.rsplit(".lora_", 1)
        stem = "lora_unet_" + module.replace(".", "_")
        musubi[stem + (".lora_down.weight" if part.startswith("A") else ".lora_up.weight")] = v
        musubi[stem + ".alpha"] = torch.tensor(8.0)
    save_file(musubi, str(root / "musubi.safetensors"))
    return root


def _convert(base, target, lora, out=None, **kw):
    conv = Conversion.open(base, target, lora, **kw)
    settings = TransferSettings()
    conv.run(settings, RunOptions(device="cpu", precision="float64", view_size=0))
    if out is not None:
        conv.export(out, settings, RunOptions())
    return conv, {m: r.up.double() @ r.down.double() for m, r in conv.results.items()}


def test_diffusers_loads_the_converted_file_and_applies_the_update(models, tmp_path):
    out = tmp_path / "converted.safetensors"
    conv, want = _convert(models / "base", models / "FastHunyuan", models / "diffusers.safetensors", out)
    assert conv.plan.base.family is hunyuan and conv.plan.base.layout == "diffusers"
    # every 2-D linear the LoRA adapts: 2 double blocks x 14, 2 single blocks x 4 (to_q/k/v, proj_mlp), the
    # token refiner's block x 7 (its norm_out.linear too), the model's norm_out.linear
    assert len(want) == 2 * 14 + 2 * 4 + 7 + 1 and "single_transformer_blocks.1.proj_mlp" in want
    with safe_open(str(out), "pt") as fh:
        assert fh.metadata()["modelspec.architecture"] == "hunyuan-video/lora"
    _check_in_diffusers(out, want)


def _check_in_diffusers(out, want):
    """diffusers' HunyuanVideoPipeline loads ``out`` and applies exactly ``want`` (the engine's updates)."""
    from diffusers import HunyuanVideoPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    client = _model(seed=3)
    before = {n: m.weight.detach().clone() for n, m in client.named_modules() if isinstance(m, torch.nn.Linear)}
    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=client, vae=None, scheduler=None,
                                text_encoder_2=None, tokenizer_2=None)
    pipe.load_lora_weights(str(out), adapter_name="casa")
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    got = {n: (m.get_base_layer().weight.detach() - before[n]).double()
           for n, m in client.named_modules() if isinstance(m, BaseTunerLayer)}
    assert sorted(got) == sorted(want)
    for m in want:
        assert torch.allclose(got[m], want[m], rtol=0, atol=2e-6 * float(want[m].abs().max())), m


def test_layers_in_the_networks_order(models):
    conv = Conversion.open(models / "base", models / "FastHunyuan", models / "diffusers.safetensors")
    order = [lp.module for lp in conv.plan.layers]
    first = {kind: next(i for i, m in enumerate(order) if m.startswith(kind))
             for kind in ("context_embedder.token_refiner", "transformer_blocks.0.", "transformer_blocks.1.",
                          "single_transformer_blocks.0.", "single_transformer_blocks.1.", "norm_out")}
    assert list(first.values()) == sorted(first.values())
    assert order.index("transformer_blocks.0.attn.to_q") < order.index("transformer_blocks.0.attn.to_k") < \
        order.index("transformer_blocks.0.ff.net.2")
    parts = {lp.module: (lp.block, lp.part) for lp in conv.plan.layers}
    assert parts["single_transformer_blocks.1.proj_mlp"] == (1, "single.proj_mlp")
    assert parts["transformer_blocks.0.attn.add_q_proj"] == (0, "attn.add_q_proj")
    assert parts["norm_out.linear"] == (None, "norm_out.linear")


def test_peft_diffusers_and_musubi_naming_give_one_result(models):
    _, ref = _convert(models / "base", models / "FastHunyuan", models / "diffusers.safetensors")
    for lora in (models / "peft", models / "musubi.safetensors"):
        _, got = _convert(models / "base", models / "FastHunyuan", lora)
        assert sorted(got) == sorted(ref)
        for m in ref:
            assert torch.allclose(got[m], ref[m], rtol=0, atol=1e-12), (lora.name, m)


def _original_layout(state: dict) -> dict:
    """The diffusers state dict in HunyuanVideo's original names, q/k/v fused as the original code does."""
    inv = {kind: {d: o for o, d in table} for kind, table in hunyuan._TABLES.items()}
    top = {d: o for o, d in hunyuan.TOP_MODULES}
    out = {}
    for kind, (orig, diff) in hunyuan.BLOCKS.items():
        idx = sorted({k[len(diff) + 1:].split(".")[0] for k in state if k.startswith(diff + ".")})
        for i in idx:
            pre = f"{diff}.{i}."
            for fused, parts in hunyuan.FUSED.items():
                fk, fname = fused.split(".", 1)
                if fk != kind:
                    continue
                for param in ("weight", "bias"):
                    names = [pre + (p or hunyuan.SINGLE_MLP) + "." + param for p in parts]
                    out[f"{orig}.{i}.{fname}.{param}"] = torch.cat([state[n] for n in names])
            for k, v in state.items():
                if k.startswith(pre):
                    module, param = k[len(pre):].rsplit(".", 1)
                    if module in inv[kind]:
                        out[f"{orig}.{i}.{inv[kind][module]}.{param}"] = v
    for k, v in state.items():
        module, param = k.rsplit(".", 1)
        if module in top:
            out[f"{top[module]}.{param}"] = v
        elif module == hunyuan.SWAPPED[1]:      # the original code keeps (shift, scale)
            scale, shift = v.chunk(2)
            out[f"{hunyuan.SWAPPED[0]}.{param}"] = torch.cat([shift, scale])
    return out


def test_an_original_layout_base_reads_fused_qkv_exactly(models, tmp_path):
    state = load_file(str(models / "base" / "transformer" / "diffusion_pytorch_model.safetensors"))
    orig = tmp_path / "hunyuan_video_original.safetensors"
    save_file(_original_layout(state), str(orig))
    src = ModelSource(orig, "base")
    assert src.family is hunyuan and src.layout == "original"
    for key in ("transformer_blocks.1.attn.add_k_proj.weight", "single_transformer_blocks.0.proj_mlp.bias",
                "single_transformer_blocks.1.attn.to_v.weight", "transformer_blocks.0.ff.net.2.weight",
                "context_embedder.token_refiner.refiner_blocks.0.attn.to_k.weight", "norm_out.linear.weight",
                "norm_out.linear.bias"):
        assert src.shape(key) == tuple(state[key].shape) and torch.equal(src.read(key), state[key]), key
    _, ref = _convert(models / "base", models / "FastHunyuan", models / "diffusers.safetensors")
    _, got = _convert(orig, models / "FastHunyuan", models / "diffusers.safetensors")
    assert sorted(got) == sorted(ref)
    for m in ref:
        assert torch.allclose(got[m], ref[m], rtol=0, atol=1e-12), m


def test_the_parts_of_a_fused_tensor_read_it_once(models, tmp_path):
    """q, k and v of an original-layout block are one stored tensor: reading the three reads it once."""
    state = load_file(str(models / "base" / "transformer" / "diffusion_pytorch_model.safetensors"))
    orig = tmp_path / "hunyuan_video_original.safetensors"
    save_file(_original_layout(state), str(orig))
    src = ModelSource(orig, "base")
    reads = []
    real = src.store.read
    src.store.read = lambda key: reads.append(key) or real(key)
    parts = [f"transformer_blocks.0.attn.to_{p}.weight" for p in "qkv"]
    for key in parts:
        assert torch.equal(src.read(key), state[key]), key
    assert len(reads) == 1
    assert torch.equal(src.read("transformer_blocks.0.ff.net.2.weight"), state["transformer_blocks.0.ff.net.2.weight"])
    assert len(reads) == 2


def _fused_and_split(tmp_path, style: str):
    """A LoRA on the original layout's fused layers (musubi-tuner's naming, or ComfyUI's dotted one) and the
    same update as a diffusers-named LoRA of split pairs (q, k, v share the down factor)."""
    g = torch.Generator().manual_seed(11)
    D, r, mlp = 16, 4, 32
    fused, split = {}, {}
    layers = [(f"double_blocks.{i}.img_attn_qkv", f"transformer_blocks.{i}.attn.", ("to_q", "to_k", "to_v"))
              for i in range(2)]
    layers += [(f"double_blocks.{i}.txt_attn_qkv", f"transformer_blocks.{i}.attn.",
                ("add_q_proj", "add_k_proj", "add_v_proj")) for i in range(2)]
    layers += [(f"single_blocks.{i}.linear1", f"single_transformer_blocks.{i}.", ("attn.to_q", "attn.to_k",
                                                                                   "attn.to_v", "proj_mlp"))
               for i in range(2)]
    layers += [("txt_in.individual_token_refiner.blocks.0.self_attn_qkv",
                "context_embedder.token_refiner.refiner_blocks.0.attn.", ("to_q", "to_k", "to_v"))]
    plain = [("double_blocks.1.img_attn_proj", "transformer_blocks.1.attn.to_out.0", D),
             ("single_blocks.0.linear2", "single_transformer_blocks.0.proj_out", D + mlp),
             ("double_blocks.0.txt_mlp.fc1", "transformer_blocks.0.ff_context.net.0.proj", D)]
    for orig, pre, parts in layers:
        rows = 3 * D + (mlp if len(parts) == 4 else 0)
        A, B = torch.randn(r, D, generator=g) * 0.1, torch.randn(rows, r, generator=g) * 0.1
        _put(fused, orig, A, B, style)
        for i, name in enumerate(parts):
            stop = rows if i == 3 else (i + 1) * D
            _put(split, pre + name, A, B[i * D:stop], "diffusers")
    for orig, diff, n_in in plain:
        shape_out = {"transformer_blocks.1.attn.to_out.0": D, "single_transformer_blocks.0.proj_out": D,
                     "transformer_blocks.0.ff_context.net.0.proj": 2 * D}[diff]
        A, B = torch.randn(r, n_in, generator=g) * 0.1, torch.randn(shape_out, r, generator=g) * 0.1
        _put(fused, orig, A, B, style)
        _put(split, diff, A, B, "diffusers")
    f, s_ = tmp_path / f"fused_{style}.safetensors", tmp_path / "split.safetensors"
    save_file(fused, str(f))
    save_file(split, str(s_), metadata={"format": "pt", "lora_adapter_metadata": json.dumps({"r": r, "lora_alpha": 2})})
    return f, s_


def _put(out: dict, module: str, A, B, style: str):
    A, B = A.clone(), B.clone()     # a file holds each factor on its own
    if style == "musubi":
        stem = "lora_unet_" + module.replace(".", "_")
        out |= {stem + ".lora_down.weight": A, stem + ".lora_up.weight": B, stem + ".alpha": torch.tensor(2.0)}
    elif style == "comfy":
        pre = "diffusion_model." + module
        out |= {pre + ".lora_A.weight": A, pre + ".lora_B.weight": B, pre + ".alpha": torch.tensor(2.0)}
    else:
        out |= {"transformer." + module + ".lora_A.weight": A, "transformer." + module + ".lora_B.weight": B}


@pytest.mark.parametrize("style", ["musubi", "comfy"])
def test_a_lora_on_fused_layers_is_split_exactly(models, tmp_path, style, capsys):
    """A pair on img_attn_qkv / linear1 becomes one pair per projection (its up rows, the shared down factor):
    the result equals that of the same update given as split pairs; original names resolve too."""
    fused, split = _fused_and_split(tmp_path, style)
    out = tmp_path / "converted.safetensors"
    conv, got = _convert(models / "base", models / "FastHunyuan", fused, out)
    _, want = _convert(models / "base", models / "FastHunyuan", split)
    assert sorted(got) == sorted(want) and len(want) == 4 * 3 + 2 * 4 + 3 + 3
    for m in want:
        assert torch.allclose(got[m], want[m], rtol=0, atol=1e-12), m
    assert conv.plan.passthrough_keys == []     # the fused keys are consumed, not copied
    written = load_file(str(out))
    lead = "lora_unet_transformer_blocks_0_attn_to_q" if style == "musubi" else \
        "diffusion_model.transformer_blocks.0.attn.to_q"
    assert any(k.startswith(lead) for k in written) and not any("img_attn_qkv" in k for k in written)
    assert cli.main(["inspect", "--base", str(models / "base"), "--target", str(models / "FastHunyuan"),
                     "--lora", str(fused), "--no-drift"]) == 0
    text = capsys.readouterr().out
    assert "note: 7 LoRA layers on fused projections" in text and "are read as 23 pairs" in text
    conv.export(tmp_path / "for-diffusers.safetensors", options=RunOptions(out_format="diffusers"))
    _check_in_diffusers(tmp_path / "for-diffusers.safetensors", got)


def test_inspect_names_the_family(models, capsys):
    assert cli.main(["inspect", "--base", str(models / "base"), "--target", str(models / "FastHunyuan"),
                     "--lora", str(models / "diffusers.safetensors"), "--no-drift"]) == 0
    out = capsys.readouterr().out
    assert "a HunyuanVideo-architecture model of no known size" in out and "4 blocks" in out
    assert "44 layers will transfer" in out


def test_a_wan_lora_on_hunyuan_is_refused(models, tmp_path, capsys):
    wan_lora = factories.write_lora(factories.lora_factors(factories.model_tensors(0), 1), tmp_path / "w.safetensors")
    out = tmp_path / "out.safetensors"
    code = cli.main(["convert", "--base", str(models / "base"), "--target", str(models / "FastHunyuan"),
                     "--lora", str(wan_lora), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and "matches no layer of the base model" in err
