"""Wan2.2: TI2V-5B and the two-expert A14B models (original and diffusers layouts), names from the family."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from casa_core import cli
from casa_core.conversion import Conversion
from casa_core.families import wan
from casa_core.models import ModelSource
from casa_core.settings import RunOptions, TransferSettings
from tests.core import factories


def _experts(tmp_path, layout: str, seed: int = 0, name: str = "Wan2.2-T2V-A14B"):
    """A tiny two-expert model: high_noise_model/ + low_noise_model/ (original), or a diffusers folder with
    transformer/ + transformer_2/ (model_index.json naming both). The experts' weights differ."""
    root = tmp_path / name
    root.mkdir()
    high, low = factories.model_tensors(seed), factories.model_tensors(seed + 100)
    if layout == "original":
        for folder, t in (("high_noise_model", high), ("low_noise_model", low)):
            factories.write_model(t, root / folder, folder="transformer")
    else:
        (root / "model_index.json").write_text(json.dumps({
            "_class_name": "WanPipeline", "boundary_ratio": 0.875,
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "transformer_2": ["diffusers", "WanTransformer3DModel"]}))
        for folder, t in (("transformer", high), ("transformer_2", low)):
            factories.write_model(t, root / folder, layout="diffusers", folder="transformer", shards=2)
    return root, high, low


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_two_expert_models_need_an_expert(tmp_path, layout, capsys):
    base, _, _ = _experts(tmp_path, layout)
    lora = factories.write_lora(factories.lora_factors(factories.model_tensors(0), 1), tmp_path / "style.safetensors")
    out = tmp_path / "out.safetensors"
    code = cli.main(["convert", "--base", str(base), "--target", str(base), "--lora", str(lora), "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and len(err.splitlines()) == 1
    folders = ("high_noise_model", "low_noise_model") if layout == "original" else ("transformer", "transformer_2")
    assert f"holds two experts: high ({folders[0]}/), low ({folders[1]}/)" in err and "(--expert high)" in err


@pytest.mark.parametrize("layout", ["original", "diffusers"])
@pytest.mark.parametrize("expert", ["high", "low"])
def test_the_chosen_experts_weights_are_used(tmp_path, layout, expert):
    base, high, low = _experts(tmp_path, layout)
    (tmp_path / "t").mkdir()
    target, _, _ = _experts(tmp_path / "t", layout, seed=0)
    src = ModelSource(base, "base", expert=expert)
    assert src.expert == expert and src.two_experts
    want = (high if expert == "high" else low)["blocks.0.self_attn.q.weight"]
    assert torch.equal(src.read("blocks.0.self_attn.q.weight"), want)
    conv = Conversion.open(base, target, factories.write_lora(
        factories.lora_factors(high, 1), tmp_path / f"style_{expert}_noise.safetensors"), expert=expert)
    assert conv.plan.describe()["base"]["expert"] == expert


def test_expert_names_and_architectures():
    class Fake:
        """What the family reads of a model: names, shapes, the expert."""

        def __init__(self, dim, expert=None, in_ch=16):
            self.expert = expert
            self.shapes = {wan.HIDDEN_PROBE: (dim, dim), wan.PATCH_PROBE: (dim, in_ch, 1, 2, 2)}

        def __contains__(self, k):
            return k in self.shapes

        def shape(self, k):
            return self.shapes[k]

    assert wan.model_architecture(Fake(3072, in_ch=48)) == "wan2.2-ti2v-5b/lora"
    assert wan.model_name(Fake(3072, in_ch=48)) == "Wan2.2 TI2V-5B"
    assert wan.model_architecture(Fake(5120, "high")) == "wan2.2-t2v-a14b-high-noise/lora"
    assert wan.model_architecture(Fake(5120, "low", in_ch=36)) == "wan2.2-i2v-a14b-low-noise/lora"
    assert wan.model_name(Fake(5120, "low")) == "Wan2.2 T2V-A14B low-noise expert"
    assert wan.model_architecture(Fake(5120)) == "wan2.1-t2v-14b/lora"
    assert wan.model_architecture(Fake(1536)) == "wan2.1-t2v-1.3b/lora"
    # an unknown size is a Wan-architecture model, nothing more
    assert wan.model_architecture(Fake(64)) == "wan/lora" and wan.model_architecture(Fake(64, "high")) == "wan/lora"
    assert wan.model_name(Fake(64)) == "a Wan-architecture model of no known size"
    for name, hint in (("Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16", "high"),
                       ("wan2.2_t2v_low_noise_14B_fp8_scaled", "low"), ("high_noise_model", "high"),
                       ("lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64", None), ("high_and_low", None),
                       ("test_high0", None), ("lowres_style", None), ("my_high-quality_style", None),
                       ("low-rank-style", None), ("Wan2.2-T2V-A14B-4steps-lora-250928_low", "low"),
                       ("style_HIGH-v2", "high"), ("wan22_style_low_lora", "low"), ("high_noise", "high")):
        assert wan.expert_hint(name) == hint, name


def test_bad_expert_choices(tmp_path, capsys):
    base, high, _ = _experts(tmp_path, "original")
    single = factories.write_model(high, tmp_path / "single.safetensors")
    lora = factories.write_lora(factories.lora_factors(high, 1), tmp_path / "style.safetensors")
    low_lora = factories.write_lora(factories.lora_factors(high, 1), tmp_path / "style_LOW_fp16.safetensors")
    cases = [
        (["--base", str(single), "--target", str(single), "--lora", str(lora), "--expert", "high"],
         "neither the base nor the target has experts"),
        (["--base", str(base), "--target", str(base), "--lora", str(low_lora), "--expert", "high"],
         "the LoRA style_LOW_fp16.safetensors is named for the low-noise expert, but the models are the "
         "high-noise expert"),
        (["--base", str(base), "--target", str(base), "--lora", str(lora), "--expert", "high",
          "--target-lora", str(low_lora)], "the distillation LoRA style_LOW_fp16.safetensors is named for the "
         "low-noise expert"),
    ]
    shutil.rmtree(base / "low_noise_model")
    cases.append((["--base", str(base), "--target", str(single), "--lora", str(lora), "--expert", "low"],
                  "has no expert 'low'; it holds high (high_noise_model/)"))
    for args, want in cases:
        out = tmp_path / "out.safetensors"
        code = cli.main(["convert", *args, "-o", str(out), "-q", "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and not out.exists() and len(err.splitlines()) == 1, err
        assert want in err, err


def test_inspect_names_the_experts(tmp_path, capsys):
    base, high, _ = _experts(tmp_path, "diffusers")
    lora = factories.write_lora(factories.lora_factors(high, 1), tmp_path / "style.safetensors")
    assert cli.main(["inspect", "--base", str(base), "--lora", str(lora), "--expert", "low"]) == 0
    assert "low-noise expert" in capsys.readouterr().out


# ---- hub repos of two-expert models: only the chosen expert is fetched ---------------------------

@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_hub_repo_fetches_only_the_chosen_expert(tmp_path, monkeypatch, layout):
    import huggingface_hub
    from huggingface_hub import constants

    from casa_core.errors import CasaError
    from casa_core.sources import open_model
    from tests.core.test_sources_hub import SHA, FakeHub

    root, high, low = _experts(tmp_path, layout)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    files["README.md"] = b"x"
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    fake = FakeHub(cache, "Wan-AI/Wan2.2-T2V-A14B", files)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda _api, *a, **kw: fake.model_info(*a, **kw))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.download)
    with pytest.raises(CasaError, match="holds two experts") as exc:
        open_model("Wan-AI/Wan2.2-T2V-A14B", "base")
    assert exc.value.setting == "expert" and fake.fetched == []
    src = open_model("Wan-AI/Wan2.2-T2V-A14B", "base", expert="low")
    folder = "low_noise_model/" if layout == "original" else "transformer_2/"
    assert fake.fetched and all(f.startswith(folder) or f == "model_index.json" for f in fake.fetched)
    assert src.expert == "low" and src.identity == f"Wan-AI/Wan2.2-T2V-A14B@{SHA}"
    assert torch.equal(src.read("blocks.1.ffn.0.weight"), low["blocks.1.ffn.0.weight"])
    fake.fetched.clear()
    fake.info_error = AssertionError("the network was used")
    assert open_model("Wan-AI/Wan2.2-T2V-A14B", "base", expert="low").expert == "low" and fake.fetched == []


def test_a_lightning_repo_names_its_file(tmp_path, monkeypatch):
    """A hub repo of a high/low distillation pair: the file is named after a colon, the expert checked."""
    import huggingface_hub
    from huggingface_hub import constants

    from casa_core.errors import CasaError
    from tests.core.test_sources_hub import FakeHub

    root, high, _ = _experts(tmp_path, "original")
    pair = {n: factories.write_lora(factories.lora_factors(high, 3), tmp_path / n)
            for n in ("Wan2.2-Lightning_HIGH_fp16.safetensors", "Wan2.2-Lightning_LOW_fp16.safetensors")}
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    fake = FakeHub(cache, "lightx2v/Wan2.2-Lightning", {k: v for k, v in pair.items()})
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda _api, *a, **kw: fake.model_info(*a, **kw))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.download)
    lora = factories.write_lora(factories.lora_factors(high, 1), tmp_path / "style_high_noise.safetensors")
    with pytest.raises(CasaError, match="holds 2 weight files") as exc:
        Conversion.open(root, None, lora, target_loras=["lightx2v/Wan2.2-Lightning"], expert="high")
    assert exc.value.setting == "target_lora" and "lightx2v/Wan2.2-Lightning:FILE" in str(exc.value)
    with pytest.raises(CasaError, match="named for the low-noise expert"):
        Conversion.open(root, None, lora, target_loras=["lightx2v/Wan2.2-Lightning:Wan2.2-Lightning_LOW_fp16"
                                                        ".safetensors"], expert="high")
    conv = Conversion.open(root, None, lora, target_loras=[
        "lightx2v/Wan2.2-Lightning:Wan2.2-Lightning_HIGH_fp16.safetensors:1"], expert="high")
    assert conv.plan.target.stack_with()[0]["strength"] == 1.0
    assert "Wan2.2-Lightning_HIGH_fp16.safetensors" in conv.plan.target.stack_with()[0]["name"]


