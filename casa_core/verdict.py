"""A plain verdict on a transferred layer, and on the whole model: good, check or poor, and why.

The verdict reads a layer's figures as the run report holds them (``LayerResult.figures()``),
so it needs no tensors and works on a written report as well as in the app. Each figure has
two documented thresholds in ``THRESHOLDS``; a figure a method does not report is skipped,
so a figure added later (one more line in ``THRESHOLDS``) joins the verdict on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GOOD, CHECK, POOR = "good", "check", "poor"
LEVELS = (GOOD, CHECK, POOR)


@dataclass(frozen=True)
class Threshold:
    """One figure's bounds: at ``good`` or better it is good, past ``poor`` it is poor, between: check."""
    figure: str                 # its name in the layer's figures
    label: str                  # what the reason says
    higher_is_better: bool
    good: float
    poor: float
    why: str                    # one line for the help page

    def level(self, value: float) -> str:
        if self.higher_is_better:
            return GOOD if value >= self.good else POOR if value < self.poor else CHECK
        return GOOD if value <= self.good else POOR if value > self.poor else CHECK

    def bounds(self) -> str:
        """``good >= 0.95, poor < 0.8`` as text."""
        if self.higher_is_better:
            return f"good ≥ {self.good:g}, poor < {self.poor:g}"
        return f"good ≤ {self.good:g}, poor > {self.poor:g}"


THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("energy_kept", "energy kept by the rank", True, 0.90, 0.70,
              "the share of the transferred update the output rank can hold; below it, raise the rank"),
    Threshold("capped_share", "share of the routing grid capped", False, 0.05, 0.15,
              "how much of the layer's routing the rule had to cap; a large share means the LoRA and the "
              "distillation pull hard against each other here"),
    Threshold("drift", "distillation drift", False, 0.10, 0.30,
              "how far the distilled weight moved from the base; the further, the less the base-trained LoRA "
              "fits as it is"),
)

# the model as a whole: poor when at least this share of its layers is poor; check when any layer is
# poor or at least this share of them needs a check
MODEL_POOR_SHARE = 0.10
MODEL_CHECK_SHARE = 0.10


@dataclass(frozen=True)
class Verdict:
    level: str                  # good | check | poor; '' when no figure could be judged
    reasons: tuple[str, ...]    # one per figure judged, the worst first
    causes: tuple[str, ...] = ()    # the labels of the figures that set the level (none when good)

    @property
    def text(self) -> str:
        return "; ".join(self.reasons)


def derived_figures(figures: Mapping) -> dict:
    """The figures, with the share of the routing grid capped (capped entries over the p x p grid of a
    layer of shape m x n, p = min(m, n)) where a method reports capped entries but not that share."""
    out = dict(figures)
    if out.get("capped_share") is None and out.get("capped") is not None and out.get("shape"):
        p = min(out["shape"])
        out["capped_share"] = out["capped"] / (p * p) if p else None
    return out


def layer_verdict(figures: Mapping) -> Verdict:
    """The verdict on one layer from its report figures (``LayerResult.figures()``)."""
    figs = derived_figures(figures)
    judged = []
    for t in THRESHOLDS:
        v = figs.get(t.figure)
        if v is None or v != v:     # missing, or NaN
            continue
        level = t.level(float(v))
        judged.append((LEVELS.index(level), f"{t.label} {_fmt(t.figure, float(v))}: {level}", t.label))
    if not judged:
        return Verdict("", ())
    judged.sort(key=lambda j: -j[0])
    worst = judged[0][0]
    causes = tuple(label for lvl, _r, label in judged if lvl == worst) if worst else ()
    return Verdict(LEVELS[worst], tuple(r for _lvl, r, _label in judged), causes)


def model_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict on the model from its layers' (see ``MODEL_POOR_SHARE``, ``MODEL_CHECK_SHARE``)."""
    vs = [v for v in verdicts if v.level]
    if not vs:
        return Verdict("", ())
    n = len(vs)
    poor = sum(v.level == POOR for v in vs)
    check = sum(v.level == CHECK for v in vs)
    if poor >= MODEL_POOR_SHARE * n:
        level = POOR
    elif poor or check >= MODEL_CHECK_SHARE * n:
        level = CHECK
    else:
        level = GOOD
    reasons = [f"{n - poor - check} of {n} layers good, {check} to check, {poor} poor"]
    for lvl in (POOR, CHECK):
        causes: dict[str, int] = {}
        for v in vs:
            if v.level == lvl:
                for name in v.causes:
                    causes[name] = causes.get(name, 0) + 1
        if causes:
            reasons.append(f"{lvl}: " + ", ".join(f"{name} ({k})" for name, k in causes.items()))
    return Verdict(level, tuple(reasons))


def thresholds_table() -> str:
    """The thresholds as a Markdown table (the help page shows it, so it never disagrees with the code)."""
    rows = ["| figure | good / poor | what it says |", "|---|---|---|"]
    rows += [f"| {t.label} | {t.bounds()} | {t.why} |" for t in THRESHOLDS]
    rows.append(f"| the model | poor when ≥ {MODEL_POOR_SHARE:.0%} of its layers are poor; check when any layer is "
                f"poor or ≥ {MODEL_CHECK_SHARE:.0%} need a check | |")
    return "\n".join(rows)


def _fmt(figure: str, v: float) -> str:
    return f"{v:.1%}" if figure.endswith("share") else f"{v:.3f}"
