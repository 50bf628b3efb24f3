"""More LoRA layouts: PEFT folders (LoRA, rsLoRA, LoHa, LoKr), FastVideo, DiffSynth, Wan-Fun, LyCORIS LoHa/LoKr.

Each is written with a known update (PEFT's own ``get_delta_weight`` where PEFT made
the file), converted with base = target (the rule then gives back the input update),
and the written standard LoRA must apply that update. DoRA is refused.
"""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from casa_core.conversion import Conversion
from casa_core.errors import CasaError
from casa_core.families import wan
from casa_core.lora import LoraSource
from casa_core.settings import RunOptions, TransferSettings
from casa_core.sources import open_lora
from tests.core import factories as f

# a few layers of every shape class (square attention, wide and tall ffn, outside the blocks)
MODULES = ["blocks.0.self_attn.q", "blocks.1.cross_attn.o", "blocks.0.ffn.0", "blocks.1.ffn.2", "text_embedding.0"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    t = f.model_tensors(0)
    path = f.write_model(t, tmp_path_factory.mktemp("model") / "base.safetensors")
    return t, path


def transfer(model, lora, tmp_path, method="casa", lora_file=None, out_format="same"):
    """Convert with base = target at full rank; returns the plan and {prefix: applied update}."""
    _, path = model
    conv = Conversion.open(path, path, lora, lora_file=lora_file)
    plan = conv.plan
    out = tmp_path / "out.safetensors"
    conv.convert(out, TransferSettings(method=method), RunOptions(rank="full", device="cpu", view_size=0,
                                                                   out_format=out_format))
    with safe_open(str(out), "pt") as fh:
        keys = list(fh.keys())
    assert not [k for k in keys if ".hada_" in k or ".lokr_" in k], "LyCORIS keys of converted layers were kept"
    return plan, updates(out), keys


def updates(path) -> dict:
    """{key prefix: s * B @ A} of a written LoRA (every pair style; alpha / lora_alpha over the rank, else 1)."""
    out = {}
    with safe_open(str(path), "pt") as fh:
        keys = set(fh.keys())
        for k in keys:
            for a, b in ((".lora_A.default.weight", ".lora_B.default.weight"), (".lora_A.weight", ".lora_B.weight"),
                         (".lora_down.weight", ".lora_up.weight")):
                if k.endswith(a):
                    p = k[: -len(a)]
                    A, B = fh.get_tensor(k).double(), fh.get_tensor(p + b).double()
                    alpha = next((p + x for x in (".alpha", ".lora_alpha") if p + x in keys), None)
                    s = float(fh.get_tensor(alpha)) / A.shape[0] if alpha else 1.0
                    out[p] = s * B @ A
                    break
    return out


def check(got: dict, want: dict, prefix_of):
    assert len(got) == len(want)
    for module, delta in want.items():
        g = got[prefix_of(module)]
        err = float((g - delta.double()).norm() / delta.double().norm())
        assert err < 1e-5, (module, err)


# ---- PEFT folders, made by PEFT itself -------------------------------------------------

def _peft_model(t):
    """An nn.Module with diffusers names holding the model's weights for MODULES."""
    root = torch.nn.Module()
    for m in MODULES:
        w = t[m + ".weight"]
        parts = wan.to_diffusers(m).split(".")
        cur = root
        for p in parts[:-1]:
            if not hasattr(cur, p):
                cur.add_module(p, torch.nn.Module())
            cur = getattr(cur, p)
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data = w.clone()
        cur.add_module(parts[-1], lin)
    return root


PEFT_CONFIGS = {
    "lora": lambda peft, tm: peft.LoraConfig(r=4, lora_alpha=8, target_modules=tm, init_lora_weights=False,
                                             alpha_pattern={"blocks.0.ffn.net.0.proj": 3}),
    "rslora": lambda peft, tm: peft.LoraConfig(r=4, lora_alpha=6, target_modules=tm, init_lora_weights=False,
                                               use_rslora=True),
    "loha": lambda peft, tm: peft.LoHaConfig(r=4, alpha=6, target_modules=tm, init_weights=False),
    "lokr": lambda peft, tm: peft.LoKrConfig(r=4, alpha=6, target_modules=tm, init_weights=False),
    "lokr-both": lambda peft, tm: peft.LoKrConfig(r=2, alpha=6, target_modules=tm, init_weights=False,
                                                  decompose_both=True),
}


@pytest.mark.parametrize("kind", PEFT_CONFIGS)
def test_peft_folder(model, tmp_path, kind):
    peft = pytest.importorskip("peft")
    t, _ = model
    tm = [wan.to_diffusers(m).split(".", 2)[2] if m.startswith("blocks.") else wan.to_diffusers(m)
          for m in MODULES]
    torch.manual_seed(0)
    pm = peft.get_peft_model(_peft_model(t), PEFT_CONFIGS[kind](peft, sorted(set(tm))))
    want = {}
    for name, mod in pm.base_model.model.named_modules():
        if hasattr(mod, "get_delta_weight") and isinstance(getattr(mod, "base_layer", None), torch.nn.Linear):
            module = wan.to_canonical(name, True)
            want[module] = mod.get_delta_weight("default").detach()
    assert sorted(want) == sorted(MODULES)
    folder = tmp_path / "adapter"
    pm.save_pretrained(folder)
    plan, got, _ = transfer(model, folder, tmp_path)
    assert len(plan.layers) == len(MODULES)
    assert {lp.pair.kind for lp in plan.layers} == {kind.split("-")[0].replace("rslora", "lora")}
    check(got, want, lambda m: "base_model.model." + wan.to_diffusers(m))


def test_peft_dora_is_refused(tmp_path, model):
    peft = pytest.importorskip("peft")
    t, _ = model
    pm = peft.get_peft_model(_peft_model(t), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["to_q"],
                                                             use_dora=True, init_lora_weights=False))
    pm.save_pretrained(tmp_path / "dora")
    with pytest.raises(CasaError, match="is a DoRA .* export a plain LoRA"):
        LoraSource(tmp_path / "dora")


