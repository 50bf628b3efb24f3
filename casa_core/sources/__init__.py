"""Where model and LoRA inputs come from: local paths, Hugging Face repo ids, pickled or fp8 weights.

``open_model`` / ``open_lora`` take what a user types (a path, or ``org/name[@revision][:subfolder]``)
and return a lazy ``ModelSource`` / ``LoraSource``. The CLI and the GUI both go through here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import CasaError
from . import hub


def locate(spec, kind: str = "model", *, lora_file: str | None = None,
           progress: Callable[[hub.DownloadProgress], None] | None = None,
           cancel: threading.Event | None = None, expert: str | None = None) -> tuple[Path, str, bool]:
    """(local path to open, identity for provenance, whether it came from the hub) of what the user typed.

    A Hugging Face repo id resolves through the hub cache (``sources.hub``); its
    identity is ``org/name@<commit sha>[:subfolder]``. Anything else is a local path.
    ``expert``: of a two-expert model repo, only that expert's transformer is fetched.
    """
    ref = hub.parse(str(spec))
    if lora_file:
        hub.check_inside(lora_file, "the LoRA file name", setting="lora_file")
    if ref is not None:
        found = hub.resolve(ref, kind, lora_file=lora_file, progress=progress, cancel=cancel, expert=expert)
        return found.path, found.identity, True
    path = Path(str(spec)).expanduser()
    if lora_file:
        if path.is_dir():
            if not (path / lora_file).is_file():
                raise CasaError(f"LoRA folder {path} has no file {lora_file}", "check the LoRA file name",
                                setting="lora_file")
            return path / lora_file, str(path / lora_file), False
        if path.exists() and path.name != Path(lora_file).name:
            raise CasaError(f"a LoRA file name ({lora_file}) was given, but the LoRA {path} is a file",
                            "name a file only with a folder or a Hugging Face repo", setting="lora_file")
    return path, str(spec), False


def open_model(spec, role: str = "model", *, progress=None, cancel=None, expert: str | None = None):
    """A lazy ``ModelSource`` for a path or repo id (headers only are read); ``expert`` picks one
    transformer of a two-expert model (``high`` / ``low``)."""
    from ..models import ModelSource

    path, identity, from_hub = locate(spec, "model", progress=progress, cancel=cancel, expert=expert)
    return ModelSource(path, role, identity, from_hub=from_hub, expert=expert)


def open_target(target, target_loras=(), *, base=None, expert: str | None = None, progress=None, cancel=None):
    """The target: a checkpoint (path or repo id), with distillation LoRAs stacked on it where given;
    ``target`` None means the base (``base``, an open ``ModelSource``) plus the LoRAs.

    ``target_loras``: each ``(spec, strength)``, a ``distillation.WeightedLora`` or ``"PATH[:STRENGTH]"``.
    """
    from ..distillation import StackedTarget, weighted

    hub_args = {"progress": progress, "cancel": cancel}
    wanted = [weighted(x) for x in (target_loras or ())]
    if target is None or str(target) == "":
        if not wanted:
            raise CasaError("no target was given", "give a distilled target model, or distillation LoRAs on the base",
                            setting="target")
        if base is None:
            raise CasaError("a target of distillation LoRAs alone needs the base", "give the base model",
                            setting="base")
        model, on_base = base, True
    else:
        model, on_base = open_model(target, "target", expert=expert, **hub_args), False
    if not wanted:
        return model
    loras = []
    for w in wanted:
        try:
            loras.append((open_lora(w.spec, **hub_args), w.strength))
        except hub.ChoiceNeeded as exc:     # a repo of several files: the file is named after a colon
            raise CasaError(f"distillation {exc.what}", f"name one as {w.spec}:FILE",
                            setting="target_lora", example=f"{w.spec}:{exc.choices[0]}") from None
    return StackedTarget(model, loras, on_base=on_base)


def open_lora(spec, *, lora_file: str | None = None, progress=None, cancel=None):
    """A lazy ``LoraSource`` for a path, folder (``lora_file`` picks in it) or repo id."""
    from ..lora import LoraSource

    path, identity, from_hub = locate(spec, "lora", lora_file=lora_file, progress=progress, cancel=cancel)
    return LoraSource(path, identity, from_hub=from_hub)
