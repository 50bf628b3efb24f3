"""Write the bundled demo inputs under resources/demo/, byte-identical on every run.

    python scripts/make_demo.py [OUT_DIR]

- ``base.safetensors``: a tiny Wan2.1-layout base model (original names, bf16);
- ``target/``: its "distilled" variant as a diffusers folder (``model_index.json``,
  ``transformer/config.json`` with real ``WanTransformer3DModel`` kwargs,
  ``transformer/diffusion_pytorch_model.safetensors``, fp16);
- ``lora.safetensors``: a ComfyUI-format LoRA (``diffusion_model.`` prefix,
  ``lora_A``/``lora_B``, ``.alpha``; rank 8, alpha 4) on every block linear and
  ``text_embedding.0/2``, float32.

Weights are built to look trained: each linear has a decaying singular spectrum
with groups of near-equal values; the target drifts ~4% (Frobenius) mostly
inside the top singular directions; the LoRA is 2-5% of each weight and leans
on the top directions, so CASA finds several clusters, some dominant.
All randomness comes from one NumPy generator and all maths is float64, so
the bytes do not depend on torch's RNG or on diffusers' init order; the seeded
``WanTransformer3DModel`` is used only as the template of keys and shapes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from casa_core.families import wan

SEED = 2605_01929
# A real WanTransformer3DModel config (all __init__ kwargs spelled out).
CONFIG = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 2,
    "attention_head_dim": 24,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 64,
    "freq_dim": 32,
    "ffn_dim": 192,
    "num_layers": 3,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-06,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}
RANK, ALPHA = 8, 4.0
DRIFT = 0.04  # ||W_t - W_s||_F / ||W_s||_F on the linears
METADATA = {"format": "pt"}
BLOCK_LINEARS = [f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"] + [
    "ffn.0",
    "ffn.2",
]

def to_original(key: str) -> str:
    """Original Wan key for a diffusers WanTransformer3DModel state-dict key (casa_core.families.wan's table)."""
    return wan.canonical_key(key, diffusers=True)


def template() -> dict[str, tuple[int, ...]]:
    """Keys (diffusers names) and shapes of the real module, in state-dict order."""
    from diffusers import WanTransformer3DModel

    kwargs = dict(CONFIG, patch_size=tuple(CONFIG["patch_size"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WanTransformer3DModel(**kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def trained_spectrum(rng: np.random.Generator, p: int) -> np.ndarray:
    """Decaying singular values in groups of near-equal values, descending."""
    values, i = [], 0
    while i < p:
        size = min(int(rng.choice([1, 1, 1, 2, 2, 3, 4])), p - i)
        level = np.exp(-i / (0.22 * p)) + 0.04
        values.extend(level * (1.0 + 2e-3 * rng.standard_normal(size)))
        i += size
    return np.sort(np.asarray(values))[::-1]


def linear_pair(rng, m, n):
    """Base weight, target drift, and the singular bases of the base."""
    p = min(m, n)
    u, v = orthonormal(rng, m, p), orthonormal(rng, n, p)
    sigma = trained_spectrum(rng, p)
    sigma *= np.sqrt(m) / np.linalg.norm(sigma)  # entry RMS ~ 1/sqrt(n), like an init
    w = (u * sigma) @ v.T
    # Drift: mostly a coupling of the top directions (heavier at the very top), plus noise.
    t = max(4, p // 4)
    weights = np.exp(-np.arange(t) / (t / 2.5))
    top = (
        u[:, :t]
        @ (rng.standard_normal((t, t)) * np.outer(weights, weights))
        @ v[:, :t].T
    )
    noise = rng.standard_normal((m, n))
    top *= 0.85 / np.linalg.norm(top)
    noise *= 0.15 / np.linalg.norm(noise)
    drift = top + noise
    drift *= rng.uniform(0.75, 1.25) * DRIFT * np.linalg.norm(w) / np.linalg.norm(drift)
    return w, drift, u, v


def lora_factors(rng, w, u, v):
    """(A, B) with ||ALPHA/RANK * B @ A|| at 2-5% of ||W||, leaning on the top directions."""
    q = max(RANK, min(u.shape[1], 16))
    a = 0.7 * rng.standard_normal((RANK, q)) @ v[:, :q].T / np.sqrt(q)
    a += 0.3 * rng.standard_normal(a.shape) / np.sqrt(a.shape[1])
    b = 0.7 * u[:, :q] @ rng.standard_normal((q, RANK)) / np.sqrt(q)
    b += 0.3 * rng.standard_normal(b.shape) / np.sqrt(b.shape[0])
    update = ALPHA / RANK * b @ a
    gain = np.sqrt(rng.uniform(0.02, 0.05) * np.linalg.norm(w) / np.linalg.norm(update))
    return a * gain, b * gain


def other_tensor(rng, key, shape):
    """Non-linear tensors (norms, modulation, biases, conv): plausible values."""
    if key.endswith(("norm_q.weight", "norm_k.weight", "norm2.weight")):
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if "scale_shift_table" in key:
        return rng.standard_normal(shape) / np.sqrt(shape[-1])
    if key.endswith(".bias"):
        return 0.02 * rng.standard_normal(shape)
    fan_in = int(np.prod(shape[1:]))
    return rng.standard_normal(shape) / np.sqrt(fan_in)


def build() -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(SEED)
    base, target, lora = {}, {}, {}
    adapted = {
        f"blocks.{i}.{n}" for i in range(CONFIG["num_layers"]) for n in BLOCK_LINEARS
    }
    adapted |= {"text_embedding.0", "text_embedding.2"}
    for key, shape in template().items():
        name = to_original(key)
        if len(shape) == 2 and key.endswith(".weight"):
            w, drift, u, v = linear_pair(rng, *shape)
            module = name[: -len(".weight")]
            if module in adapted:
                a, b = lora_factors(rng, w, u, v)
                prefix = f"diffusion_model.{module}"
                lora[f"{prefix}.lora_A.weight"] = torch.from_numpy(a).float()
                lora[f"{prefix}.lora_B.weight"] = torch.from_numpy(b).float()
                lora[f"{prefix}.alpha"] = torch.tensor(ALPHA, dtype=torch.float32)
        else:
            w = other_tensor(rng, key, shape)
            drift = 0.03 * np.abs(w).mean() * rng.standard_normal(shape)
        w_base = torch.from_numpy(w).to(torch.bfloat16)
        base[name] = w_base
        # Drift is added to the stored base, as a fine-tune would start from it.
        target[key] = (w_base.double() + torch.from_numpy(drift)).to(torch.float16)
    return base, target, lora


def write(out: Path) -> None:
    base, target, lora = build()
    transformer = out / "target" / "transformer"
    transformer.mkdir(parents=True, exist_ok=True)
    save_file(base, out / "base.safetensors", metadata=METADATA)
    save_file(
        target, transformer / "diffusion_pytorch_model.safetensors", metadata=METADATA
    )
    save_file(lora, out / "lora.safetensors", metadata=METADATA)
    config = {
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": "0.42.1",
        **CONFIG,
    }
    (transformer / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "WanTransformer3DModel"],
    }
    (out / "target" / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "resources" / "demo")
