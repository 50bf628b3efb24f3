"""`casa batch`: many LoRAs onto several targets, layer-major, each output what `casa convert` writes."""

import json
import threading
from pathlib import Path

import pytest

from casa_core import batch as B
from casa_core import cli, methods
from casa_core.batch import Batch, BatchSpec, LoraSpec, TargetSpec, expand_loras, read_manifest
from casa_core.errors import Cancelled, CasaError
from casa_core.settings import RunOptions, TransferSettings
from tests.core import factories as fx


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A base, two targets (a file and a diffusers folder) and three LoRAs of different layouts, ranks
    and layer sets."""
    d = tmp_path_factory.mktemp("batch-in")
    t = fx.model_tensors(1, blocks=2)
    base = fx.write_model(t, d / "base.safetensors")
    fast = fx.write_model(fx.drifted(t, 2), d / "fast.safetensors")
    slow = fx.write_model(fx.drifted(t, 3, 0.1), d / "slowtarget", layout="diffusers", folder="diffusers")
    lib = d / "loras"
    lib.mkdir()
    loras = [fx.write_lora(fx.lora_factors(t, 10, rank=4), lib / "alpha.safetensors"),
             fx.write_lora(fx.lora_factors(t, 11, rank=8), lib / "beta.safetensors", fmt="kohya", alpha=4.0),
             fx.write_lora(fx.lora_factors(t, 12, rank=4, modules=["blocks.0.self_attn.q", "blocks.1.ffn.0"]),
                           lib / "gamma.safetensors", fmt="diffusers", dtype=__import__("torch").bfloat16)]
    return {"dir": d, "base": base, "fast": fast, "slow": slow, "loras": loras, "lib": lib, "tensors": t}


def single(inputs, lora, target, out: Path, *args) -> bytes:
    assert cli.main(["convert", "--base", str(inputs["base"]), "--target", str(target), "--lora", str(lora),
                     "--device", "cpu", "-q", "--output", str(out), *args]) == 0
    return out.read_bytes()


def test_every_output_is_byte_identical_to_its_single_conversion(inputs, tmp_path):
    """Two targets, three LoRAs, one layer-major pass: each file, header and tensors, equals the single
    `casa convert` of its pair (a second LoRA on the same pair state included)."""
    out = tmp_path / "out"
    out.mkdir()
    argv = ["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--target", str(inputs["slow"]),
            "--name", "slow", "--lora", str(inputs["lib"]), "--output-dir", str(out), "--device", "cpu", "-q"]
    assert cli.main(argv) == 0
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == sorted(f"{lo}-{t}.safetensors" for lo in ("alpha", "beta", "gamma") for t in ("fast", "slow"))
    for lora in inputs["loras"]:
        for tname, target in (("fast", inputs["fast"]), ("slow", inputs["slow"])):
            want = single(inputs, lora, target, tmp_path / "single.safetensors")
            assert (out / f"{lora.stem}-{tname}.safetensors").read_bytes() == want, (lora.stem, tname)
    summary = json.loads((out / "batch-summary.json").read_text())
    assert summary["counts"]["written"] == 6 and summary["counts"]["failed"] == 0
    # layer-major: each base layer decomposed once for all six outputs, each target's drift once per layer
    n_layers = len({m for m in fx.lora_factors(inputs["tensors"], 0)})
    assert summary["shared"]["base_layers"] == n_layers
    assert summary["shared"]["pairs"] == 2 * n_layers
    rep = json.loads((out / "beta-slow.report.json").read_text())
    assert rep["batch"]["lora"] == "beta" and rep["output"]["path"].endswith("beta-slow.safetensors")


def test_a_pass_of_several_loras_matches_one_lora_per_pass(inputs, tmp_path):
    """The shared pair state is not changed by the LoRAs concluded on it: every output is the same whether its
    LoRA had the pair to itself (chunk 1) or came after others (chunk 3), with other settings and options."""
    got = {}
    for chunk in (1, 3):
        out = tmp_path / f"c{chunk}"
        out.mkdir()
        spec = BatchSpec(str(inputs["base"]), [TargetSpec("fast", str(inputs["fast"]))],
                         [LoraSpec(str(p)) for p in inputs["loras"]], str(out),
                         TransferSettings.of("casa", tau=0.3, energy=0.8),
                         RunOptions(device="cpu", rank=3, view_size=0, out_format="comfy", out_dtype="float32"),
                         chunk=chunk)
        summary = Batch(spec).run()
        assert summary.passes == (3 if chunk == 1 else 1)
        got[chunk] = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    assert got[1] == got[3] and len(got[1]) == 3


def test_manifest_sets_per_lora_options_and_names(inputs, tmp_path):
    """A TOML manifest: targets, LoRAs with their own method, parameters, rank, layout and output names;
    each output equals the single conversion with those options. The JSON form reads the same."""
    out = tmp_path / "out"
    out.mkdir()
    lib = inputs["lib"]
    man = tmp_path / "batch.toml"
    man.write_text(f'''
base = "{inputs["base"]}"
output_dir = "out"
pattern = "{{target}}/{{lora}}.safetensors"
[[target]]
name = "fast"
path = "{inputs["fast"]}"
[[lora]]
path = "{lib / "alpha.safetensors"}"
rank = 2
format = "kohya"
output = {{fast = "alpha-for-fast.safetensors"}}
[[lora]]
path = "{lib / "beta.safetensors"}"
method = "direct"
[[lora]]
path = "{lib / "gamma.safetensors"}"
name = "g"
settings = {{tau = 0.25}}
dtype = "float16"
''')
    m = read_manifest(man)
    assert [lo.label for lo in m["loras"]] == ["alpha", "beta", "g"]
    assert m["loras"][0].options == {"rank": 2, "out_format": "kohya"}
    jman = tmp_path / "batch.json"
    jman.write_text(json.dumps({"base": str(inputs["base"]), "target": [{"name": "fast", "path": str(inputs["fast"])}],
                                "lora": [str(lib / "alpha.safetensors")]}))
    assert read_manifest(jman)["loras"][0].path == str(lib / "alpha.safetensors")
    # a pattern with a folder is refused before any work
    with pytest.raises(CasaError, match="plain file name"):
        Batch(BatchSpec(**{**_spec_args(m, out), "pattern": "{target}/{lora}.safetensors"})).prepare()
    assert cli.main(["batch", "--manifest", str(man), "--pattern", "{lora}-{target}.safetensors", "--device",
                     "cpu", "-q", "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["alpha-for-fast.safetensors", "beta-fast.safetensors",
                                                                 "g-fast.safetensors"]
    fast = inputs["fast"]
    assert (out / "alpha-for-fast.safetensors").read_bytes() == single(
        inputs, lib / "alpha.safetensors", fast, tmp_path / "a.safetensors", "--rank", "2", "--format", "kohya")
    assert (out / "beta-fast.safetensors").read_bytes() == single(
        inputs, lib / "beta.safetensors", fast, tmp_path / "b.safetensors", "--method", "direct")
    assert (out / "g-fast.safetensors").read_bytes() == single(
        inputs, lib / "gamma.safetensors", fast, tmp_path / "g.safetensors", "--tau", "0.25", "--dtype", "float16")


def _spec_args(m, out):
    return {"base": m["base"], "targets": m["targets"], "loras": m["loras"], "output_dir": str(out),
            "options": RunOptions(device="cpu", view_size=0)}


def test_bad_loras_are_skipped_and_reported(inputs, tmp_path, capsys):
    """A LoRA that is not one, one for another model size and a missing one fail on their own; the rest are
    written, the exit status is non-zero and the summary says why."""
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({"x": torch.zeros(3)}, bad / "notalora.safetensors")
    big = fx.model_tensors(5, blocks=1, dim=48, ffn=96)
    fx.write_lora(fx.lora_factors(big, 1), bad / "otherSize.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--lora", str(bad),
                   "--lora", str(inputs["loras"][0]), "--lora", str(tmp_path / "missing.safetensors"),
                   "--output-dir", str(out), "--device", "cpu", "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "failed: otherSize -> fast" in err and "failed: notalora -> fast" in err
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["alpha-fast.safetensors"]
    summary = json.loads((out / "batch-summary.json").read_text())
    status = {o["lora"]: o for o in summary["outputs"]}
    assert status["alpha"]["status"] == B.WRITTEN
    assert {status[n]["status"] for n in ("notalora", "otherSize", "missing")} == {B.FAILED}
    assert "another model size" in status["otherSize"]["error"]
    assert not list(out.glob(".*"))


def test_rerun_skips_complete_outputs_and_force_redoes_them(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    args = ["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--lora", str(inputs["loras"][0]),
            "--lora", str(inputs["loras"][1]), "--output-dir", str(out), "--device", "cpu", "-q"]
    assert cli.main(args) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    assert cli.main(args) == 0
    summary = json.loads((out / "batch-summary.json").read_text())
    assert summary["counts"] == {"written": 0, "skipped": 2, "failed": 0, "cancelled": 0, "pending": 0}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")} == first
    # other options, or a damaged output, are not "complete": redone
    assert cli.main([*args, "--rank", "2"]) == 0
    assert json.loads((out / "batch-summary.json").read_text())["counts"]["written"] == 2
    path = out / "alpha-fast.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    assert cli.main([*args, "--rank", "2"]) == 0
    outs = {o["lora"]: o["status"] for o in json.loads((out / "batch-summary.json").read_text())["outputs"]}
    assert outs == {"alpha": B.WRITTEN, "beta": B.SKIPPED}
    assert cli.main([*args, "--rank", "2", "--force"]) == 0
    assert json.loads((out / "batch-summary.json").read_text())["counts"]["written"] == 2


def test_cancel_keeps_finished_outputs_only(inputs, tmp_path):
    """Cancelled in the second pass: the first pass's outputs stay whole, nothing partial is left."""
    out = tmp_path / "out"
    out.mkdir()
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.pass_index == 1 and p.layer >= 2:
            cancel.set()

    spec = BatchSpec(str(inputs["base"]), [TargetSpec(None, str(inputs["fast"]))],
                     [LoraSpec(str(p)) for p in inputs["loras"]], str(out),
                     options=RunOptions(device="cpu", view_size=0), chunk=1)
    batch = Batch(spec)
    with pytest.raises(Cancelled):
        batch.run(cancel, progress)
    assert [e.status for e in batch.entries] == [B.WRITTEN, B.CANCELLED, B.CANCELLED]
    assert sorted(p.name for p in out.iterdir()) == ["alpha-fast.report.json", "alpha-fast.safetensors",
                                                     "batch-summary.json"]
    assert seen[-1].eta is not None and seen[-1].outputs == 3
    assert any(p.entry is not None and p.entry.status == B.WRITTEN for p in seen)


