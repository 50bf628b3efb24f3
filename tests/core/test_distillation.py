"""A target given as the base (or a checkpoint) plus distillation LoRAs (lightx2v, CausVid, Lightning)."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from casa_core import cli, methods
from casa_core.conversion import Conversion, _read_layer
from casa_core.distillation import DriftParts, StackedTarget, WeightedLora, parse_weighted
from casa_core.errors import CasaError
from casa_core.factorization import LowRank
from casa_core.settings import RunOptions, TransferSettings
from tests.conftest import GOLDEN_DIR
from tests.core import factories

CASE = GOLDEN_DIR / "target-lora-distill-comfy"
BASE, DISTILL, LORA = CASE / "base.safetensors", CASE / "distill.safetensors", CASE / "lora.safetensors"


def test_parse_weighted():
    assert parse_weighted("x.safetensors") == WeightedLora("x.safetensors", 1.0)
    assert parse_weighted("x.safetensors:0.75") == WeightedLora("x.safetensors", 0.75)
    assert parse_weighted("x.safetensors:-1e-1") == WeightedLora("x.safetensors", -0.1)
    assert parse_weighted(r"C:\loras\x.safetensors") == WeightedLora(r"C:\loras\x.safetensors", 1.0)
    assert parse_weighted(r"C:\loras\x.safetensors:2") == WeightedLora(r"C:\loras\x.safetensors", 2.0)
    assert parse_weighted("org/name:sub/file.safetensors") == WeightedLora("org/name:sub/file.safetensors", 1.0)
    assert parse_weighted("org/name:file.safetensors:.5") == WeightedLora("org/name:file.safetensors", 0.5)
    for bad in ("x.safetensors:nan", "x.safetensors:inf", "x.safetensors:-Infinity"):
        with pytest.raises(CasaError, match="not a finite number"):
            parse_weighted(bad)
    with pytest.raises(CasaError, match="not a finite number"):
        parse_weighted(f"{DISTILL}:strong")


def _merged(tmp_path, model: dict, loras, name="merged.safetensors"):
    """A target checkpoint W + sum strength * s * B @ A (+ strength * .diff on linears), in float64."""
    out = {k: v.double() for k, v in model.items()}
    for path, strength in loras:
        t = load_file(str(path))
        for k in t:
            if k.endswith(".lora_A.weight"):
                p = k[: -len(".lora_A.weight")]
                module = p.removeprefix("diffusion_model.")
                A, B = t[k].double(), t[p + ".lora_B.weight"].double()
                s = float(t[p + ".alpha"]) / A.shape[0] if p + ".alpha" in t else 1.0
                out[module + ".weight"] += strength * s * B @ A
            elif k.endswith(".diff") and k.removeprefix("diffusion_model.")[:-5] + ".weight" in out:
                w = k.removeprefix("diffusion_model.")[:-5] + ".weight"
                if out[w].dim() == 2:
                    out[w] += strength * t[k].double()
    path = tmp_path / name
    save_file(out, str(path))
    return path


def _run(base, target, lora, target_loras=(), precision="float64"):
    conv = Conversion.open(base, target, lora, target_loras=target_loras)
    conv.run(TransferSettings(), RunOptions(device="cpu", precision=precision, rank="full", view_size=0))
    return conv, {m: r.up.double() @ r.down.double() for m, r in conv.results.items()}


def _close(a: dict, b: dict, tol=1e-6):  # the float64 tolerance of the contract
    assert sorted(a) == sorted(b)
    for m in a:
        err = float((a[m] - b[m]).norm() / b[m].norm())
        assert err < tol, (m, err)


@pytest.mark.parametrize("strengths", [(1.0,), (0.6,), (0.5, 0.7)], ids=["one", "weaker", "two-stacked"])
def test_target_lora_equals_the_merged_checkpoint(tmp_path, strengths):
    """--target-lora gives what --target merged.safetensors gives, the merge built from the same LoRAs."""
    stack = [(DISTILL, s) for s in strengths]
    merged = _merged(tmp_path, load_file(str(BASE)), stack)
    _, want = _run(BASE, merged, LORA)
    conv, got = _run(BASE, None, LORA, target_loras=stack)
    _close(got, want)
    assert isinstance(conv.plan.target, StackedTarget) and conv.plan.target.on_base


@pytest.mark.parametrize("method", [m for m in methods.names() if methods.get(m).uses_models])
def test_every_method_sees_the_same_target(tmp_path, method):
    """Each method that reads the models gives on base + distillation LoRA (low-rank drift) what it gives on
    the merged checkpoint."""
    merged = _merged(tmp_path, load_file(str(BASE)), [(DISTILL, 1.0)])
    out = []
    for target, stack in ((merged, ()), (None, [(DISTILL, 1.0)])):
        conv = Conversion.open(BASE, target, LORA, target_loras=stack)
        conv.run(TransferSettings.of(method), RunOptions(device="cpu", precision="float64", rank="full",
                                                          view_size=0))
        out.append({m: r.up.double() @ r.down.double() for m, r in conv.results.items()})
    _close(out[1], out[0])


def test_target_lora_on_a_checkpoint(tmp_path):
    """With --target as well, the LoRAs stack on that checkpoint."""
    base = load_file(str(BASE))
    ckpt = factories.drifted(base, seed=3, size=0.02)
    target = tmp_path / "ckpt.safetensors"
    save_file(ckpt, str(target))
    merged = _merged(tmp_path, ckpt, [(DISTILL, 0.8)])
    _, want = _run(BASE, merged, LORA)
    conv, got = _run(BASE, target, LORA, target_loras=[f"{DISTILL}:0.8"])
    _close(got, want)
    assert not conv.plan.target.on_base


def test_drift_stays_low_rank_where_it_is_the_loras_alone():
    conv = Conversion.open(BASE, None, LORA, target_loras=[(DISTILL, 1.0)])
    plan = conv.plan
    parts = {lp.module: _read_layer(plan, lp)[1] for lp in plan.layers}
    assert all(isinstance(p, DriftParts) for p in parts.values())
    W = load_file(str(BASE))
    q = parts["blocks.0.self_attn.q"].drift(W["blocks.0.self_attn.q.weight"].double(), torch.float64, "cpu")
    assert isinstance(q, LowRank) and q.P.shape == (64, 8)
    merged = plan.target.read("blocks.0.self_attn.q.weight").double()
    assert torch.allclose(q.dense(), merged - W["blocks.0.self_attn.q.weight"].double(), atol=1e-6)
    # head.head is given a full update (.diff): dense
    head = parts["head.head"].drift(W["head.head.weight"].double(), torch.float64, "cpu")
    assert isinstance(head, torch.Tensor)
    t = load_file(str(DISTILL))
    assert torch.allclose(head, t["diffusion_model.head.head.diff"].double())


def test_low_rank_drift_behaves_as_its_matrix():
    """What the engine asks of a drift works on the factors; anything else (another method's dense
    arithmetic) sees the dense matrix."""
    g = torch.Generator().manual_seed(0)
    P, Q = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(3, 9, generator=g, dtype=torch.float64)
    L, D = LowRank(P, Q), P @ Q
    X, Y = torch.randn(5, 12, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(X @ L, X @ D) and torch.allclose(L @ Y, D @ Y) and torch.allclose((L.T @ X.T), D.T @ X.T)
    assert torch.allclose((-L).dense(), -D) and abs(L.sq_norm() - float(D.square().sum())) < 1e-9
    assert tuple(L.shape) == (12, 9) and torch.allclose(torch.ones(12, 9, dtype=torch.float64) - L, 1 - D)
    assert torch.allclose(L.double().norm(), D.norm())
    assert torch.allclose(torch.linalg.svdvals(L), torch.linalg.svdvals(D))


def test_low_rank_and_dense_drift_give_the_same_layer():
    conv = Conversion.open(BASE, None, LORA, target_loras=[(DISTILL, 1.0)])
    lp = conv.layer("blocks.1.ffn.2")
    W_s, parts, B, A = _read_layer(conv.plan, lp)
    from casa_core.conversion import analyse_layer
    from casa_core.methods import get

    out = []
    for low in (True, False):
        drift = parts.drift(W_s.double(), torch.float64, "cpu", low_rank=low)
        an = analyse_layer(lp.module, W_s.double(), None, B, A, lp.scale, dtype=torch.float64, exact=True,
                           drift=drift)
        res = get("casa").conclude(an, TransferSettings(), "full", 0)
        out.append(res.up.double() @ res.down.double())
    assert isinstance(parts.drift(W_s, torch.float32, "cpu"), LowRank)
    assert float((out[0] - out[1]).norm() / out[1].norm()) < 1e-10


def test_output_says_what_it_is_meant_to_be_stacked_with(tmp_path, capsys):
    out, rep = tmp_path / "out.safetensors", tmp_path / "run.json"
    assert cli.main(["convert", "--base", str(BASE), "--target-lora", f"{DISTILL}:0.9", "--lora", str(LORA),
                     "-o", str(out), "--report", str(rep), "--device", "cpu"]) == 0
    assert ("converted for a target of distillation LoRAs: load together with distill.safetensors at strength 0.9 "
            "on the base model") in capsys.readouterr().err
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["casa.stack_with"]) == [{"name": "distill.safetensors", "strength": 0.9}]
    assert "distill.safetensors at strength 0.9 on the base model" in meta["casa.usage"]
    target = json.loads(meta["casa.target"])
    assert target["model"] == "base" and target["distillation_loras"][0]["strength"] == 0.9
    report = json.loads(rep.read_text())
    assert report["stack_with"] == [{"name": "distill.safetensors", "strength": 0.9}]
    assert report["usage"] == meta["casa.usage"]
    stacked = report["inputs"]["target"]["distillation_loras"]
    assert stacked[0]["strength"] == 0.9 and stacked[0]["layers"] == 25
    assert stacked[0]["full_updates"] == ["head.head"]
    assert {"key": "blocks.0.self_attn.q.diff_b", "what": "bias updates (diff_b)"} in stacked[0]["not_read"]


def test_inspect_explains_the_distillation_loras(capsys):
    assert cli.main(["inspect", "--base", str(BASE), "--target-lora", str(DISTILL), "--lora", str(LORA),
                     "--no-drift"]) == 0
    text = capsys.readouterr().out
    assert "+ distillation LoRA" in text and "at strength 1" in text
    assert "25 LoRA layers on linears (rank 8)" in text and "1 full updates (head.head)" in text
    assert "bias updates (diff_b)" in text and "26 layers will transfer" in text


def test_inspect_json_lists_the_distillation_loras(capsys):
    assert cli.main(["inspect", "--base", str(BASE), "--target-lora", f"{DISTILL}:0.5", "--lora", str(LORA),
                     "--json", "--no-drift"]) == 0
    data = json.loads(capsys.readouterr().out)
    stacked = data["target"]["distillation_loras"]
    assert stacked[0]["strength"] == 0.5 and stacked[0]["ranks"] == [8]
    assert data["checks"]["sources"]["target"]["distillation"][0].startswith(str(DISTILL))


def test_diff_m_and_norm_diffs_are_listed_not_read(tmp_path):
    t = load_file(str(DISTILL))
    t["diffusion_model.blocks.0.diff_m"] = torch.zeros(1, 6, 64)
    t["diffusion_model.blocks.1.norm3.diff"] = torch.zeros(64)
    path = tmp_path / "lightx2v.safetensors"
    save_file(t, str(path))
    conv = Conversion.open(BASE, None, LORA, target_loras=[path])
    whats = {i.key: i.what for i in conv.plan.target.loras[0].ignored}
    assert whats["blocks.0.diff_m"] == "modulation updates (diff_m)"
    assert whats["blocks.1.norm3.diff"] == "norm or non-linear full updates (.diff)"


def _fails(args, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    code = cli.main(["convert", *args, "--lora", str(LORA), "-o", str(out), "--device", "cpu", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists() and len(err.splitlines()) == 1, err
    return err


def test_bad_distillation_loras(tmp_path, capsys):
    small = factories.lora_factors(factories.model_tensors(1), seed=2)
    other = factories.write_lora(small, tmp_path / "d32.safetensors")
    err = _fails(["--base", str(BASE), "--target-lora", str(other)], tmp_path, capsys)
    assert "distillation LoRA d32.safetensors does not fit the target" in err and "--target-lora" in err
    sdxl = tmp_path / "sdxl.safetensors"
    save_file({"lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 64),
               "lora_unet_down_blocks_0_attn1_to_q.lora_up.weight": torch.zeros(64, 4)}, str(sdxl))
    err = _fails(["--base", str(BASE), "--target-lora", str(sdxl)], tmp_path, capsys)
    assert "matches no layer of the target" in err
    err = _fails(["--base", str(BASE), "--target-lora", f"{DISTILL}:nan"], tmp_path, capsys)
    assert "not a finite number" in err
    err = _fails(["--base", str(BASE)], tmp_path, capsys)
    assert "missing --target" in err


def test_no_output_onto_a_distillation_lora(tmp_path, capsys):
    import shutil

    d = tmp_path / "d.safetensors"
    shutil.copy(DISTILL, d)
    before = d.read_bytes()
    code = cli.main(["convert", "--base", str(BASE), "--target-lora", str(d), "--lora", str(LORA), "-o", str(d),
                     "--device", "cpu", "-q"])
    assert code == 2 and d.read_bytes() == before


def test_golden_checker_builds_the_target_lora_command(tmp_path):
    from tests.core import golden

    spec = json.loads((CASE / "case.json").read_text())
    cmd = golden.convert_command(CASE, spec, tmp_path / "o.safetensors", "float64")
    assert "--target" not in cmd and cmd[cmd.index("--target-lora") + 1] == str(DISTILL)
    spec |= {"target_lora": ["distill.safetensors", "distill.safetensors"], "target_lora_strength": [0.5, 0.25]}
    cmd = golden.convert_command(CASE, spec, tmp_path / "o.safetensors", "float64")
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--target-lora"] == [f"{DISTILL}:0.5", f"{DISTILL}:0.25"]
    proc = subprocess.run([sys.executable, "-m", "casa_core", "convert", *cmd[cmd.index("convert") + 1:]],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _renamed(fmt: str, tmp_path):
    """The golden distillation LoRA in another layout: kohya (``.diff`` kept) or diffusers (no ``.diff`` form)."""
    from casa_core.families import wan

    t = load_file(str(DISTILL))
    out, meta = {}, {"format": "pt"}
    for k, v in t.items():
        bare = k.removeprefix("diffusion_model.")
        for end, new in ((".lora_A.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_up.weight"),
                         (".alpha", ".alpha"), (".diff_b", ".diff_b"), (".diff", ".diff")):
            if bare.endswith(end):
                module = bare[: -len(end)]
                if fmt == "kohya":
                    out["lora_unet_" + module.replace(".", "_") + new] = v
                elif end in (".lora_A.weight", ".lora_B.weight"):
                    out["transformer." + wan.to_diffusers(module) + end] = v
                break
    if fmt == "diffusers":
        meta["lora_adapter_metadata"] = json.dumps({"r": 8, "lora_alpha": 4})
    path = tmp_path / f"distill-{fmt}.safetensors"
    save_file(out, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_distillation_loras_in_other_layouts(tmp_path, fmt):
    path = _renamed(fmt, tmp_path)
    merged = _merged(tmp_path, load_file(str(BASE)), [(DISTILL, 1.0)]) if fmt == "kohya" else None
    if merged is None:      # the diffusers layout cannot hold head.head's full update
        comfy = {k: v for k, v in load_file(str(DISTILL)).items() if not k.endswith(".diff")}
        save_file(comfy, str(tmp_path / "nodiff.safetensors"))
        merged = _merged(tmp_path, load_file(str(BASE)), [(tmp_path / "nodiff.safetensors", 1.0)])
    _, want = _run(BASE, merged, LORA)
    conv, got = _run(BASE, None, LORA, target_loras=[(path, 1.0)])
    _close(got, want)
    d = conv.plan.target.loras[0]
    assert d.lora.format == fmt and d.pairs == 25 and d.diffs == (["head.head"] if fmt == "kohya" else [])
