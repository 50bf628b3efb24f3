"""LoRA files: find the low-rank pairs, their scale, and the keys that pass through.

Reads plain LoRA pairs in every naming in use (ComfyUI, kohya, diffusers, PEFT
folders, FastVideo, DiffSynth, Wan-Fun), and LoHa / LoKr layers, whose exact
factors are derived on read (``sources.lycoris``) so the engine sees ordinary pairs.
DoRA is refused.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from . import families, names
from .errors import CasaError
from .models import looks_like_lora
from .sources import lycoris, pickled
from .tensorstore import TensorStore

# (down suffix, up suffix, style name); down = A (r x in), up = B (out x r)
PAIR_STYLES: tuple[tuple[str, str, str], ...] = (
    (".lora_A.default.weight", ".lora_B.default.weight", "lora_A.default"),
    (".lora_A.weight", ".lora_B.weight", "lora_A"),
    (".lora_down.weight", ".lora_up.weight", "lora_down"),
)
ALPHA_SUFFIXES = (".alpha", ".lora_alpha")
KOHYA_PREFIXES = ("lora_unet__", "lora_unet_")
# DoRA's magnitude vectors (LyCORIS / ComfyUI, PEFT)
DORA_MARKERS = (".dora_scale", ".lora_magnitude_vector")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class LoraPair:
    """One low-rank pair as the file holds it (no model knowledge yet).

    For a LoHa / LoKr layer (``kind``), ``down_key`` / ``up_key`` name derived
    tensors: exact factors of its update, spelled as the standard LoRA keys the
    converted layer is written under; ``source_keys`` are the file's own keys.
    """
    prefix: str          # key prefix in the file, e.g. diffusion_model.blocks.0.self_attn.q
    down_key: str
    up_key: str
    alpha_key: str | None
    style: str
    rank: int
    out_features: int
    in_features: int
    scale: float
    kind: str = "lora"   # lora, loha or lokr
    source_keys: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key of the file this pair consumes."""
        return tuple(k for k in (self.down_key, self.up_key, self.alpha_key, *self.source_keys) if k)


def lora_files(folder: Path) -> list[Path]:
    """The candidate LoRA weight files directly inside a folder (safetensors, else pickled)."""
    files = sorted(folder.glob("*.safetensors"))
    return files or sorted(f for f in folder.iterdir() if f.is_file() and pickled.is_pickled(f))


