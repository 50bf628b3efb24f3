import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
GOLDEN = sorted(p for p in (SHARED / "golden").glob("*") if (p / "case.json").is_file())


@pytest.fixture(scope="session")
def casa_cmd():
    """The `casa` command line as CI runs it (the installed module, this interpreter)."""
    return [sys.executable, "-m", "casa_core"]


def pytest_report_header(config):
    return f"shared: {SHARED} ({len(GOLDEN)} golden cases)"


os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
