"""Layers in the network's order everywhere, a run that resumes after a cancel, and the plain verdict."""

import json
import subprocess
import sys
import threading

import pytest
import torch

from casa_core.conversion import Conversion
from casa_core.errors import Cancelled
from casa_core.families import wan
from casa_core.settings import RunOptions, TransferSettings
from casa_core.verdict import (
    CHECK,
    GOOD,
    POOR,
    THRESHOLDS,
    Verdict,
    derived_figures,
    layer_verdict,
    model_verdict,
    thresholds_table,
)

from .factories import drifted, lora_factors, model_tensors, write_lora, write_model


@pytest.fixture(scope="module")
def twelve_blocks(tmp_path_factory):
    """Base, target and LoRA with 12 blocks, so that text order (1, 10, 11, 2 ...) differs from block order."""
    d = tmp_path_factory.mktemp("twelve")
    t = model_tensors(1, blocks=12, dim=16, ffn=32)
    base = write_model(t, d / "base")
    target = write_model(drifted(t, 2), d / "target")
    lora = write_lora(lora_factors(t, 3, rank=2), d / "lora.safetensors", fmt="kohya")
    return base, target, lora


def expected_order(modules):
    return sorted(modules, key=wan.layer_order)


def test_layer_order_is_by_block_number_then_module():
    names = ["head.head", "blocks.10.self_attn.q", "blocks.2.ffn.2", "blocks.2.cross_attn.k", "blocks.2.self_attn.o",
             "text_embedding.0", "blocks.1.ffn.0", "time_embedding.0", "blocks.2.self_attn.q", "zz.unknown"]
    assert sorted(names, key=wan.layer_order) == [
        "text_embedding.0", "time_embedding.0", "blocks.1.ffn.0", "blocks.2.self_attn.q", "blocks.2.self_attn.o",
        "blocks.2.cross_attn.k", "blocks.2.ffn.2", "blocks.10.self_attn.q", "head.head", "zz.unknown"]
    assert wan.block_part("blocks.12.cross_attn.v_img") == (12, "cross_attn.v_img")
    assert wan.block_part("head.head") == (None, "head.head")


def test_plan_run_and_report_follow_the_network_order(twelve_blocks, tmp_path):
    base, target, lora = twelve_blocks
    conv = Conversion.open(base, target, lora)
    modules = [lp.module for lp in conv.plan.layers]
    assert modules == expected_order(modules) and modules != sorted(modules)
    assert modules.index("blocks.2.self_attn.q") < modules.index("blocks.10.self_attn.q")
    assert modules.index("blocks.0.self_attn.v") < modules.index("blocks.0.cross_attn.q")
    lp = conv.layer("blocks.11.ffn.2")
    assert (lp.block, lp.part) == (11, "ffn.2")
    out, rep = tmp_path / "out.safetensors", tmp_path / "run.json"
    seen = []
    conv.convert(out, TransferSettings(), RunOptions(view_size=0), report=rep,
                 on_result=lambda i, n, res: seen.append(res.name))
    assert seen == modules
    report = json.loads(rep.read_text())
    assert list(report["layers"]) == modules
    assert [x["module"] for x in report["inputs"]["layers"] or []] in ([], modules)


def test_cli_lists_layers_in_the_network_order(twelve_blocks):
    base, target, lora = twelve_blocks
    p = subprocess.run([sys.executable, "-m", "casa_core", "inspect", "--base", str(base), "--target", str(target),
                        "--lora", str(lora)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    listed = [line.split()[0] for line in p.stdout.splitlines() if line.strip().startswith(("blocks.", "text_", "time_",
                                                                                          "head."))]
    assert listed and listed == expected_order(listed)


def test_a_resumed_run_computes_only_the_missing_layers_and_matches_a_full_run(twelve_blocks):
    base, target, lora = twelve_blocks
    settings, options = TransferSettings(), RunOptions(view_size=0, workers=1)
    full = {r.name: r for r in Conversion.open(base, target, lora).layers(settings, options)}

    conv = Conversion.open(base, target, lora)
    cancel = threading.Event()
    done = {}
    with pytest.raises(Cancelled):
        for res in conv.layers(settings, options, cancel):
            done[res.name] = res
            if len(done) == 5:
                cancel.set()
    assert len(done) == 5
    resumed = list(conv.layers(settings, options, resume=done))
    assert [r.name for r in resumed] == [lp.module for lp in conv.plan.layers][5:]      # only the rest
    assert conv.complete and all(conv.results[m] is r for m, r in done.items())
    for m, r in full.items():
        assert torch.equal(conv.results[m].up, r.up) and torch.equal(conv.results[m].down, r.down), m


def test_layer_verdict_reads_the_report_figures():
    good = layer_verdict({"energy_kept": 0.99, "capped": 2, "shape": [48, 48], "drift": 0.04})
    assert good.level == GOOD and len(good.reasons) == 3 and good.causes == ()
    low = layer_verdict({"energy_kept": 0.85, "capped": 2, "shape": [48, 48], "drift": 0.04})
    assert low.level == CHECK and low.causes == ("energy kept by the rank",)
    assert low.reasons[0].startswith("energy kept by the rank 0.850: check")
    capped = layer_verdict({"energy_kept": 0.99, "capped": 48 * 48 // 5, "shape": [192, 48], "drift": 0.04})
    assert capped.level == POOR and "share of the routing grid capped" in capped.causes
    # a method with fewer figures (direct: no capping, no drift) is judged on what it has
    assert layer_verdict({"energy_kept": 1.0, "drift": None}).level == GOOD
    assert layer_verdict({}) == Verdict("", ())
    # a share reported by the method itself wins over the one derived from the capped count
    assert derived_figures({"capped": 100, "shape": [10, 10], "capped_share": 0.01})["capped_share"] == 0.01


def test_thresholds_are_ordered_and_documented():
    for t in THRESHOLDS:
        assert (t.good > t.poor) if t.higher_is_better else (t.good < t.poor)
        assert t.level(t.good) == GOOD and t.label in thresholds_table()
        edge = t.poor - 1e-6 if t.higher_is_better else t.poor + 1e-6
        assert t.level(edge) == POOR and t.level((t.good + t.poor) / 2) == CHECK


def test_model_verdict_counts_its_layers():
    g, c, p = (layer_verdict({"energy_kept": e}) for e in (0.99, 0.8, 0.5))
    assert model_verdict([g] * 20).level == GOOD
    assert model_verdict([g] * 19 + [p]).level == CHECK            # one poor layer in twenty: check it
    assert model_verdict([g] * 8 + [p] * 2).level == POOR          # a tenth of them poor
    assert model_verdict([g] * 9 + [c]).level == CHECK
    v = model_verdict([g, c, p])
    assert v.reasons[0] == "1 of 3 layers good, 1 to check, 1 poor"
    assert "poor: energy kept by the rank (1)" in v.reasons
    assert model_verdict([]).level == ""
