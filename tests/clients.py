"""Real-client oracles for tests: what diffusers actually applies for a LoRA file.

Nothing here reimplements LoRA math. A small, seeded ``WanTransformer3DModel``
is built, the file is loaded exactly as a diffusers user would load it
(``WanPipeline.load_lora_weights``: ``lora_state_dict`` converts the layout,
``load_lora_adapter`` injects PEFT layers), the adapter is fused with
``fuse_lora``, and the weight change is read off as *after minus before*.

Needs ``diffusers`` and ``peft`` (diffusers' LoRA loading is PEFT-backed).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from casa_core.families import wan


def golden_wan_config() -> dict:
    """``WanTransformer3DModel`` kwargs matching the shapes of tests/golden/*.

    hidden 64 (2 heads x 32), ffn 160, 2 blocks, text_dim 32, freq_dim 32,
    4 in/out channels, patch (1, 2, 2) so ``head.head`` is 16 x 64.
    """
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 32,
        "in_channels": 4,
        "out_channels": 4,
        "text_dim": 32,
        "freq_dim": 32,
        "ffn_dim": 160,
        "num_layers": 2,
    }


def diffusers_to_original(name: str) -> str:
    """Original Wan module name for a diffusers Linear module name (casa_core.families.wan's table)."""
    canonical = wan.to_canonical(name, diffusers=True)
    if canonical == name:
        raise KeyError(f"no original Wan name for diffusers module {name!r}")
    return canonical


def _load_config(config: dict | str | os.PathLike) -> dict:
    """Accept kwargs, or a diffusers ``config.json`` (keys starting with ``_`` dropped)."""
    if isinstance(config, dict):
        return {k: v for k, v in config.items() if not k.startswith("_")}
    import json

    raw = json.loads(Path(config).read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def _fused_changes(
    lora_path: str | os.PathLike,
    config: dict | str | os.PathLike,
    *,
    seed: int,
    dtype: torch.dtype,
    adapter_name: str,
    strict: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from diffusers import WanPipeline, WanTransformer3DModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**_load_config(config))
    # Built in float32; casting it to float32 again only draws a warning.
    if dtype != torch.float32:
        transformer = transformer.to(dtype=dtype)
    transformer.eval()

    linears = {
        n: m for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)
    }
    before_w = {n: m.weight.detach().clone() for n, m in linears.items()}
    before_b = {
        n: m.bias.detach().clone() for n, m in linears.items() if m.bias is not None
    }

    # The user's path: a pipeline holding the transformer, load_lora_weights, fuse_lora.
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        scheduler=None,
        transformer=transformer,
    )
    if strict:
        converted = WanPipeline.lora_state_dict(str(lora_path))
        wanted = {
            k.removeprefix("transformer.").rsplit(".lora_", 1)[0]
            for k in converted
            if k.startswith("transformer.") and ".lora_" in k
        }
    pipe.load_lora_weights(str(lora_path), adapter_name=adapter_name)
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)

    tuned = {
        n: m for n, m in transformer.named_modules() if isinstance(m, BaseTunerLayer)
    }
    if strict:
        # diffusers only logs a warning for LoRA keys it could not place; fail instead.
        lost = sorted(wanted - set(tuned))
        if lost:
            raise AssertionError(f"diffusers did not adapt: {lost}")

    weights: dict[str, torch.Tensor] = {}
    biases: dict[str, torch.Tensor] = {}
    for name, module in tuned.items():
        base = module.get_base_layer()
        canonical = diffusers_to_original(name)
        weights[canonical] = (base.weight.detach() - before_w[name]).clone()
        if base.bias is not None and name in before_b:
            delta_b = base.bias.detach() - before_b[name]
            if torch.any(delta_b != 0):
                biases[canonical] = delta_b.clone()
    return weights, biases


def diffusers_applied_updates(
    lora_path: str | os.PathLike,
    config: dict | str | os.PathLike,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    adapter_name: str = "casa_check",
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """Weight change diffusers applies for ``lora_path``: {original Wan name: (out x in)}.

    ``config`` is ``WanTransformer3DModel`` kwargs or a path to a diffusers
    ``transformer/config.json``. Every Linear that diffusers adapted appears,
    keyed by its original Wan name (``blocks.0.self_attn.q``, ``head.head``).
    With ``strict`` a LoRA key that diffusers converted but could not place
    raises ``AssertionError`` (diffusers itself only warns). Loader refusals
    (``ValueError``, ``KeyError``, ``IndexError`` from diffusers' converters)
    propagate unchanged.
    """
    weights, _ = _fused_changes(
        lora_path,
        config,
        seed=seed,
        dtype=dtype,
        adapter_name=adapter_name,
        strict=strict,
    )
    return weights


def diffusers_applied_bias_updates(
    lora_path: str | os.PathLike,
    config: dict | str | os.PathLike,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    adapter_name: str = "casa_check",
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """Bias change diffusers applies (from ``.diff_b`` keys): {original Wan name: (out,)}.

    Only layers whose bias actually changed appear.
    """
    _, biases = _fused_changes(
        lora_path,
        config,
        seed=seed,
        dtype=dtype,
        adapter_name=adapter_name,
        strict=strict,
    )
    return biases
