"""Every bad input ends with one line, a non-zero exit, no traceback, no output, inputs untouched."""

import hashlib
import subprocess

import pytest
import torch
from safetensors.torch import save_file

from casa_core.resources import demo_inputs
from tests.core import factories as f


@pytest.fixture
def demo(tmp_path):
    dst = f.demo_copy(tmp_path)
    return {"base": dst / "base.safetensors", "target": dst / "target", "lora": dst / "lora.safetensors"}


def _digest(paths):
    out = {}
    for p in paths:
        p = p if p.is_file() else None
        if p:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run(casa_cmd, srcs, out, *extra):
    args = ["convert", "--base", str(srcs["base"]), "--target", str(srcs["target"]), "--lora", str(srcs["lora"]),
            "--output", str(out), "--device", "cpu", *extra]
    before = _digest([p for s in srcs.values() for p in ([s] if s.is_file() else s.rglob("*"))])
    p = subprocess.run(casa_cmd + args, capture_output=True, text=True, timeout=120)
    after = _digest([p_ for s in srcs.values() for p_ in ([s] if s.is_file() else s.rglob("*"))])
    assert before == after, "an input was modified"
    return p


def _refused(p, out, *words):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("casa: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], p.stderr  # progress lines may come before
    err = errors[0]
    for w in words:
        assert w.lower() in err.lower(), err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*")), "a temporary file was left behind"


def test_missing_path(demo, tmp_path, casa_cmd):
    out = tmp_path / "out.safetensors"
    demo["lora"] = tmp_path / "nope.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "does not exist")


@pytest.mark.parametrize("kind", ["empty", "truncated", "not-safetensors"])
def test_unreadable_lora(demo, tmp_path, casa_cmd, kind):
    bad = tmp_path / "bad.safetensors"
    raw = demo["lora"].read_bytes()
    variants = {"empty": b"", "truncated": raw[: len(raw) // 2], "not-safetensors": b"PK\x03\x04" + raw[:100]}
    bad.write_bytes(variants[kind])
    demo["lora"] = bad
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, str(bad.name))


def test_truncated_model(demo, tmp_path, casa_cmd):
    raw = demo["base"].read_bytes()
    demo["base"].write_bytes(raw[:-1000])
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "truncated")


def test_sdxl_lora_matches_nothing(demo, tmp_path, casa_cmd):
    sdxl = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(320, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(4, 768),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(3072, 4),
    }
    save_file(sdxl, tmp_path / "sdxl.safetensors")
    demo["lora"] = tmp_path / "sdxl.safetensors"
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "matches no layer")


def test_lora_for_another_size(demo, tmp_path, casa_cmd):
    """A LoRA for a bigger model (the 14B-on-1.3B mistake) is refused by shape."""
    t = f.model_tensors(0, dim=64, ffn=128)
    f.write_lora(f.lora_factors(t, 1), tmp_path / "big.safetensors", fmt="comfy", alpha=4.0)
    demo["lora"] = tmp_path / "big.safetensors"
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "do not fit", "another model size")


def test_base_and_target_differ(demo, tmp_path, casa_cmd):
    t = f.model_tensors(0, dim=64, ffn=128)
    demo["target"] = f.write_model(t, tmp_path / "other.safetensors")
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "differ in shape")


def test_nan_in_target(demo, tmp_path, casa_cmd):
    from safetensors.torch import load_file

    f_ = demo["target"] / "transformer" / "diffusion_pytorch_model.safetensors"
    t = load_file(f_)
    k = "blocks.1.attn1.to_q.weight"
    t[k][3, 4] = float("nan")
    save_file(t, f_)
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "NaN or Inf", k)


def test_inf_in_lora(demo, tmp_path, casa_cmd):
    from safetensors.torch import load_file

    t = load_file(demo["lora"])
    k = next(k for k in t if k.endswith("lora_B.weight"))
    t[k][0, 0] = float("inf")
    save_file(t, demo["lora"])
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "NaN or Inf")


def test_model_given_as_lora(demo, tmp_path, casa_cmd):
    demo["lora"] = demo["base"]
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "looks like a model", "--lora")


def test_lora_given_as_model(demo, tmp_path, casa_cmd):
    demo["target"] = demo["lora"]
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "looks like a LoRA")


def test_output_is_an_input(demo, casa_cmd):
    out = demo["lora"]
    p = _run(casa_cmd, demo, out)
    assert p.returncode != 0 and "one of the inputs" in p.stderr and "Traceback" not in p.stderr
    assert out.exists()  # untouched (checked by _run's digests)


def test_output_folder_missing(demo, tmp_path, casa_cmd):
    out = tmp_path / "no" / "such" / "out.safetensors"
    _refused(_run(casa_cmd, demo, out), out, "does not exist")


def test_output_folder_not_writable(demo, casa_cmd):
    out = __import__("pathlib").Path("/proc/casa-out.safetensors")
    p = _run(casa_cmd, demo, out)
    assert p.returncode != 0 and "cannot be written" in p.stderr and "Traceback" not in p.stderr


def test_bad_option_values(demo, tmp_path, casa_cmd):
    out = tmp_path / "out.safetensors"
    _refused(_run(casa_cmd, demo, out, "--q-act", "1.5"), out, "q_act")
    _refused(_run(casa_cmd, demo, out, "--rank", "zero"), out, "rank")
    _refused(_run(casa_cmd, demo, out, "--layers", "("), out, "regular expression")


def test_cuda_asked_without_cuda(demo, tmp_path, casa_cmd):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out.safetensors"
    args = ["convert", "--demo", "--output", str(out), "--device", "cuda"]
    p = subprocess.run(casa_cmd + args, capture_output=True, text=True, timeout=120)
    _refused(p, out, "--device cpu")


def test_cancel_leaves_nothing(tmp_path):
    """A cancel between layers raises Cancelled and writes nothing."""
    import threading

    from casa_core.conversion import Conversion
    from casa_core.errors import Cancelled
    from casa_core.settings import RunOptions, TransferSettings

    d = demo_inputs()
    conv = Conversion.open(d["base"], d["target"], d["lora"])
    cancel = threading.Event()
    out = tmp_path / "out.safetensors"

    def stop_after_three(i, total, res):
        if i == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        conv.convert(out, TransferSettings(), RunOptions(device="cpu", view_size=0), cancel=cancel,
                     on_result=stop_after_three)
    assert not out.exists() and not list(tmp_path.iterdir())
