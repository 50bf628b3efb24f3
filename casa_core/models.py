"""Model checkpoints (base and distilled target) seen through their family's canonical names."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from . import dtypes, families, formats, names
from .errors import CasaError
from .experts import pick
from .sources import fp8, pickled
from .sources.hub import climbs
from .tensorstore import TensorStore


def expert_folder(path: Path, role: str, expert: str | None) -> tuple[Path, str | None]:
    """(the folder of the chosen expert, the expert) for a two-expert model's folder; (path, None) otherwise.

    Such a model (Wan2.2 A14B: ``high_noise_model/`` + ``low_noise_model/``, or a diffusers folder
    with ``transformer/`` + ``transformer_2/``) needs an expert; an expert it lacks is refused.
    """
    folders = _expert_folders(path)
    if not folders:
        return path, None
    return Path(pick(f"{role} {path}", folders, expert)), expert


def expert_choices(spec) -> list[str]:
    """The experts a local model folder holds (``["high", "low"]`` for Wan2.2 A14B), else none; no weights read.

    A Hugging Face repo id is not looked up here (opening it says when it needs an expert).
    """
    return list(_expert_folders(Path(str(spec)).expanduser())) if str(spec).strip() else []


def _expert_folders(path: Path) -> dict:
    """expert -> folder, for a folder any family knows as a two-expert model's; empty otherwise."""
    if not path.is_dir():
        return {}
    return next((found for fam in families.FAMILIES if hasattr(fam, "expert_folders")
                 and (found := fam.expert_folders(path))), {})


def weight_files(path: Path, role: str) -> list[Path]:
    """The weight files that hold a model given as a file, index or folder (of one expert: ``expert_folder``).

    safetensors first; a pickled checkpoint (``.pt``, ``.pth``, ``.ckpt``, ``.bin``)
    only where a folder holds no safetensors.
    """
    if not path.exists():
        raise CasaError(f"{role} path {path} does not exist", "check the path")
    if path.is_dir():
        if (path / "model_index.json").is_file() and (path / "transformer").is_dir():
            path = path / "transformer"
        indexes = sorted(path.glob("*.safetensors.index.json")) or sorted(path.glob("*.bin.index.json"))
        if indexes:
            return _index_files(indexes[0], role)
        files = sorted(path.glob("*.safetensors"))
        if files:
            return files
        pickles = sorted(f for f in path.iterdir() if f.is_file() and pickled.is_pickled(f))
        if len(pickles) == 1:
            return pickles
        if pickles:
            raise CasaError(f"{role} folder {path} holds {len(pickles)} torch checkpoints "
                            f"({', '.join(f.name for f in pickles[:4])})", "pick the checkpoint file itself")
        raise CasaError(f"{role} folder {path} holds no .safetensors weights",
                        "pick the model file, its index.json, or a diffusers folder")
    if path.name.endswith(".json"):
        return _index_files(path, role)
    if path.suffix != ".safetensors" and not pickled.is_pickled(path):
        raise CasaError(f"{role} file {path.name} is neither safetensors nor a torch checkpoint",
                        "pick the model's .safetensors (or .pt, .pth, .ckpt) weights")
    return [path]


def _index_files(index: Path, role: str) -> list[Path]:
    try:
        wm = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CasaError(f"{role} index {index} is not a valid safetensors index",
                        "re-download the model's index.json") from None
    if not isinstance(wm, dict) or not all(isinstance(f, str) for f in wm.values()):
        raise CasaError(f"{role} index {index} is not a valid safetensors index", "re-download the model's index.json")
    for f in set(wm.values()):
        if climbs(f):
            raise CasaError(f"{role} index {index.name} names a shard outside its folder ({f[:80]!r})",
                            "re-download the model's index.json; shards lie beside it")
    files = sorted({index.parent / f for f in wm.values()})
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CasaError(f"{role} shard {missing[0]} named in {index.name} is missing",
                        "download every shard of the model")
    return files


