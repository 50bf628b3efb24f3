import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden"  # the repository's own golden cases: always run
SHARED = ROOT.parent / "shared"  # a team checkout may have this beside the clone; a bare clone does not


def _cases(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if (p / "case.json").is_file())


OWN_GOLDEN = _cases(GOLDEN_DIR)
# Cases in ../shared/golden run in addition when that folder exists; a name the repository has is its copy.
# So do the cases of a target given as distillation LoRAs (``target: null``, ``target_lora``) in
# ../shared/golden-next, which this project's engine handles.
SHARED_GOLDEN = [p for p in _cases(SHARED / "golden") + [c for c in _cases(SHARED / "golden-next")
                                                          if c.name.startswith("target-lora-")]
                 if p.name not in {c.name for c in OWN_GOLDEN}]
GOLDEN = OWN_GOLDEN + SHARED_GOLDEN


def case_target_loras(case: Path, spec: dict) -> list[tuple[Path, float]]:
    """A case's distillation LoRAs as (path, strength) pairs (``target_lora``: a name or a list)."""
    loras = spec.get("target_lora") or []
    loras = [loras] if isinstance(loras, str) else list(loras)
    strengths = spec.get("target_lora_strength", 1.0)
    strengths = strengths if isinstance(strengths, list) else [strengths] * len(loras)
    return [(case / name, float(s)) for name, s in zip(loras, strengths, strict=True)]


def open_case(case: Path):
    """A golden case's inputs as a Conversion (a target checkpoint, distillation LoRAs, or both)."""
    import json

    from casa_core.conversion import Conversion

    spec = json.loads((case / "case.json").read_text())
    return Conversion.open(case / spec["base"], case / spec["target"] if spec.get("target") else None,
                           case / spec["lora"], target_loras=case_target_loras(case, spec))


@pytest.fixture(scope="session")
def casa_cmd():
    """The `casa` command line as CI runs it (the installed module, this interpreter)."""
    return [sys.executable, "-m", "casa_core"]


def pytest_report_header(config):
    shared = f"{len(SHARED_GOLDEN)} more from {SHARED / 'golden'}" if (SHARED / "golden").is_dir() \
        else f"{SHARED / 'golden'} absent"
    return f"golden cases: {len(OWN_GOLDEN)} in {GOLDEN_DIR}, {shared}"


os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
