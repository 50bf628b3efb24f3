"""Pickled checkpoints (.pt, .pth, .ckpt): weights-only loading, container choice, prefixes, refusals."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from casa_core import names
from casa_core.conversion import Conversion
from casa_core.errors import CasaError
from casa_core.models import ModelSource
from casa_core.settings import RunOptions, TransferSettings
from casa_core.sources import pickled
from tests.core import factories as f


@pytest.fixture(scope="module")
def tensors():
    t = f.model_tensors(0)
    return t, f.drifted(t, 3)


def _fsdp(t, prefix="model."):
    """Self-Forcing's keys: ``model.`` + original, wrapped by FSDP at the top and around each block."""
    return {f"_fsdp_wrapped_module.{prefix}{_wrap_block(k)}": v.clone() for k, v in t.items()}


def _wrap_block(k):
    # blocks.3.self_attn.q.weight -> blocks.3._fsdp_wrapped_module.self_attn.q.weight
    if not k.startswith("blocks."):
        return k
    _, n, rest = k.split(".", 2)
    return f"blocks.{n}._fsdp_wrapped_module.{rest}"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generator_ema_with_fsdp_prefixes(tmp_path, tensors):
    t, t_ema = tensors
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": _fsdp(t), "generator_ema": _fsdp(t_ema), "critic": _fsdp(t), "step": 600}, path)
    before = _digest(path)
    m = ModelSource(path, "target")
    assert m.container == "generator_ema" and m.layout == "original"
    assert set(m.canonical_keys()) == set(t)
    for k in ("blocks.1.self_attn.q.weight", "head.head.weight", "blocks.0.modulation"):
        got = m.read(k)
        assert torch.equal(got, t_ema[k]), k
        got.add_(1.0)   # a copy, never the mapped file
    assert torch.equal(m.read("head.head.weight"), t_ema["head.head.weight"])
    assert _digest(path) == before


@pytest.mark.parametrize("wrap, container", [
    (lambda sd: {"generator": sd, "critic": {"x": torch.zeros(1)}}, "generator"),
    (lambda sd: {"state_dict": sd, "epoch": 3}, "state_dict"),           # Lightning .ckpt
    (lambda sd: {"model": {"module." + k: v for k, v in sd.items()}}, "model"),
    (lambda sd: {"module": sd}, "module"),
    (lambda sd: dict(sd), ""),                                           # a bare state dict
])
def test_container_choice(tmp_path, tensors, wrap, container):
    t, _ = tensors
    path = tmp_path / "ckpt.pth"
    torch.save(wrap({"model.diffusion_model." + k: v for k, v in t.items()}), path)
    m = ModelSource(path, "base")
    assert m.container == container
    assert set(m.canonical_keys()) == set(t)
    assert torch.equal(m.read("blocks.0.ffn.0.weight"), t["blocks.0.ffn.0.weight"])


def test_pt_target_converts_like_safetensors(tmp_path, tensors):
    t, t_ema = tensors
    base = f.write_model(t, tmp_path / "base.safetensors")
    st_target = f.write_model(t_ema, tmp_path / "target.safetensors")
    pt_target = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": _fsdp(t), "generator_ema": _fsdp(t_ema)}, pt_target)
    lora = f.write_lora(f.lora_factors(t, 1, rank=4), tmp_path / "lora.safetensors", alpha=2.0)
    opts = RunOptions(rank="full", device="cpu", view_size=0)
    few = r"blocks\.1\.(self_attn|ffn)"
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    Conversion.open(base, pt_target, lora, layers=few).convert(a, TransferSettings(), opts)
    Conversion.open(base, st_target, lora, layers=few).convert(b, TransferSettings(), opts)
    ga, gb = f.read_updates(a), f.read_updates(b)
    assert ga.keys() == gb.keys()
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


class _RunsCode:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path, tensors):
    t, _ = tensors
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"generator": {k: v for k, v in t.items()}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CasaError) as e:
        ModelSource(path, "target")
    msg = str(e.value)
    assert "needs full unpickling" in msg and "arbitrary code" in msg and "refused" in msg
    assert "io.open" in msg and len(msg.splitlines()) == 1
    assert not marker.exists()


def test_refused_through_the_cli(tmp_path, tensors):
    """One line, exit 2, nothing written, nothing executed (argparse.Namespace configs too)."""
    import argparse

    t, _ = tensors
    bad = tmp_path / "with_config.pt"
    torch.save({"generator_ema": dict(t), "config": argparse.Namespace(lr=1e-5)}, bad)
    base = f.write_model(t, tmp_path / "base.safetensors")
    lora = f.write_lora(f.lora_factors(t, 1, rank=4), tmp_path / "lora.safetensors")
    out = tmp_path / "out.safetensors"
    p = subprocess.run([sys.executable, "-m", "casa_core", "convert", "--base", str(base), "--target", str(bad),
                        "--lora", str(lora), "--output", str(out), "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and not out.exists()
    err = p.stderr.strip()
    assert err.startswith("casa: error: with_config.pt needs full unpickling") and "argparse.Namespace" in err
    assert len(err.splitlines()) == 1


def test_other_bad_pickles(tmp_path, tensors):
    t, _ = tensors
    legacy = tmp_path / "legacy.pt"
    torch.save(dict(t), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CasaError, match="not a zip-format torch checkpoint"):
        ModelSource(legacy, "base")
    empty = tmp_path / "opt.pt"
    torch.save({"optimizer": {"lr": 0.1}, "step": 3}, empty)
    with pytest.raises(CasaError, match="holds no state dict .*optimizer, step"):
        ModelSource(empty, "base")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04" + os.urandom(64))
    with pytest.raises(CasaError, match="junk.ckpt"):
        ModelSource(junk, "base")


def test_reads_stay_correct_across_remaps(tmp_path, tensors, monkeypatch):
    """The mapping is renewed after REMAP_BYTES read; values stay right and memory stays bounded."""
    t, _ = tensors
    path = tmp_path / "m.pt"
    torch.save({"generator_ema": {"model." + k: v for k, v in t.items()}}, path)
    monkeypatch.setattr(pickled, "REMAP_BYTES", 4096)
    m = ModelSource(path, "base")
    for _ in range(2):
        for k in t:
            assert torch.equal(m.read(k), t[k]), k


def test_pt_lora(tmp_path, tensors):
    t, _ = tensors
    factors = f.lora_factors(t, 1, rank=4)
    st = f.write_lora(factors, tmp_path / "lora.safetensors", alpha=2.0)
    from safetensors.torch import load_file

    pt = tmp_path / "lora.pt"
    torch.save({"state_dict": load_file(st)}, pt)
    conv = Conversion.open(f.write_model(t, tmp_path / "b.safetensors"), tmp_path / "b.safetensors", pt)
    plan_pt = conv.plan
    assert len(plan_pt.layers) == len(factors)
    assert {lp.scale for lp in plan_pt.layers} == {0.5}
    assert names.strip_wrappers("m._fsdp_wrapped_module.blocks.0._checkpoint_wrapped_module.x") == "m.blocks.0.x"
