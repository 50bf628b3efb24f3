"""A target given as a model (the base, or a checkpoint) plus distillation LoRAs stacked on it.

Step- and CFG-distillation is often published as a LoRA on the base (lightx2v, CausVid,
AccVid, Wan2.2-Lightning). Such a target is ``W_t = W + sum_i strength_i * D_i``, where ``W``
is the base's (or the given checkpoint's) weight and ``D_i`` the LoRA's update of that layer
(``alpha / r`` applied; a ``.diff`` key on a linear weight is a full update of it).

``StackedTarget`` answers the questions a ``ModelSource`` answers (names, shapes, the
family, ``read``), so the plan, ``casa inspect`` and the GUI treat it as a target. The
engine reads it through ``read_drift``: the parts of ``W_t - W_s`` one layer at a time, so
that where the drift is the LoRAs' alone it stays low-rank (``DriftParts.drift``) and no
dense ``W_t`` is made. What the LoRAs hold that the rule never reads (bias updates
``diff_b``, norm ``.diff``, modulation ``diff_m``, conv layers) is listed in ``ignored``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import formats, matching, names
from .errors import CasaError

DIFF = ".diff"      # a full update of a weight (or a norm) in ComfyUI's naming


@dataclass(frozen=True)
class WeightedLora:
    """What the user gave for one distillation LoRA: where it is, and its strength."""
    spec: str
    strength: float = 1.0


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NOT_FINITE = re.compile(r"^[+-]?(nan|inf|infinity)$", re.IGNORECASE)


def check_strength(value, spec: str = "") -> float:
    """A strength as a finite float (else one-line refusal)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise CasaError(f"the strength {value!r} of the distillation LoRA {spec} is not a finite number",
                        "give a number such as 1 or 0.8", setting="target_lora", example=f"{spec or 'PATH'}:1")
    return float(value)


def parse_weighted(text: str) -> WeightedLora:
    """``PATH[:STRENGTH]`` (or a hub id ``org/name[:file][:STRENGTH]``) as a ``WeightedLora``.

    Only a trailing ``:<number>`` is a strength, so a Windows drive (``C:\\x.safetensors``)
    and a hub subfolder (``org/name:file.safetensors``) stay part of the path; a trailing
    ``:nan`` / ``:inf``, or a word after the colon of a path that exists, is refused.
    """
    text = str(text).strip()
    head, sep, tail = text.rpartition(":")
    if sep and head and not re.fullmatch(r"[A-Za-z]", head):
        t = tail.strip()
        if _NUMBER.match(t):
            return WeightedLora(head, check_strength(float(t), head))
        if _NOT_FINITE.match(t) or (t and not any(c in t for c in "/\\.") and Path(head).expanduser().exists()):
            raise CasaError(f"the strength {t!r} of the distillation LoRA {head} is not a finite number",
                            "give a number such as 1 or 0.8", setting="target_lora", example=f"{head}:1")
    if not text:
        raise CasaError("a distillation LoRA was given as an empty name", "give its path, e.g. lightx2v.safetensors",
                        setting="target_lora", example="PATH")
    return WeightedLora(text, 1.0)


def weighted(item) -> WeightedLora:
    """A ``WeightedLora`` from what a caller passes: one, a ``(spec, strength)`` pair, or ``PATH[:STRENGTH]``."""
    if isinstance(item, WeightedLora):
        return WeightedLora(item.spec, check_strength(item.strength, item.spec))
    if isinstance(item, tuple | list):
        if len(item) != 2:
            raise CasaError(f"a distillation LoRA is given as {item!r}", "give (path, strength) or 'PATH:STRENGTH'",
                            setting="target_lora", example="PATH:1")
        return WeightedLora(str(item[0]), check_strength(item[1], str(item[0])))
    return parse_weighted(str(item))


@dataclass(frozen=True)
class Ignored:
    """Something in a distillation LoRA that changes nothing the rule reads, and what it is."""
    key: str
    what: str


@dataclass(frozen=True)
class _Term:
    lora: int            # index in StackedTarget.loras
    kind: str            # "pair" (a low-rank pair) or "diff" (a full update)
    pair: object = None  # LoraPair
    key: str = ""        # the .diff key