# ---- single-file layouts ---------------------------------------------------------------

def _factors(t, rank=4, seed=1):
    return f.lora_factors(t, seed, rank=rank, modules=MODULES)


def test_fastvideo_lora_alpha(model, tmp_path):
    t, _ = model
    fac = _factors(t)
    sd = {}
    for m, (B, A) in fac.items():
        p = wan.to_diffusers(m)
        sd |= {f"{p}.lora_A.weight": A, f"{p}.lora_B.weight": B, f"{p}.lora_alpha": torch.tensor(2.0)}
    save_file(sd, tmp_path / "fastvideo.safetensors")
    plan, got, keys = transfer(model, tmp_path / "fastvideo.safetensors", tmp_path, method="direct")
    assert plan.lora.format == "diffusers" and {lp.scale for lp in plan.layers} == {0.5}
    # FastVideo reads only lora_alpha: it stays, set to the rank, with the scale folded in
    assert all(wan.to_diffusers(m) + ".lora_alpha" in keys for m in MODULES)
    check(got, {m: 0.5 * B @ A for m, (B, A) in fac.items()}, wan.to_diffusers)


def test_diffsynth_default_names(model, tmp_path):
    t, _ = model
    fac = _factors(t)
    sd = {}
    for m, (B, A) in fac.items():
        sd |= {f"{m}.lora_A.default.weight": A, f"{m}.lora_B.default.weight": B}
    save_file(sd, tmp_path / "diffsynth.safetensors")
    plan, got, _ = transfer(model, tmp_path / "diffsynth.safetensors", tmp_path, method="direct")
    assert {lp.scale for lp in plan.layers} == {1.0}
    check(got, {m: B @ A for m, (B, A) in fac.items()}, lambda m: m)


def test_wan_fun_double_underscore(model, tmp_path):
    t, _ = model
    fac = _factors(t)
    sd = {}
    for m, (B, A) in fac.items():
        p = "lora_unet__" + m.replace(".", "_")
        sd |= {f"{p}.lora_down.weight": A, f"{p}.lora_up.weight": B, f"{p}.alpha": torch.tensor(8.0)}
    save_file(sd, tmp_path / "wanfun.safetensors")
    plan, got, _ = transfer(model, tmp_path / "wanfun.safetensors", tmp_path, method="direct")
    assert plan.lora.format == "kohya" and {lp.module for lp in plan.layers} == set(MODULES)
    check(got, {m: 2.0 * B @ A for m, (B, A) in fac.items()}, lambda m: "lora_unet__" + m.replace(".", "_"))


# ---- LyCORIS files (ComfyUI / musubi conventions) ----------------------------------------

def _loha(t, r1=4, r2=4, seed=2):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in MODULES:
        o, i = t[m + ".weight"].shape
        out[m] = [torch.randn(*s, generator=g) * 0.3 for s in ((o, r1), (r1, i), (o, r2), (r2, i))]
    return out


@pytest.mark.parametrize("naming", ["kohya", "comfy"])
@pytest.mark.parametrize("ranks", [(4, 4), (8, 8)], ids=["factored", "dense"])   # 64 > 32: the dense path
def test_lycoris_loha(model, tmp_path, naming, ranks):
    t, _ = model
    parts = _loha(t, *ranks)
    prefix = (lambda m: "lora_unet_" + m.replace(".", "_")) if naming == "kohya" else (
        lambda m: "diffusion_model." + m)
    sd = {}
    for m, (w1a, w1b, w2a, w2b) in parts.items():
        p = prefix(m)
        sd |= {f"{p}.hada_w1_a": w1a, f"{p}.hada_w1_b": w1b, f"{p}.hada_w2_a": w2a, f"{p}.hada_w2_b": w2b,
               f"{p}.alpha": torch.tensor(2.0)}
    sd["diffusion_model.blocks.0.norm3.diff"] = torch.ones(32)   # passes through untouched
    save_file(sd, tmp_path / "loha.safetensors")
    plan, got, keys = transfer(model, tmp_path / "loha.safetensors", tmp_path)
    assert {lp.pair.kind for lp in plan.layers} == {"loha"}
    assert "diffusion_model.blocks.0.norm3.diff" in keys
    want = {m: (2.0 / ranks[0]) * (w1a @ w1b) * (w2a @ w2b) for m, (w1a, w1b, w2a, w2b) in parts.items()}
    check(got, want, prefix)


