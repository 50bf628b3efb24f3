"""Every golden case (tests/golden, and ../shared/golden when present) through the real `casa convert`."""

import pytest
import torch

from tests.conftest import GOLDEN, GOLDEN_DIR, OWN_GOLDEN
from tests.core import golden


def test_golden_cases_exist():
    assert len(OWN_GOLDEN) >= 2, f"expected the repository's golden cases under {GOLDEN_DIR}"


@pytest.mark.parametrize("precision", ["float64", None], ids=["float64", "default"])
@pytest.mark.parametrize("case", GOLDEN, ids=[c.name for c in GOLDEN])
def test_golden(case, precision, casa_cmd):
    """float64 matches to 1e-6 per layer, the default precision to 2e-2; pass-through keys byte-identical."""
    verdict = golden.check(case, precision, casa_cmd)
    assert verdict.ok, verdict.summary()


# The checker itself: an output that is off in any way the contract cares about must fail it.
COMFY = GOLDEN_DIR / "comfy-lora_original-base_diffusers-target"
KOHYA = GOLDEN_DIR / "kohya-lora_diffusers-base_krea-bf16-target"


@pytest.fixture(scope="module")
def comfy_output(tmp_path_factory, casa_cmd):
    import json
    import subprocess

    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("golden") / "out.safetensors"
    spec = json.loads((COMFY / "case.json").read_text())
    subprocess.run(golden.convert_command(COMFY, spec, out, "float64", casa_cmd), check=True, capture_output=True)
    return load_file(str(out))


def test_checker_accepts_the_real_output(comfy_output):
    verdict = golden.compare(COMFY, dict(comfy_output), "float64")
    assert verdict.ok, verdict.summary()
    assert len(verdict.errors) == 26 and max(verdict.errors.values()) < 1e-6


def test_checker_rejects_a_perturbed_layer(comfy_output):
    written = dict(comfy_output)
    key = "diffusion_model.blocks.0.ffn.0.lora_B.weight"
    written[key] = written[key] * (1 + 1e-4)
    verdict = golden.compare(COMFY, written, "float64")
    assert not verdict.ok and "blocks.0.ffn.0" in verdict.summary()
    assert golden.compare(COMFY, written, None).ok  # within the float32 tolerance


def test_checker_applies_alpha(comfy_output):
    """An output that carries alpha = rank applies the same update; a wrong alpha does not."""
    written = dict(comfy_output)
    prefix = "diffusion_model.blocks.1.self_attn.k"
    rank = written[prefix + ".lora_A.weight"].shape[0]
    written[prefix + ".alpha"] = torch.tensor(float(rank))
    assert golden.compare(COMFY, written, "float64").ok
    written[prefix + ".alpha"] = torch.tensor(float(rank) / 2)
    verdict = golden.compare(COMFY, written, "float64")
    assert not verdict.ok and "blocks.1.self_attn.k" in verdict.summary()


def test_checker_rejects_missing_or_extra_layers(comfy_output):
    written = {k: v for k, v in comfy_output.items() if not k.startswith("diffusion_model.head.head.")}
    verdict = golden.compare(COMFY, written, "float64")
    assert not verdict.ok and "no LoRA pair under diffusion_model.head.head" in verdict.summary()
    written = dict(comfy_output)
    written["diffusion_model.blocks.9.self_attn.q.lora_A.weight"] = torch.zeros(2, 64)
    written["diffusion_model.blocks.9.self_attn.q.lora_B.weight"] = torch.zeros(64, 2)
    assert not golden.compare(COMFY, written, "float64").ok


def test_checker_wants_passthrough_bytes(comfy_output):
    key = "diffusion_model.blocks.0.self_attn.q.diff_b"
    written = dict(comfy_output)
    written[key] = written[key].to(torch.float16)  # same values where representable, other bytes
    assert not golden.compare(COMFY, written, "float64").ok
    del written[key]
    verdict = golden.compare(COMFY, written, "float64")
    assert not verdict.ok and f"{key} missing" in verdict.summary()


def test_checker_reports_a_failed_conversion(tmp_path, casa_cmd):
    import shutil

    case = tmp_path / KOHYA.name
    shutil.copytree(KOHYA, case)
    (case / "target.safetensors").write_bytes(b"not a safetensors file")
    verdict = golden.check(case, "float64", casa_cmd)
    assert not verdict.ok and "`casa convert` failed" in verdict.summary()