@dataclass
class Distillation:
    """One distillation LoRA of a target, and what of it reaches the rule."""
    lora: object                     # LoraSource
    strength: float
    pairs: int = 0                   # low-rank layers on linears the rule reads
    diffs: list[str] = field(default_factory=list)      # canonical modules given a full update
    ignored: list[Ignored] = field(default_factory=list)

    @property
    def name(self) -> str:
        """How a user knows it: its file name (a hub LoRA: repo@commit[:file])."""
        return self.lora.identity if self.lora.from_hub else Path(self.lora.path).name

    def describe(self) -> dict:
        return {"source": self.lora.identity, "name": self.name, "strength": self.strength,
                "format": self.lora.format, "layers": self.pairs, "full_updates": list(self.diffs),
                "ranks": sorted({p.rank for p in self.lora.pairs}),
                "not_read": [{"key": i.key, "what": i.what} for i in self.ignored]}

    def line(self) -> str:
        """One line for ``casa inspect``."""
        ranks = "/".join(map(str, sorted({p.rank for p in self.lora.pairs})[:4]))
        parts = [f"{self.pairs} LoRA layers on linears (rank {ranks})"]
        if self.diffs:
            parts.append(f"{len(self.diffs)} full updates ({', '.join(self.diffs[:3])})")
        if self.ignored:
            kinds = sorted({i.what for i in self.ignored})
            parts.append(f"{len(self.ignored)} keys the rule does not read ({'; '.join(kinds)})")
        return (f"{self.lora.identity} at strength {self.strength:g}  ({self.lora.format} format; "
                + ", ".join(parts) + ")")


def _what(key: str) -> str:
    """What a key of a distillation LoRA that the rule does not read changes."""
    if key.endswith(".diff_b") or key.endswith(".lora_B.bias"):
        return "bias updates (diff_b)"
    if key.endswith("diff_m"):
        return "modulation updates (diff_m)"
    if key.endswith(DIFF):
        return "norm or non-linear full updates (.diff)"
    return "other keys"


@dataclass
class DriftParts:
    """What ``W_t - W_s`` of one layer is made of: ``weight - W_s`` (a target checkpoint's weight,
    None when the target is the base), full updates ``(tensor, strength)``, and low-rank ``(s * B, A)``
    pairs (the strength folded into ``s``)."""
    weight: object | None
    diffs: list
    pairs: list

    def drift(self, W_s, dtype, device, low_rank: bool = True):
        """``D_fft`` in ``dtype`` on ``device``: a ``factorization.LowRank`` where it is the pairs' alone
        and their total rank is under half the layer's smaller side (``low_rank``), else dense."""
        import torch

        from .factorization import LowRank

        def f(t):
            return t.reshape(t.shape[0], -1).to(device=device, dtype=dtype)

        P = [f(B) for B, _ in self.pairs]
        Q = [f(A) for _, A in self.pairs]
        m, n = W_s.shape
        if (low_rank and self.weight is None and not self.diffs and P
                and 2 * sum(p.shape[1] for p in P) < min(m, n)):
            return LowRank(torch.cat(P, 1), torch.cat(Q, 0))
        if self.weight is not None:
            D = self.weight.to(device=device, dtype=dtype, copy=True).sub_(W_s)
        else:
            D = torch.zeros((m, n), device=device, dtype=dtype)
        for d, strength in self.diffs:
            D.add_(f(d), alpha=strength)
        for p, q in zip(P, Q, strict=True):
            D.addmm_(p, q)
        return D


