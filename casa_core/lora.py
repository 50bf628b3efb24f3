"""LoRA files: find the low-rank pairs, their scale, and the keys that pass through."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import names
from .errors import CasaError
from .models import looks_like_lora
from .tensorstore import TensorStore

# (down suffix, up suffix, style name); down = A (r x in), up = B (out x r)
PAIR_STYLES: tuple[tuple[str, str, str], ...] = (
    (".lora_A.default.weight", ".lora_B.default.weight", "lora_A.default"),
    (".lora_A.weight", ".lora_B.weight", "lora_A"),
    (".lora_down.weight", ".lora_up.weight", "lora_down"),
)
ALPHA_SUFFIXES = (".alpha", ".lora_alpha")
KOHYA_PREFIXES = ("lora_unet__", "lora_unet_")


@dataclass(frozen=True)
class LoraPair:
    """One low-rank pair as the file holds it (no model knowledge yet)."""
    prefix: str          # key prefix in the file, e.g. diffusion_model.blocks.0.self_attn.q
    down_key: str
    up_key: str
    alpha_key: str | None
    style: str
    rank: int
    out_features: int
    in_features: int
    scale: float

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.down_key, self.up_key, self.alpha_key) if k)


class LoraSource:
    """A LoRA file: its pairs, format, scale per pair and everything else."""

    def __init__(self, path, identity: str | None = None):
        self.path = Path(path)
        self.identity = identity or str(path)
        if not self.path.exists():
            raise CasaError(f"LoRA path {self.path} does not exist", "check the path")
        if self.path.is_dir():
            files = sorted(self.path.glob("*.safetensors"))
            if len(files) != 1:
                raise CasaError(f"LoRA folder {self.path} holds {len(files)} .safetensors files",
                                "pick the LoRA file itself")
            self.path = files[0]
        if self.path.suffix != ".safetensors":
            raise CasaError(f"LoRA file {self.path.name} is not a .safetensors file",
                            "pick the LoRA's .safetensors file")
        self.store = TensorStore([self.path])
        self.metadata = self.store.metadata
        raw = list(self.store.keys())
        if not raw:
            raise CasaError(f"LoRA {self.path} holds no tensors", "pick the LoRA file")
        if not looks_like_lora(raw):
            raise CasaError(f"{self.path} looks like a model checkpoint, not a LoRA",
                            "pass it as --base or --target and give the LoRA file to --lora")
        self.pairs: list[LoraPair] = []
        used: set[str] = set()
        default_scale = self._metadata_scale()
        for key in raw:
            for down, up, style in PAIR_STYLES:
                if key.endswith(down):
                    prefix = key[: -len(down)]
                    up_key = prefix + up
                    if up_key not in self.store:
                        continue
                    alpha_key = next((prefix + s for s in ALPHA_SUFFIXES if prefix + s in self.store), None)
                    self.pairs.append(self._pair(prefix, key, up_key, alpha_key, style, default_scale))
                    used.update(k for k in (key, up_key, alpha_key) if k)
                    break
        if not self.pairs:
            raise CasaError(f"LoRA {self.path} holds no lora_A/lora_B or lora_down/lora_up pairs",
                            "LoHa, LoKr and full-diff files are not supported here; use a standard LoRA")
        self.other_keys = [k for k in raw if k not in used]
        self.format = self._detect_format()

    def _metadata_scale(self) -> float | None:
        """Scale from diffusers' ``lora_adapter_metadata`` header entry, if any."""
        blob = self.metadata.get("lora_adapter_metadata")
        if not blob:
            return None
        try:
            cfg = json.loads(blob)
            alpha, r = float(cfg["lora_alpha"]), float(cfg["r"])
        except (ValueError, KeyError, TypeError):
            return None
        return alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r

    def _pair(self, prefix, down_key, up_key, alpha_key, style, default_scale) -> LoraPair:
        ds, us = self.store.shape(down_key), self.store.shape(up_key)
        if len(ds) < 2 or len(us) < 2 or ds[0] != us[1]:
            raise CasaError(f"LoRA pair {prefix} has mismatched factor shapes {list(ds)} and {list(us)}",
                            "the LoRA file is damaged")
        rank = ds[0]
        out_f = us[0]
        in_f = 1
        for d in ds[1:]:
            in_f *= d
        if alpha_key is not None:
            scale = float(self.store.read(alpha_key).float().item()) / rank
        elif default_scale is not None:
            scale = default_scale
        else:
            scale = 1.0
        return LoraPair(prefix, down_key, up_key, alpha_key, style, rank, out_f, in_f, scale)

    def _detect_format(self) -> str:
        first = self.pairs[0].prefix
        if first.startswith(KOHYA_PREFIXES):
            return "kohya"
        if any(names.is_diffusers_name(names.strip_prefix(p.prefix)) for p in self.pairs):
            return "diffusers"
        return "comfy"

    def module_for(self, pair: LoraPair, kohya_index: dict[str, str]) -> str | None:
        """Canonical module name a pair adapts; kohya names resolve against the model."""
        if pair.prefix.startswith(KOHYA_PREFIXES):
            stem = pair.prefix
            for p in KOHYA_PREFIXES:
                if stem.startswith(p):
                    stem = stem[len(p):]
                    break
            return kohya_index.get(stem)
        stripped = names.strip_prefix(pair.prefix)
        return names.to_canonical(stripped, names.is_diffusers_name(stripped))

    def read(self, key: str):
        """One tensor as stored; NaN or Inf is refused."""
        import torch

        t = self.store.read(key)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CasaError(f"LoRA tensor {key} in {self.path} holds NaN or Inf",
                            "the LoRA is damaged; re-download or re-train it")
        return t

    def factor_dtype(self) -> str:
        """The safetensors dtype tag of the factors (for ``--dtype same``)."""
        return self.store.infos[self.pairs[0].up_key].dtype