class LoraSource:
    """A LoRA file (or PEFT folder): its pairs, format, scale per pair and everything else."""

    def __init__(self, path, identity: str | None = None):
        self.path = Path(path)
        self.identity = identity or str(path)
        if not self.path.exists():
            raise CasaError(f"LoRA path {self.path} does not exist", "check the path")
        if self.path.is_dir():
            self.path = self._pick_in_folder(self.path)
        if self.path.suffix != ".safetensors" and not pickled.is_pickled(self.path):
            raise CasaError(f"LoRA file {self.path.name} is neither safetensors nor a torch checkpoint",
                            "pick the LoRA's .safetensors file")
        self.peft = self._peft_config()
        self.store = TensorStore([self.path])
        self.metadata = self.store.metadata
        raw = list(self.store.keys())
        if not raw:
            raise CasaError(f"LoRA {self.path} holds no tensors", "pick the LoRA file")
        if not looks_like_lora(raw):
            raise CasaError(f"{self.path} looks like a model checkpoint, not a LoRA",
                            "pass it as --base or --target and give the LoRA file to --lora")
        dora = next((k for k in raw if any(m in k for m in DORA_MARKERS)), None)
        if dora is not None or (self.peft or {}).get("use_dora"):
            raise CasaError(f"LoRA {self.path.name} is a DoRA ({dora or 'use_dora in ' + PEFT_CONFIG}); its "
                            "magnitude vectors cannot follow a transferred direction",
                            "export a plain LoRA, LoHa or LoKr from the trainer")
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
        self._factors_lock = threading.Lock()
        self._factors_cache: tuple[str, tuple] | None = None
        for ad in lycoris.find([k for k in raw if k not in used], self.store.shape):
            pair = self._materialised(ad)
            if pair is not None:
                self.pairs.append(pair)
                used.update(pair.keys)
        if not self.pairs:
            raise CasaError(f"LoRA {self.path} holds no LoRA, LoHa or LoKr layers",
                            "full-diff (.diff) files are not supported; pick a LoRA")
        self.other_keys = [k for k in raw if k not in used]
        self.family = families.family_of(names.strip_prefix(p.prefix) for p in self.pairs)
        self.format = self._detect_format()

    @staticmethod
    def _pick_in_folder(folder: Path) -> Path:
        """The weights of a PEFT folder, or the one LoRA file a folder holds."""
        if (folder / PEFT_CONFIG).is_file():
            weights = next((folder / w for w in PEFT_WEIGHTS if (folder / w).is_file()), None)
            if weights is not None:
                return weights
        files = lora_files(folder)
        if len(files) != 1:
            shown = ", ".join(f.name for f in files[:5]) + (", ..." if len(files) > 5 else "")
            raise CasaError(f"LoRA folder {folder} holds {len(files)} weight files" + (f" ({shown})" if files else ""),
                            "pick one with --lora-file NAME, or give the LoRA file itself")
        return files[0]

    def _peft_config(self) -> dict | None:
        """PEFT's ``adapter_config.json`` beside ``adapter_model.*``, if there is one."""
        cfg = self.path.parent / PEFT_CONFIG
        if self.path.name not in PEFT_WEIGHTS or not cfg.is_file():
            return None
        try:
            data = json.loads(cfg.read_text())
            if not isinstance(data, dict):
                raise ValueError
        except (OSError, ValueError):
            raise CasaError(f"{cfg} is not a valid PEFT adapter config", "re-download the adapter folder") from None
        return data

    def _peft_scale(self, prefix: str, rank: int, kind: str) -> float | None:
        """PEFT's scale for one layer: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), patterns applied."""
        cfg = self.peft
        if cfg is None:
            return None
        module = names.strip_prefix(prefix)

        def pattern_value(table, default):
            for pat, value in (table or {}).items():
                if re.fullmatch(rf"(.*\.)?(?:{pat})", module):
                    return value
            return default

        try:
            if kind == "lora":
                alpha = float(pattern_value(cfg.get("alpha_pattern"), cfg.get("lora_alpha", 8)))
                r = float(rank)
                return alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
            # PEFT's LoHa / LoKr: alpha / r with the configured r
            alpha = float(pattern_value(cfg.get("alpha_pattern"), cfg.get("alpha", 8)))
            return alpha / float(pattern_value(cfg.get("rank_pattern"), cfg.get("r", 8)))
        except (TypeError, ValueError, ZeroDivisionError, re.error):
            raise CasaError(f"{PEFT_CONFIG} beside {self.path.name} has unusable r / alpha values",
                            "fix the adapter config (r, lora_alpha, alpha_pattern)") from None

    def _materialised(self, ad: lycoris.Adapter) -> LoraPair | None:
        """A LoHa / LoKr layer as a pair whose factors are derived on read."""
        kohya = ad.prefix.startswith(KOHYA_PREFIXES)
        down, up, style = PAIR_STYLES[2] if kohya else PAIR_STYLES[1]
        down_key, up_key = ad.prefix + down, ad.prefix + up
        if down_key in self.store or up_key in self.store:
            return None  # a LoRA pair already holds those names
        alpha_key = ad.prefix + ".alpha" if ad.prefix + ".alpha" in self.store else None
        scale = self._peft_scale(ad.prefix, ad.rank, ad.kind)
        if scale is None:
            scale = 1.0
            if alpha_key is not None and ad.dim:
                scale = float(self.store.read(alpha_key).float().item()) / ad.dim
        dtype = self.store.info(ad.keys[0]).dtype
        self.store.derive(up_key, dtype, (ad.out_features, ad.rank), lambda: self._lycoris_factors(ad)[0])
        self.store.derive(down_key, dtype, (ad.rank, ad.in_features), lambda: self._lycoris_factors(ad)[1])
        return LoraPair(ad.prefix, down_key, up_key, alpha_key, style, ad.rank, ad.out_features, ad.in_features,
                        scale, ad.kind, ad.keys)

    def _lycoris_factors(self, ad: lycoris.Adapter):
        # the engine reads up, then down: keep the last layer's pair so it is built once
        with self._factors_lock:
            if self._factors_cache is None or self._factors_cache[0] != ad.prefix:
                self._factors_cache = (ad.prefix, lycoris.factors(ad, self.store.read))
            return self._factors_cache[1]

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
        peft = self._peft_scale(prefix, rank, "lora")
        if alpha_key is not None:
            scale = float(self.store.read(alpha_key).float().item()) / rank
        elif peft is not None:
            scale = peft
        elif default_scale is not None:
            scale = default_scale
        else:
            scale = 1.0
        return LoraPair(prefix, down_key, up_key, alpha_key, style, rank, out_f, in_f, scale)

    def _detect_format(self) -> str:
        first = self.pairs[0].prefix
        if first.startswith(KOHYA_PREFIXES):
            return "kohya"
        if any(self.family.is_diffusers_name(names.strip_prefix(p.prefix)) for p in self.pairs):
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
        return self.family.to_canonical(stripped, self.family.is_diffusers_name(stripped))

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
        return self.store.info(self.pairs[0].up_key).dtype