class StackedTarget:
    """A model (the base, or a target checkpoint) with distillation LoRAs stacked on it, as a target.

    ``on_base``: the model is the base itself (the target is base + LoRAs).
    """

    def __init__(self, model, loras, *, on_base: bool, role: str = "target"):
        self.model = model
        self.on_base = on_base
        self.role = role
        self.loras: list[Distillation] = [Distillation(lo, check_strength(s, str(lo.path))) for lo, s in loras]
        if not self.loras:
            raise CasaError("no distillation LoRA was given for the target", "give one, or a target checkpoint",
                            setting="target_lora", example="PATH")
        self._terms: dict[str, list[_Term]] = {}
        for i, d in enumerate(self.loras):
            self._index(i, d)
        shown = " + ".join(f"{d.lora.identity}" + (f" x{d.strength:g}" if d.strength != 1 else "")
                           for d in self.loras)
        self.identity = f"{'base' if on_base else model.identity} + {shown}"

    # ---- what a ModelSource answers, from the model underneath ---------------------------
    path = property(lambda self: self.model.path)
    store = property(lambda self: self.model.store)
    family = property(lambda self: self.model.family)
    layout = property(lambda self: self.model.layout)
    from_hub = property(lambda self: self.model.from_hub)
    container = property(lambda self: getattr(self.model, "container", ""))
    quantisation = property(lambda self: getattr(self.model, "quantisation", ""))
    expert = property(lambda self: getattr(self.model, "expert", None))

    def __contains__(self, ckey: str) -> bool:
        return ckey in self.model

    def canonical_keys(self):
        return self.model.canonical_keys()

    def shape(self, ckey: str):
        return self.model.shape(ckey)

    def dtype(self, ckey: str) -> str:
        return self.model.dtype(ckey)

    def modules(self):
        return self.model.modules()

    # ---- reading ------------------------------------------------------------------------
    def read_drift(self, ckey: str, with_weight: bool = True) -> DriftParts:
        """The parts of one weight's drift from the base (``with_weight``: the checkpoint's weight
        is read where the target is a checkpoint)."""
        weight = None if self.on_base or not with_weight else self.model.read(ckey)
        diffs, pairs = [], []
        for t in self._terms.get(ckey, ()):
            d = self.loras[t.lora]
            lora = d.lora
            if t.kind == "diff":
                diffs.append((lora.read(t.key), d.strength))
            else:
                B, A = lora.read(t.pair.up_key), lora.read(t.pair.down_key)
                pairs.append((B.reshape(B.shape[0], -1).double() * (t.pair.scale * d.strength), A))
        return DriftParts(weight, diffs, pairs)

    def read(self, ckey: str):
        """The merged weight ``W + sum strength * D`` (float32 at least; inspect, tests), one tensor."""
        import torch

        W = self.model.read(ckey)
        if ckey not in self._terms:
            return W
        dtype = W.dtype if W.dtype == torch.float64 else torch.float32
        parts = self.read_drift(ckey, with_weight=False)
        out = W.to(dtype, copy=True)
        flat = out.reshape(out.shape[0], -1)
        for d, strength in parts.diffs:
            flat.add_(d.reshape(flat.shape).to(dtype), alpha=strength)
        for B, A in parts.pairs:
            flat.add_((B @ A.reshape(A.shape[0], -1).double()).to(dtype))
        return out

    def describe(self) -> list[dict]:
        return [d.describe() for d in self.loras]

    def stack_with(self) -> list[dict]:
        """The distillation LoRAs a LoRA converted for this target is meant to be loaded with."""
        return [{"name": d.name, "strength": d.strength} for d in self.loras]

    def usage(self) -> str:
        """One sentence on how to load a LoRA converted for this target."""
        stack = ", ".join(f"{d.name} at strength {d.strength:g}" for d in self.loras)
        return f"load together with {stack} on the {'base' if self.on_base else 'target'} model"

    def files(self) -> list[Path]:
        """Every file the distillation LoRAs are read from (protected from writes)."""
        return [f for d in self.loras for f in (Path(d.lora.path), *d.lora.store.files)]

    # ---- matching -----------------------------------------------------------------------
    def _index(self, i: int, d: Distillation) -> None:
        model, lora = self.model, d.lora
        name = Path(lora.path).name
        unknown = 0
        for m in matching.match_pairs(lora, model):
            if m.verdict == matching.MISFIT:
                raise CasaError(f"distillation LoRA {name} does not fit the {self.role}: {m.module} is "
                                f"{m.pair.out_features}x{m.pair.in_features} in the LoRA but "
                                f"{'x'.join(map(str, m.shape))} in the model",
                                "it was made for another model size; pick the distillation LoRA of this model",
                                setting="target_lora")
            if m.verdict == matching.UNKNOWN:
                unknown += 1
                d.ignored.append(Ignored(m.pair.prefix, "layers the model lacks"))
            elif m.verdict == matching.NOT_LINEAR:
                d.ignored.append(Ignored(m.pair.prefix, "layers that are no 2-D linear (conv, norm)"))
            else:
                self._terms.setdefault(f"{m.module}.weight", []).append(_Term(i, "pair", m.pair))
                d.pairs += 1
        if lora.pairs and unknown == len(lora.pairs):
            raise CasaError(f"distillation LoRA {name} matches no layer of the {self.role} (first LoRA layer: "
                            f"{lora.pairs[0].prefix})", "it is probably for another model family; pick one made "
                            "for this model", setting="target_lora")
        module_of = formats.module_resolver(model)
        for key in lora.other_keys:
            if key.endswith(DIFF):
                module = module_of(key[: -len(DIFF)])
                wkey = f"{module}.weight"
                if module and wkey in model and len(model.shape(wkey)) == 2 and \
                        model.family.is_transferable(module):
                    shape = tuple(lora.store.shape(key))
                    if shape != tuple(model.shape(wkey)):
                        raise CasaError(f"distillation LoRA {name} does not fit the {self.role}: {key} is "
                                        f"{'x'.join(map(str, shape))} but {module} is "
                                        f"{'x'.join(map(str, model.shape(wkey)))}",
                                        "it was made for another model size; pick the distillation LoRA of "
                                        "this model", setting="target_lora")
                    self._terms.setdefault(wkey, []).append(_Term(i, "diff", key=key))
                    d.diffs.append(module)
                    continue
            if any(key.endswith(a) for a in formats.ALPHA_ENDINGS):
                continue   # an alpha whose pair is elsewhere: nothing of its own
            d.ignored.append(Ignored(names.strip_prefix(key), _what(key)))