def test_target_groups_and_inputs():
    groups = cli._target_groups([("target", "a/fast.safetensors"), ("name", "F"),
                                 ("target-lora", "x/lightx.safetensors:0.8"), ("target-lora", "y.safetensors"),
                                 ("target", "org/name"), ("target-lora", "z")])
    assert [(g.name, g.path, g.loras) for g in groups] == [
        ("F", "a/fast.safetensors", ()), (None, None, (("x/lightx.safetensors", 0.8), ("y.safetensors", 1.0))),
        (None, "org/name", (("z", 1.0),))]
    assert [g.label for g in groups] == ["F", "lightx+y", "name"]
    with pytest.raises(CasaError, match="follows no target"):
        cli._target_groups([("name", "x")])


def test_expand_loras(tmp_path):
    for n in ("b.safetensors", "a.safetensors", "notes.txt"):
        (tmp_path / n).write_bytes(b"")
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text("{}")
    assert expand_loras([str(tmp_path)]) == [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    assert expand_loras([str(tmp_path / "*.safetensors"), str(tmp_path / "a.safetensors"), str(peft)]) == [
        str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), str(peft)]
    with pytest.raises(CasaError, match="no LoRA matches"):
        expand_loras([str(tmp_path / "*.pt")])


def test_batch_refuses_bad_settings_before_work(inputs, tmp_path):
    base = dict(base=str(inputs["base"]), targets=[TargetSpec("t", str(inputs["fast"]))],
                loras=[LoraSpec(str(inputs["loras"][0]))], output_dir=str(tmp_path))
    for change, match in (({"pattern": "{lora}.safetensors"}, "lacks {target}"), ({"chunk": 0}, "chunk"),
                          ({"targets": [TargetSpec("t", "a"), TargetSpec("t", "b")]}, "both named"),
                          ({"loras": [LoraSpec("x", options={"device": "cpu"})]}, "cannot be set per LoRA")):
        with pytest.raises(CasaError, match=match):
            Batch(BatchSpec(**(base | change)))
    with pytest.raises(CasaError, match="does not exist"):
        Batch(BatchSpec(**(base | {"output_dir": str(tmp_path / "nope")}))).prepare()
    common = ["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--lora",
              str(inputs["loras"][0]), "--output-dir", str(tmp_path), "-q"]
    assert cli.main([*common, "--chunk", "0"]) == 2
    assert cli.main([*common, "--max-rank", "8"]) == 2          # a cap applies to the auto rank only
    twice = [LoraSpec(str(inputs["loras"][0])), LoraSpec(str(inputs["loras"][1]), "alpha")]
    spec = BatchSpec(**(base | {"loras": twice}))
    with pytest.raises(CasaError, match="would both be"):
        Batch(spec).prepare()


