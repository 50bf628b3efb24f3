"""The one-place tables: dtypes, the Wan family, the LoRA formats (no files needed)."""

from __future__ import annotations

import pytest
import torch

from casa_core import dtypes, families, formats, settings
from casa_core.families import wan
from casa_core.formats import kohya


def test_dtype_table_round_trips():
    for d in dtypes.TABLE:
        assert dtypes.tag(getattr(torch, d.name)) == d.tag
    assert dtypes.tag_or_name(torch.complex64) == "complex64"
    assert [dtypes.is_fp8(t) for t in ("F8_E4M3", "F8_E5M2", "BF16", "I8")] == [True, True, False, False]
    with pytest.raises(KeyError):
        dtypes.tag(torch.complex64)


def test_written_dtypes():
    assert settings.DTYPES == ("same", "float32", "float16", "bfloat16")
    assert [dtypes.written(t) for t in ("F32", "F16", "BF16", "F64")] == ["float32", "float16", "bfloat16", "float32"]
    assert [dtypes.written(n) for n in dtypes.OUTPUTS] == list(dtypes.OUTPUTS)
    for never in ("F8_E4M3", "I64", "float64"):
        with pytest.raises(KeyError):
            dtypes.written(never)


def test_one_size_table():
    assert [wan.architecture(d) for d in (1536, 5120, 3072, 999, None)] == [
        "wan2.1-t2v-1.3b/lora", "wan2.1-t2v-14b/lora", "wan2.2-ti2v-5b/lora", "wan/lora", "wan/lora"]
    assert [families.size_name(d) for d in (1536, 5120, 3072, 999)] == ["Wan2.1 1.3B", "Wan2.1 14B", "Wan2.2 TI2V-5B",
                                                                         None]


def test_family_of_falls_back_to_wan():
    assert families.family_of(["blocks.0.attn1.to_q.weight"]) is wan
    assert families.family_of(["down_blocks.0.resnets.0.conv1.weight"]) is wan


def test_wan_names_round_trip():
    for canon, _ in wan.BLOCK_MODULES:
        assert wan.to_canonical(wan.to_diffusers(f"blocks.3.{canon}"), True) == f"blocks.3.{canon}"
    assert wan.is_transferable("blocks.7.cross_attn.k_img") and not wan.is_transferable("blocks.7.norm3")
    assert wan.collapse_block("blocks.12.ffn.0.weight") == "blocks.*.ffn.0.weight"


def test_formats_tables():
    assert settings.FORMATS == ("same", "comfy", "kohya", "diffusers")
    assert formats.PAIR_ENDINGS == ((".lora_A.default.weight", ".lora_B.default.weight"),
                                    (".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"))
    assert formats.ALPHA_ENDINGS == (".alpha", ".lora_alpha")
    assert kohya.stem("lora_unet__blocks_0_ffn_0") == kohya.stem("lora_unet_blocks_0_ffn_0") == "blocks_0_ffn_0"
    assert formats.detect(["lora_unet_blocks_0_ffn_0"], wan) == "kohya"
    assert formats.detect(["transformer.blocks.0.attn1.to_q"], wan) == "diffusers"
    assert formats.detect(["diffusion_model.blocks.0.self_attn.q"], wan) == "comfy"


@pytest.mark.parametrize("fmt,want", [
    ("comfy", "diffusion_model.blocks.0.self_attn.q"),
    ("kohya", "lora_unet_blocks_0_self_attn_q"),
    ("diffusers", "transformer.blocks.0.attn1.to_q"),
])
def test_writers_key_prefix(fmt, want):
    assert formats.WRITERS[fmt].key_prefix("blocks.0.self_attn.q", wan) == want


def test_diffusers_passthrough():
    w = formats.WRITERS["diffusers"]
    assert w.passthrough("transformer.blocks.0.attn1.to_q.diff_b") == "transformer.blocks.0.attn1.to_q.lora_B.bias"
    assert w.passthrough("transformer.blocks.0.norm3.diff") is None