# ---- diffusers' own WanTransformer3DModel, configured as Wan2.2 ------------------------------------

@pytest.fixture
def real_diffusers():
    """diffusers and peft, the real client (the tests above need neither)."""
    pytest.importorskip("peft")
    return pytest.importorskip("diffusers")


def _ti2v_config() -> dict:
    """A tiny TI2V-5B-like config: 48 latent channels (Wan2.2's VAE), the rest shrunk."""
    return {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 48,
            "out_channels": 48, "text_dim": 24, "freq_dim": 16, "ffn_dim": 80, "num_layers": 2}


def _save(model, folder):
    model.save_pretrained(str(folder), safe_serialization=True)


def _drifted_copy(model, seed):
    from diffusers import WanTransformer3DModel

    twin = WanTransformer3DModel(**_ti2v_config())
    sd = factories.drifted({k: v.detach() for k, v in model.state_dict().items()}, seed)
    twin.load_state_dict(sd)
    return twin


def _engine_updates(base, target, lora, tmp_path, expert=None):
    conv = Conversion.open(base, target, lora, expert=expert)
    settings = TransferSettings()
    conv.run(settings, RunOptions(device="cpu", view_size=0))
    out = tmp_path / "converted.safetensors"
    conv.export(out, settings, RunOptions())
    return conv, {m: r.up.double() @ r.down.double() for m, r in conv.results.items()}, out