def test_lycoris_lokr(model, tmp_path):
    """Full W1 with split W2 (alpha / w2 rank), both split, and both full (scale 1, alpha ignored)."""
    t, _ = model
    g = torch.Generator().manual_seed(3)

    def rnd(*s):
        return torch.randn(*s, generator=g) * 0.3

    sd, want = {}, {}
    layouts = {"blocks.0.self_attn.q": "w1-full", "blocks.1.cross_attn.o": "both-full", "blocks.0.ffn.0": "both-split",
               "blocks.1.ffn.2": "w1-full", "text_embedding.0": "both-split"}
    for m, how in layouts.items():
        o, i = t[m + ".weight"].shape
        p = f"diffusion_model.{m}"
        p1, q1 = 4, 4 if i % 4 == 0 else 2
        m2, n2 = o // p1, i // q1
        if how == "both-full":
            w1, w2 = rnd(p1, q1), rnd(m2, n2)
            sd |= {f"{p}.lokr_w1": w1, f"{p}.lokr_w2": w2}
            scale = 1.0
        elif how == "w1-full":
            w1, w2a, w2b = rnd(p1, q1), rnd(m2, 3), rnd(3, n2)
            w2 = w2a @ w2b
            sd |= {f"{p}.lokr_w1": w1, f"{p}.lokr_w2_a": w2a, f"{p}.lokr_w2_b": w2b}
            scale = 6.0 / 3
        else:
            w1a, w1b, w2a, w2b = rnd(p1, 2), rnd(2, q1), rnd(m2, 3), rnd(3, n2)
            w1, w2 = w1a @ w1b, w2a @ w2b
            sd |= {f"{p}.lokr_w1_a": w1a, f"{p}.lokr_w1_b": w1b, f"{p}.lokr_w2_a": w2a, f"{p}.lokr_w2_b": w2b}
            scale = 6.0 / 3
        sd[f"{p}.alpha"] = torch.tensor(6.0)
        want[m] = scale * torch.kron(w1, w2)
    save_file(sd, tmp_path / "lokr.safetensors")
    plan, got, _ = transfer(model, tmp_path / "lokr.safetensors", tmp_path)
    assert {lp.pair.kind for lp in plan.layers} == {"lokr"}
    check(got, want, lambda m: "diffusion_model." + m)
    # and through another output layout, as a standard LoRA there too
    _, got_k, keys = transfer(model, tmp_path / "lokr.safetensors", tmp_path, method="direct", out_format="kohya")
    check(got_k, want, lambda m: "lora_unet_" + m.replace(".", "_"))


def test_dora_scale_is_refused(model, tmp_path):
    t, _ = model
    fac = _factors(t)
    sd = {}
    for m, (B, A) in fac.items():
        sd |= {f"diffusion_model.{m}.lora_A.weight": A, f"diffusion_model.{m}.lora_B.weight": B,
               f"diffusion_model.{m}.dora_scale": torch.ones(1, A.shape[1])}
    save_file(sd, tmp_path / "dora.safetensors")
    with pytest.raises(CasaError) as e:
        LoraSource(tmp_path / "dora.safetensors")
    assert "DoRA" in str(e.value) and ".dora_scale" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_folder_with_several_loras(model, tmp_path):
    t, _ = model
    folder = tmp_path / "loras"
    folder.mkdir()
    for name in ("epoch10.safetensors", "epoch20.safetensors"):
        f.write_lora(_factors(t), folder / name)
    with pytest.raises(CasaError, match="holds 2 weight files .*epoch10.safetensors, epoch20.safetensors.*name") as e:
        open_lora(folder)
    assert e.value.setting == "lora_file"
    assert open_lora(folder, lora_file="epoch20.safetensors").path.name == "epoch20.safetensors"
    with pytest.raises(CasaError, match="has no file epoch30"):
        open_lora(folder, lora_file="epoch30.safetensors")
    cfg = json.dumps({"r": 4, "lora_alpha": 4})
    (folder / "adapter_config.json").write_text(cfg)   # not a PEFT folder without adapter_model.*
    with pytest.raises(CasaError, match="pick one by its file name"):
        open_lora(folder)
