"""Small Wan-shaped models and LoRAs in every layout the app reads, for tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from casa_core.families import wan

D, F, TEXT, FREQ = 32, 80, 24, 16


def model_tensors(seed: int, blocks: int = 2, dim: int = D, ffn: int = F) -> dict[str, torch.Tensor]:
    """Canonical-named tensors of a tiny Wan2.1 transformer (weights with a decaying spectrum)."""
    g = torch.Generator().manual_seed(seed)

    def lin(o, i):
        q1, _ = torch.linalg.qr(torch.randn(o, o, generator=g, dtype=torch.float64))
        q2, _ = torch.linalg.qr(torch.randn(i, i, generator=g, dtype=torch.float64))
        p = min(o, i)
        s = torch.arange(1, p + 1, dtype=torch.float64) ** -0.7
        return ((q1[:, :p] * s) @ q2[:, :p].T).float()

    t = {}
    for b in range(blocks):
        for a in ("self_attn", "cross_attn"):
            for x in "qkvo":
                t[f"blocks.{b}.{a}.{x}.weight"] = lin(dim, dim)
                t[f"blocks.{b}.{a}.{x}.bias"] = torch.randn(dim, generator=g) * 0.01
            t[f"blocks.{b}.{a}.norm_q.weight"] = torch.ones(dim)
            t[f"blocks.{b}.{a}.norm_k.weight"] = torch.ones(dim)
        t[f"blocks.{b}.ffn.0.weight"] = lin(ffn, dim)
        t[f"blocks.{b}.ffn.0.bias"] = torch.zeros(ffn)
        t[f"blocks.{b}.ffn.2.weight"] = lin(dim, ffn)
        t[f"blocks.{b}.ffn.2.bias"] = torch.zeros(dim)
        t[f"blocks.{b}.norm3.weight"] = torch.ones(dim)
        t[f"blocks.{b}.norm3.bias"] = torch.zeros(dim)
        t[f"blocks.{b}.modulation"] = torch.randn(1, 6, dim, generator=g) * 0.01
    t["text_embedding.0.weight"] = lin(dim, TEXT)
    t["text_embedding.0.bias"] = torch.zeros(dim)
    t["text_embedding.2.weight"] = lin(dim, dim)
    t["time_embedding.0.weight"] = lin(dim, FREQ)
    t["time_projection.1.weight"] = lin(6 * dim, dim)
    t["head.head.weight"] = lin(16, dim)
    t["head.modulation"] = torch.randn(1, 2, dim, generator=g) * 0.01
    t["patch_embedding.weight"] = torch.randn(dim, 4, 1, 2, 2, generator=g) * 0.02
    return t


def drifted(t: dict[str, torch.Tensor], seed: int, size: float = 0.05) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + size * v.std() * torch.randn(v.shape, generator=g) if v.dim() == 2 else v.clone()
            for k, v in t.items()}


def write_model(t: dict[str, torch.Tensor], where: Path, *, layout: str = "original", prefix: str = "",
                dtype=torch.float32, shards: int = 1, folder: str = "none") -> Path:
    """Write a model; ``folder`` is none (a file or index), transformer, or diffusers (with model_index.json)."""
    where = Path(where)
    diff = layout == "diffusers"
    out = {}
    for k, v in t.items():
        module, param = wan.split_param(k)
        m = wan.to_diffusers(module) if diff else module
        out[prefix + (f"{m}.{param}" if param else m)] = v.to(dtype).contiguous()
    if folder == "diffusers":
        where.mkdir(parents=True)
        (where / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
        d = where / "transformer"
    elif folder == "transformer":
        d = where
    else:
        d = where.parent
    d.mkdir(parents=True, exist_ok=True)
    stem = "diffusion_pytorch_model" if folder != "none" else where.stem
    if shards == 1:
        path = d / f"{stem}.safetensors"
        save_file(out, path, metadata={"format": "pt"})
        return where if folder != "none" else path
    keys = sorted(out)
    wm = {}
    for s in range(shards):
        part = {k: out[k] for k in keys[s::shards]}
        fname = f"{stem}-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, d / fname, metadata={"format": "pt"})
        wm.update({k: fname for k in part})
    index = d / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return where if folder != "none" else index


def lora_factors(t: dict[str, torch.Tensor], seed: int, rank: int = 4, modules=None):
    """{canonical module: (B, A)} for the linears of a model."""
    g = torch.Generator().manual_seed(seed)
    mods = modules or [k[:-7] for k, v in t.items() if k.endswith(".weight") and v.dim() == 2
                       and wan.is_transferable(k[:-7])]
    out = {}
    for m in mods:
        o, i = t[m + ".weight"].shape
        out[m] = (torch.randn(o, rank, generator=g) * 0.1, torch.randn(rank, i, generator=g) * 0.1)
    return out


def write_lora(factors, path: Path, *, fmt: str = "comfy", alpha: float | None = None, style: str = "lora_A",
               extra: dict | None = None, dtype=torch.float32) -> Path:
    """Write factors as a LoRA file of a given format; returns the path."""
    out = {}
    meta = {"format": "pt"}
    for m, (B, A) in factors.items():
        if fmt == "comfy":
            pre = f"diffusion_model.{m}"
        elif fmt == "kohya":
            pre = "lora_unet_" + m.replace(".", "_")
        elif fmt == "diffusers":
            pre = "transformer." + wan.to_diffusers(m)
        else:
            raise ValueError(fmt)
        down, up = (".lora_down.weight", ".lora_up.weight") if style == "lora_down" else (
            ".lora_A.weight", ".lora_B.weight")
        out[pre + down] = A.to(dtype).contiguous()
        out[pre + up] = B.to(dtype).contiguous()
        if alpha is not None and fmt != "diffusers":
            out[pre + ".alpha"] = torch.tensor(float(alpha))
    if alpha is not None and fmt == "diffusers":
        r = next(iter(factors.values()))[1].shape[0]
        meta["lora_adapter_metadata"] = json.dumps({"r": r, "lora_alpha": alpha})
    out.update(extra or {})
    save_file(out, path, metadata=meta)
    return Path(path)


def read_updates(path) -> dict[str, torch.Tensor]:
    """{key prefix: update} of a LoRA file, with the loaders' scale convention (alpha / r, else 1)."""
    from safetensors.torch import load_file

    t = load_file(path)
    out = {}
    for k in t:
        for a, b in ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight")):
            if k.endswith(a):
                p = k[: -len(a)]
                A, B = t[k].double(), t[p + b].double()
                s = float(t[p + ".alpha"]) / A.shape[0] if p + ".alpha" in t else 1.0
                out[p] = s * B @ A
    return out


def demo_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled demo (base file, diffusers target folder, LoRA file) in tmp_path/in."""
    import shutil

    from casa_core.resources import demo_inputs

    d = demo_inputs()
    dst = tmp_path / "in"
    dst.mkdir()
    shutil.copy(d["base"], dst / "base.safetensors")
    shutil.copytree(d["target"], dst / "target")
    shutil.copy(d["lora"], dst / "lora.safetensors")
    return dst
