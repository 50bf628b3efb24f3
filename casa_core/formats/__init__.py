"""LoRA layouts: how each names a layer's pair, alpha and extras, how it is recognised, and how it is written.

One module per layout: ``comfy``, ``kohya``, ``diffusers``, ``peft``, ``fastvideo``,
``diffsynth`` and ``lycoris`` (LoHa / LoKr). Each reading module gives ``PAIRS`` ((down, up)
key endings) and ``ALPHAS``; the three output layouts (``WRITERS``) also give ``NAME``,
``key_prefix(module, family)``, ``WRITES`` ((down, up, alpha) endings), ``passthrough(key)``
and ``header(ranks)``. Here they are combined for ``lora.py`` (reading) and ``export.py``
(writing); no model family is known here: it is passed in.
"""

from __future__ import annotations

from .. import names
from . import comfy, diffsynth, diffusers, fastvideo, kohya, lycoris, peft

READERS = (diffsynth, peft, diffusers, kohya, comfy, fastvideo)
WRITERS = {w.NAME: w for w in (comfy, kohya, diffusers)}


def _union(parts):
    return tuple(dict.fromkeys(p for part in parts for p in part))


# (down, up) endings of a pair in every layout
PAIR_ENDINGS: tuple[tuple[str, str], ...] = _union(f.PAIRS for f in READERS)
# alpha endings, the one read first where a layer has both (".alpha" before FastVideo's ".lora_alpha")
ALPHA_ENDINGS: tuple[str, ...] = _union(f.ALPHAS for f in READERS)
# key parts that mark a LoRA file (rather than a model)
MARKERS: tuple[str, ...] = (*peft.MARKERS, *kohya.MARKERS, *lycoris.MARKERS)
# DoRA's magnitude vectors (LyCORIS / ComfyUI, PEFT)
DORA_MARKERS: tuple[str, ...] = (lycoris.DORA, peft.DORA)
# endings after the module name of the keys a converted file renames when passing them through
PASSTHROUGH_TAILS: tuple[str, ...] = (*(e for pair in PAIR_ENDINGS for e in pair), *ALPHA_ENDINGS,
                                      *comfy.EXTRAS, lycoris.DORA)


def looks_like_lora(keys) -> bool:
    """True when tensor names are those of a LoRA rather than of a model."""
    keys = list(keys)
    hits = sum(any(m in k for m in MARKERS) for k in keys)
    return bool(keys) and hits >= max(1, len(keys) // 4)


def detect(prefixes, family) -> str:
    """The output layout a LoRA's own layout is written back as, from its pairs' key prefixes."""
    if kohya.owns(prefixes[0]):
        return kohya.NAME
    if any(diffusers.owns(p, family) for p in prefixes):
        return diffusers.NAME
    return comfy.NAME


def keeps_alpha(pair) -> bool:
    """True when a pair's alpha stays in a file kept in its own layout (set to the new rank).

    The loaders of kohya files need it; FastVideo reads only ``lora_alpha``.
    """
    return bool(pair.alpha_key) and (kohya.owns(pair.prefix) or pair.alpha_key.endswith(fastvideo.ALPHA))


def module_resolver(model):
    """``key prefix -> canonical module of the model, or None``, for a LoRA's keys in any layout.

    kohya names resolve against the model's own modules; others are stripped of their
    prefixes and read in the model family's spelling.
    """
    family = model.family
    index = kohya.underscore_index(model.modules(), family)

    def module_of(prefix: str) -> str | None:
        if kohya.owns(prefix):
            return index.get(kohya.stem(prefix))
        bare = names.strip_prefix(prefix)
        return family.to_canonical(bare, family.is_diffusers_name(bare))

    return module_of


def passthrough_key(key: str, writer, family, module_of) -> str | None:
    """The name a pass-through key gets in an output layout (None: the layout cannot hold it).

    A key ending in a known tail moves to its module's new prefix; others keep their name.
    """
    for tail in PASSTHROUGH_TAILS:
        if key.endswith(tail):
            module = module_of(key[: -len(tail)])
            if module:
                key = writer.key_prefix(module, family) + tail
            break
    return writer.passthrough(key)