def _applied(pipe, transformer, out, **kwargs):
    from peft.tuners.tuners_utils import BaseTunerLayer

    before = {n: m.weight.detach().clone() for n, m in transformer.named_modules()
              if isinstance(m, torch.nn.Linear)}
    pipe.load_lora_weights(str(out), adapter_name="casa", **kwargs)
    pipe.fuse_lora(components=["transformer_2" if kwargs else "transformer"], lora_scale=1.0)
    return {wan.to_canonical(n, True): (m.get_base_layer().weight.detach() - before[n]).double()
            for n, m in transformer.named_modules() if isinstance(m, BaseTunerLayer)}


def _lora_for(model, tmp_path, name):
    t = {wan.canonical_key(k, True): v.detach() for k, v in model.state_dict().items()}
    mods = [m for m in (k[:-7] for k in t if k.endswith(".weight")) if m.startswith("blocks.") and
            wan.is_transferable(m)]
    return factories.write_lora(factories.lora_factors(t, 5, modules=mods), tmp_path / name, alpha=2.0)


def test_ti2v_5b_layout_loads_in_diffusers(tmp_path, real_diffusers):
    from diffusers import WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(**_ti2v_config())
    _save(model, tmp_path / "base" / "transformer")
    (tmp_path / "base" / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    _save(_drifted_copy(model, 1), tmp_path / "target")
    lora = _lora_for(model, tmp_path, "style.safetensors")
    conv, want, out = _engine_updates(tmp_path / "base", tmp_path / "target", lora, tmp_path)
    assert len(want) == 2 * 10
    client = WanTransformer3DModel(**_ti2v_config())
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=client)
    got = _applied(pipe, client, out)
    assert sorted(got) == sorted(want)
    for m in want:
        assert torch.allclose(got[m], want[m], rtol=0, atol=2e-6 * float(want[m].abs().max())), m


