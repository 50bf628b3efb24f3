"""LoRA files: find the low-rank pairs, their scale, and the keys that pass through.

Reads plain LoRA pairs in every layout the ``formats`` package knows (ComfyUI, kohya,
diffusers, PEFT folders, FastVideo, DiffSynth, Wan-Fun), and LoHa / LoKr layers, whose
exact factors are derived on read (``formats.lycoris``) so the engine sees ordinary pairs.
DoRA is refused.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import dtypes, families, formats, names
from .errors import CasaError
from .formats import diffusers, kohya, lycoris, peft
from .sources import pickled
from .tensorstore import TensorStore


@dataclass(frozen=True)
class LoraPair:
    """One low-rank pair as the file holds it (no model knowledge yet).

    For a LoHa / LoKr layer (``kind``), ``down_key`` / ``up_key`` name derived
    tensors: exact factors of its update, spelled as the standard LoRA keys the
    converted layer is written under; ``source_keys`` are the file's own keys.
    """
    prefix: str          # key prefix in the file, e.g. diffusion_model.blocks.0.self_attn.q
    down_key: str        # A (r x in)
    up_key: str          # B (out x r)
    alpha_key: str | None
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


def _twice(prefix: str, first: str, second: str) -> CasaError:
    return CasaError(f"LoRA layer {prefix} is given twice, by {first} and by {second}",
                     "keep one of them: re-export the LoRA, or remove the other pair from the file")


def _given_twice(given: dict[str, str], prefix: str, key: str) -> None:
    """Record that ``key`` gives the layer ``prefix``; refuse a layer given a second time."""
    if prefix in given:
        raise _twice(prefix, given[prefix], key)
    given[prefix] = key


def lora_files(folder: Path) -> list[Path]:
    """The candidate LoRA weight files directly inside a folder (safetensors, else pickled)."""
    files = sorted(folder.glob("*.safetensors"))
    return files or sorted(f for f in folder.iterdir() if f.is_file() and pickled.is_pickled(f))


class LoraSource:
    """A LoRA file (or PEFT folder): its pairs, format, scale per pair and everything else."""

    def __init__(self, path, identity: str | None = None, *, from_hub: bool = False):
        self.path = Path(path)
        self.identity = identity or str(path)
        self.from_hub = from_hub          # opened from a Hugging Face repo: provenance names it repo@commit
        if not self.path.exists():
            raise CasaError(f"LoRA path {self.path} does not exist", "check the path")
        if self.path.is_dir():
            self.path = self._pick_in_folder(self.path)
        if self.path.suffix != ".safetensors" and not pickled.is_pickled(self.path):
            raise CasaError(f"LoRA file {self.path.name} is neither safetensors nor a torch checkpoint",
                            "pick the LoRA's .safetensors file")
        self.peft = peft.read_config(self.path)
        self._patterns: peft.Patterns | None = None
        self.store = TensorStore([self.path])
        self.metadata = self.store.metadata
        raw = list(self.store.keys())
        if not raw:
            raise CasaError(f"LoRA {self.path} holds no tensors", "pick the LoRA file")
        if not formats.looks_like_lora(raw):
            raise CasaError(f"{self.path} looks like a model checkpoint, not a LoRA",
                            "give it as the base or the target model, and the LoRA file as the LoRA",
                            setting="lora")
        dora = next((k for k in raw if any(m in k for m in formats.DORA_MARKERS)), None)
        if dora is not None or (self.peft or {}).get("use_dora"):
            raise CasaError(f"LoRA {self.path.name} is a DoRA ({dora or 'use_dora in ' + peft.CONFIG}); its "
                            "magnitude vectors cannot follow a transferred direction",
                            "export a plain LoRA, LoHa or LoKr from the trainer")
        self.pairs: list[LoraPair] = []
        used: set[str] = set()
        default_scale = diffusers.metadata_scale(self.metadata)
        given: dict[str, str] = {}      # prefix -> the key that gave its layer
        for key in raw:
            for down, up in formats.PAIR_ENDINGS:
                if key.endswith(down):
                    prefix = key[: -len(down)]
                    up_key = prefix + up
                    if up_key not in self.store:
                        continue
                    _given_twice(given, prefix, key)
                    alpha_key = next((prefix + s for s in formats.ALPHA_ENDINGS if prefix + s in self.store), None)
                    self.pairs.append(self._pair(prefix, key, up_key, alpha_key, default_scale))
                    used.update(k for k in (key, up_key, alpha_key) if k)
                    break
        self._factors_lock = threading.Lock()
        self._factors_cache: tuple[str, tuple] | None = None
        for ad in lycoris.find([k for k in raw if k not in used], self.store.shape):
            _given_twice(given, ad.prefix, ad.keys[0])
            pair = self._materialised(ad)
            self.pairs.append(pair)
            used.update(pair.keys)
        if not self.pairs:
            raise CasaError(f"LoRA {self.path} holds no LoRA, LoHa or LoKr layers",
                            "full-diff (.diff) files are not supported; pick a LoRA")
        self.other_keys = [k for k in raw if k not in used]
        self.family = families.family_of(names.strip_prefix(p.prefix) for p in self.pairs)
        if hasattr(self.family, "split_fused_pair"):
            self.pairs = [part for pair in self.pairs for part in self._split_fused(pair)]
        self.format = formats.detect([p.prefix for p in self.pairs], self.family)

    @cached_property
    def sha256(self) -> str:
        """The file's sha256 (provenance), read once per source however many outputs record it."""
        h = hashlib.sha256()       # (hashlib.file_digest is Python 3.11+; the package supports 3.10)
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    @staticmethod
    def _pick_in_folder(folder: Path) -> Path:
        """The weights of a PEFT folder, or the one LoRA file a folder holds."""
        weights = peft.weights_in(folder)
        if weights is not None:
            return weights
        files = lora_files(folder)
        if len(files) != 1:
            shown = ", ".join(f.name for f in files[:5]) + (", ..." if len(files) > 5 else "")
            raise CasaError(f"LoRA folder {folder} holds {len(files)} weight files" + (f" ({shown})" if files else ""),
                            "pick one by its file name, or give the LoRA file itself", setting="lora_file",
                            example="NAME")
        return files[0]

    def _peft_scale(self, prefix: str, rank: int, kind: str) -> float | None:
        """The scale PEFT's adapter config gives one layer; None without a config."""
        if self.peft is None:
            return None
        if self._patterns is None:
            self._patterns = peft.Patterns(self.peft, self.path.name)
        return peft.scale(self.peft, names.strip_prefix(prefix), rank, kind, self.path.name, self._patterns)

    def _materialised(self, ad: lycoris.Adapter) -> LoraPair:
        """A LoHa / LoKr layer as a pair whose factors are derived on read."""
        down, up = kohya.PAIR if kohya.owns(ad.prefix) else peft.PAIR
        down_key, up_key = ad.prefix + down, ad.prefix + up
        taken = next((k for k in (down_key, up_key) if k in self.store), None)
        if taken is not None:
            raise _twice(ad.prefix, ad.keys[0], taken)
        for k in ad.keys:
            self._check_factor(k)
        alpha_key = ad.prefix + lycoris.ALPHA if ad.prefix + lycoris.ALPHA in self.store else None
        scale = self._peft_scale(ad.prefix, ad.rank, ad.kind)
        if scale is None:
            scale = 1.0
            if alpha_key is not None and ad.dim:
                scale = self._alpha(alpha_key) / ad.dim
        dtype = self.store.info(ad.keys[0]).dtype
        self.store.derive(up_key, dtype, (ad.out_features, ad.rank), lambda: self._lycoris_factors(ad)[0])
        self.store.derive(down_key, dtype, (ad.rank, ad.in_features), lambda: self._lycoris_factors(ad)[1])
        return LoraPair(ad.prefix, down_key, up_key, alpha_key, ad.rank, ad.out_features, ad.in_features,
                        scale, ad.kind, ad.keys)

    def _split_fused(self, pair: LoraPair) -> list[LoraPair]:
        """A pair on a fused projection (HunyuanVideo's ``img_attn_qkv``) as exact pairs on its parts: each
        the up factor's block of rows with the shared down factor; any other pair as it is."""
        if pair.kind != "lora":
            return [pair]
        kohya_style = kohya.owns(pair.prefix)
        bare = kohya.stem(pair.prefix) if kohya_style else names.strip_prefix(pair.prefix)
        parts = self.family.split_fused_pair(pair.prefix, bare, pair.out_features, pair.in_features, kohya_style)
        if not parts:
            return [pair]
        down_end, up_end = pair.down_key[len(pair.prefix):], pair.up_key[len(pair.prefix):]
        alpha_end = pair.alpha_key[len(pair.prefix):] if pair.alpha_key else None
        up_info, down_info = self.store.info(pair.up_key), self.store.info(pair.down_key)
        out = []
        for prefix, start, stop in parts:
            down_key, up_key = prefix + down_end, prefix + up_end
            alpha_key = prefix + alpha_end if alpha_end else None
            if any(k in self.store for k in (down_key, up_key)):
                raise _twice(prefix, pair.down_key, down_key)
            self.store.derive(up_key, up_info.dtype, (stop - start, *up_info.shape[1:]),
                              lambda k=pair.up_key, a=start, b=stop: self.store.read(k)[a:b])
            self.store.derive(down_key, down_info.dtype, tuple(down_info.shape),
                              lambda k=pair.down_key: self.store.read(k))
            if alpha_key:
                self.store.derive(alpha_key, self.store.info(pair.alpha_key).dtype, (),
                                  lambda k=pair.alpha_key: self.store.read(k))
            out.append(LoraPair(prefix, down_key, up_key, alpha_key, pair.rank, stop - start, pair.in_features,
                                pair.scale, "lora", pair.keys))
        return out

    def _lycoris_factors(self, ad: lycoris.Adapter):
        # the engine reads up, then down: keep the last layer's pair so it is built once
        with self._factors_lock:
            if self._factors_cache is None or self._factors_cache[0] != ad.prefix:
                self._factors_cache = (ad.prefix, lycoris.factors(ad, self.store.read))
            return self._factors_cache[1]

    def _pair(self, prefix, down_key, up_key, alpha_key, default_scale) -> LoraPair:
        ds, us = self.store.shape(down_key), self.store.shape(up_key)
        if len(ds) < 2 or len(us) < 2 or ds[0] != us[1]:
            raise CasaError(f"LoRA pair {prefix} has mismatched factor shapes {list(ds)} and {list(us)}",
                            "the LoRA file is damaged")
        if ds[0] == 0:
            raise CasaError(f"LoRA pair {prefix} has rank 0 (factor shapes {list(ds)} and {list(us)})",
                            "the LoRA file is damaged; re-download or re-train it")
        if math.prod(us[2:]) != 1:
            raise CasaError(f"LoRA factor {up_key} has extra dimensions {list(us)} (an up factor is out x rank, "
                            "with trailing 1s at most)", "the LoRA file is damaged, or not a LoRA this app reads")
        self._check_factor(down_key)
        self._check_factor(up_key)
        rank = ds[0]
        out_f = us[0]
        in_f = 1
        for d in ds[1:]:
            in_f *= d
        peft = self._peft_scale(prefix, rank, "lora")
        if alpha_key is not None:
            scale = self._alpha(alpha_key) / rank
        elif peft is not None:
            scale = peft
        elif default_scale is not None:
            scale = default_scale
        else:
            scale = 1.0
        return LoraPair(prefix, down_key, up_key, alpha_key, rank, out_f, in_f, scale)

    def _check_factor(self, key: str) -> None:
        """Refuse a factor whose dtype is not an ordinary float (integers, fp8, others)."""
        tag = self.store.info(key).dtype
        if not dtypes.is_float(tag):
            raise CasaError(f"LoRA factor {key} in {self.path.name} has dtype {tag}; LoRA factors must be "
                            "F32, F16, BF16 or F64", "re-save the LoRA in float32, float16 or bfloat16")

    def _alpha(self, key: str) -> float:
        """A layer's alpha: one positive, finite number (else refused, naming the key)."""
        t = self.store.read(key)
        if t.numel() != 1:
            raise CasaError(f"LoRA alpha {key} in {self.path.name} holds {t.numel()} values, not one",
                            "the LoRA file is damaged; re-download it")
        value = float(t.double().item())
        if not math.isfinite(value) or value <= 0:
            raise CasaError(f"LoRA alpha {key} in {self.path.name} is {value:g}; an alpha must be a positive, "
                            "finite number", "the LoRA file is damaged; re-download or re-train it")
        return value

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