class ModelSource:
    """A base or target model: lazy tensors under canonical names of its family (``families``).

    Wrapper segments (``_fsdp_wrapped_module.``) and known prefixes are removed from
    the names; fp8 weights are read as float32, with their scale applied.
    """

    def __init__(self, path, role: str = "model", identity: str | None = None, *, from_hub: bool = False,
                 expert: str | None = None):
        self.path = Path(path)
        self.role = role
        self.identity = identity or str(path)
        self.from_hub = from_hub          # opened from a Hugging Face repo: provenance names it repo@commit
        folder, chosen = expert_folder(self.path, role, expert) if self.path.is_dir() else (self.path, None)
        self.two_experts = chosen is not None     # one expert of a two-expert model was picked
        self.store = TensorStore(weight_files(folder, role))
        self.container = self.store.container(self.store.files[0])
        raw = list(self.store.keys())
        self._scales, consumed = fp8.split_scales(raw)
        raw = [k for k in raw if k not in consumed]
        if not raw:
            raise CasaError(f"{role} {self.path} holds no tensors", "pick the model's weights")
        if formats.looks_like_lora(raw):
            raise CasaError(f"{self.path} looks like a LoRA, not a {role} model",
                            "give it as the LoRA, and the model checkpoint here", setting=role)
        unwrapped = [names.strip_wrappers(k) for k in raw]
        prefix = names.common_prefix(unwrapped)
        stripped = [k[len(prefix):] for k in unwrapped]
        self.family = families.family_of(stripped)
        diffusers = any(self.family.is_diffusers_name(k) for k in stripped)
        self.layout = "diffusers" if diffusers else "original"
        self._keys = {self.family.canonical_key(s, diffusers): k for s, k in zip(stripped, raw, strict=False)}
        # canonical key -> the blocks of rows of a stored tensor it is, in order (a fused projection's
        # part, or a weight whose halves another layout stores swapped)
        self._rows: dict[str, tuple[tuple[int, int], ...]] = {}
        self._fused_lock = threading.Lock()
        self._fused_last: tuple[str, object] | None = None     # (stored key, tensor): the parts read one by one
        fused = getattr(self.family, "fused_rows", None)
        if fused is not None and not diffusers:
            raw_of = dict(zip(stripped, raw, strict=True))

            def shape_of(key):
                return self.store.shape(raw_of[key]) if key in raw_of else None

            for s, k in zip(stripped, raw, strict=True):
                parts = fused(s, shape_of)
                if parts:
                    del self._keys[self.family.canonical_key(s, diffusers)]
                    for ckey, blocks in parts:
                        self._keys[ckey] = k
                        self._rows[ckey] = tuple(blocks)
        # the expert picked, or (a model of an expert's size) the one its own file or folder says it is
        self.expert = chosen
        if chosen is None and hasattr(self.family, "expert_of") and self.family.hidden_size(self) == \
                self.family.EXPERT_DIM:
            self.expert = self.family.expert_of(folder)
        fp8_tags = sorted({self.store.info(k).dtype for k in raw if dtypes.is_fp8(self.store.info(k).dtype)})
        self.quantisation = (("scaled " if self._scales else "") + "/".join(fp8_tags)) if fp8_tags else ""

    def __contains__(self, ckey: str) -> bool:
        return ckey in self._keys

    def canonical_keys(self):
        return self._keys.keys()

    def shape(self, ckey: str) -> tuple[int, ...]:
        shape = self.store.shape(self._keys[ckey])
        if ckey in self._rows:
            return (sum(stop - start for start, stop in self._rows[ckey]), *shape[1:])
        return shape

    def dtype(self, ckey: str) -> str:
        return self.store.infos[self._keys[ckey]].dtype

    def modules(self) -> list[str]:
        """Canonical module names that own a ``.weight``."""
        return [k[: -len(".weight")] for k in self._keys if k.endswith(".weight")]

    def read(self, ckey: str):
        """One tensor on the CPU, as stored (fp8: dequantised to float32); NaN or Inf is refused."""
        import torch

        key = self._keys[ckey]
        if ckey not in self._rows:
            return self._stored(key)
        # one projection of a fused tensor: its blocks of rows; the tensor is read once for all its parts
        # (q, k and v follow each other in the plan): the last fused tensor read is kept for its next part
        with self._fused_lock:
            if self._fused_last is None or self._fused_last[0] != key:
                self._fused_last = (key, self._stored(key))
            t = self._fused_last[1]
        return torch.cat([t[start:stop] for start, stop in self._rows[ckey]])

    def _stored(self, key: str):
        """A stored tensor on the CPU (fp8: dequantised to float32); NaN or Inf is refused."""
        import torch

        t = self.store.read(key)
        scale = self._scales.get(key)
        if scale is not None or dtypes.is_fp8(self.store.info(key).dtype):
            t = fp8.dequantise(t, self.store.read(scale) if scale else None, name=key)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CasaError(f"{self.role} tensor {key} in {self.path} holds NaN or Inf",
                            "the checkpoint is damaged; re-download it")
        return t