def test_a14b_low_noise_expert_loads_into_transformer_2(tmp_path, real_diffusers):
    """A diffusers A14B pipeline folder: --expert low converts against transformer_2, and diffusers
    loads the result into its transformer_2 (load_into_transformer_2) and applies the engine's update."""
    from diffusers import WanPipeline, WanTransformer3DModel

    cfg = _ti2v_config() | {"in_channels": 16, "out_channels": 16}
    for root, seed in ((tmp_path / "base", 0), (tmp_path / "target", 0)):
        torch.manual_seed(seed)
        high, low = WanTransformer3DModel(**cfg), WanTransformer3DModel(**cfg)
        if root.name == "target":
            low.load_state_dict(factories.drifted({k: v.detach() for k, v in low.state_dict().items()}, 7))
        _save(high, root / "transformer")
        _save(low, root / "transformer_2")
        (root / "model_index.json").write_text(json.dumps({
            "_class_name": "WanPipeline", "boundary_ratio": 0.875,
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "transformer_2": ["diffusers", "WanTransformer3DModel"]}))
    lora = _lora_for(low, tmp_path, "style_low_noise.safetensors")
    conv, want, out = _engine_updates(tmp_path / "base", tmp_path / "target", lora, tmp_path, expert="low")
    with safe_open(str(out), "pt") as fh:
        assert fh.metadata()["casa.layout"] == "comfy"
    assert conv.plan.base.expert == "low" and conv.plan.target.expert == "low"
    drift = [r.drift for r in conv.results.values()]
    assert min(drift) > 0      # the low expert is the drifted one: the high one would show none
    client_high, client_low = WanTransformer3DModel(**cfg), WanTransformer3DModel(**cfg)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=client_high,
                       transformer_2=client_low, boundary_ratio=0.875)
    got = _applied(pipe, client_low, out, load_into_transformer_2=True)
    assert sorted(got) == sorted(want)
    for m in want:
        assert torch.allclose(got[m], want[m], rtol=0, atol=2e-6 * float(want[m].abs().max())), m
