"""Two-expert models (Wan2.2 A14B): whether the expert chosen fits the models and the LoRAs given.

Which folders hold the experts and what file names say about them are family facts
(``families.wan``); here the inputs of one conversion are checked against each other, so that
a LoRA trained for the other expert (shapes agree, so nothing else would notice) is refused.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CasaError


def pick(where: str, have: dict, expert: str | None):
    """The folder of ``expert`` among a two-expert model's ``have`` (expert -> folder), for a model
    ``where`` names (``base /x`` or ``model repo org/name``); no expert, or one it lacks, is refused."""
    listed = ", ".join(f"{e} ({Path(str(f)).name}/)" for e, f in have.items())
    if expert is None:
        raise CasaError(f"{where} holds two experts: {listed}", "choose the expert the LoRA was trained for",
                        setting="expert", example="high")
    if expert not in have:
        raise CasaError(f"{where} has no expert {expert!r}; it holds {listed}", "choose one of those",
                        setting="expert", example=next(iter(have)))
    return have[expert]


def check_choice(expert: str | None, models, loras) -> None:
    """Refuse an expert no model has, models of different experts, and a LoRA whose file name
    names the other expert. ``models``: the base and the target; ``loras``: the LoRA (and, through
    the target, its distillation LoRAs)."""
    models = [m for m in models if m is not None]
    family = models[0].family if models else None
    titles = getattr(family, "EXPERT_TITLES", {})
    if expert is not None and expert not in titles:
        known = ", ".join(titles) or "none"
        raise CasaError(f"there is no expert {expert!r} (experts: {known})",
                        "choose one of those" if titles else "leave the expert unset", setting="expert",
                        example=next(iter(titles), None))
    if expert is not None and not any(getattr(m, "expert", None) for m in models):
        raise CasaError(f"the expert {expert} was chosen, but neither the base nor the target has experts",
                        "leave the expert unset for a one-transformer model", setting="expert")
    said = {m.role: m.expert for m in models if getattr(m, "expert", None)}
    if len(set(said.values())) > 1:
        raise CasaError(f"the base is the {titles[said['base']]} expert but the target the {titles[said['target']]} "
                        "expert", "give the same expert of both models", setting="expert")
    chosen = expert or next(iter(said.values()), None)
    if chosen is None:
        return
    named = [(lo, "LoRA") for lo in loras if lo is not None]
    for m in models:
        named += [(d.lora, "distillation LoRA") for d in getattr(m, "loras", ())]
    hint = getattr(family, "expert_hint", None)
    for lora, what in named:
        says = hint(Path(lora.path).stem) if hint else None
        if says is not None and says != chosen:
            raise CasaError(f"the {what} {Path(lora.path).name} is named for the {titles[says]} expert, but the "
                            f"models are the {titles[chosen]} expert",
                            f"give the {titles[chosen]} file of the pair, or choose the expert {says}",
                            setting="expert", example=says)