def test_ctrl_c_keeps_finished_outputs(inputs, tmp_path, monkeypatch, capsys):
    """Ctrl-C (KeyboardInterrupt in the main thread) during the second pass: exit 130, the first pass's
    outputs whole, no temporary file, and the summary says which were cancelled."""
    def interrupt(self, p):
        if p.pass_index == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli._BatchProgress, "__call__", interrupt)
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--lora",
                   str(inputs["lib"]), "--chunk", "1", "--output-dir", str(out), "--device", "cpu"])
    assert rc == 130
    assert "finished outputs kept: 1; nothing partial" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["alpha-fast.report.json", "alpha-fast.safetensors",
                                                     "batch-summary.json"]
    summary = json.loads((out / "batch-summary.json").read_text())
    assert summary["counts"]["written"] == 1 and summary["counts"]["cancelled"] == 2


def test_manifest_mistakes_are_one_line_errors(tmp_path, capsys):
    cases = {"bad.toml": ("base = ", "not valid TOML"), "bad.json": ("[1, 2", "not valid JSON"),
             "key.toml": ('base = "b"\nbogus = 1\n', "unknown manifest key 'bogus'"),
             "lora.toml": ('[[lora]]\npath = "a.safetensors"\nstrength = 2\n', "unknown lora key 'strength'"),
             "method.toml": ('[[lora]]\npath = "a"\nmethod = "direct"\nsettings = {tau = 0.3}\n', "tau"),
             "strength.toml": ('[[target]]\nloras = [{path = "d", strength = "x"}]\n', "is not a number")}
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(CasaError, match=match):
            read_manifest(tmp_path / name)
    assert cli.main(["batch", "--manifest", str(tmp_path / "key.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(--manifest)" in err


def test_distillation_lora_targets_match_single_conversions(inputs, tmp_path):
    """A target of the base with a distillation LoRA (and one of a checkpoint with one stacked on it): each
    output is what `casa convert --target-lora` writes."""
    out = tmp_path / "out"
    out.mkdir()
    distill = str(inputs["loras"][2]) + ":0.5"
    assert cli.main(["batch", "--base", str(inputs["base"]), "--target-lora", distill, "--name", "distilled",
                     "--target", str(inputs["fast"]), "--target-lora", distill, "--name", "fastplus",
                     "--lora", str(inputs["loras"][0]), "--output-dir", str(out), "--device", "cpu", "-q"]) == 0
    lora = inputs["loras"][0]
    for name, target in (("distilled", []), ("fastplus", ["--target", str(inputs["fast"])])):
        want = tmp_path / f"{name}.safetensors"
        assert cli.main(["convert", "--base", str(inputs["base"]), *target, "--target-lora", distill, "--lora",
                         str(lora), "--device", "cpu", "-q", "--output", str(want)]) == 0
        assert (out / f"alpha-{name}.safetensors").read_bytes() == want.read_bytes(), name



@pytest.mark.parametrize("method", methods.names())
def test_every_method_and_the_auto_rank_match_single_conversions(inputs, tmp_path, method):
    """Two LoRAs on one pair with each registered method (some keep more of the pair for the next LoRA: the
    target's own basis), at the auto rank: each output is its single conversion's bytes."""
    out = tmp_path / "out"
    out.mkdir()
    args = ["--method", method, "--rank", "auto:0.8", "--device", "cpu", "-q"]
    assert cli.main(["batch", "--base", str(inputs["base"]), "--target", str(inputs["slow"]), "--lora",
                     str(inputs["loras"][0]), "--lora", str(inputs["loras"][1]), "--output-dir", str(out), *args]) == 0
    for lora in inputs["loras"][:2]:
        want = single(inputs, lora, inputs["slow"], tmp_path / "single.safetensors", *args)
        assert (out / f"{lora.stem}-slowtarget.safetensors").read_bytes() == want, lora.stem


def test_one_layer_at_a_time_reads_ahead_and_matches(inputs, tmp_path):
    """With one worker (the GPU's way) the next layer is read while this one is computed: the same bytes as
    a single conversion with one worker."""
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--target",
                     str(inputs["slow"]), "--lora", str(inputs["lib"]), "--output-dir", str(out), "--device", "cpu",
                     "--workers", "1", "-q"]) == 0
    for lora in inputs["loras"]:
        want = single(inputs, lora, inputs["slow"], tmp_path / "single.safetensors", "--workers", "1")
        assert (out / f"{lora.stem}-slowtarget.safetensors").read_bytes() == want


def test_target_loras_are_read_as_convert_reads_them():
    """``--target-lora PATH[:STRENGTH]`` means the same in batch as in convert (a drive letter stays
    part of the path; a strength that is no finite number is refused)."""
    from casa_core.distillation import parse_weighted

    for text in (r"C:\loras\x.safetensors", r"C:\loras\x.safetensors:0.5", "org/name:file.safetensors:.5", "C:0.5"):
        (group,) = cli._target_groups([("target-lora", text)])
        w = parse_weighted(text)
        assert group.loras == ((w.spec, w.strength),), text
    with pytest.raises(CasaError, match="not a finite number"):
        cli._target_groups([("target-lora", "x.safetensors:nan")])
