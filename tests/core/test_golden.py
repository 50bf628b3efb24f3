"""Every golden case in ../shared/golden through the real `casa convert` command."""

import importlib.util
import shlex
import sys

import pytest

from tests.conftest import GOLDEN, SHARED


def _checker():
    spec = importlib.util.spec_from_file_location("check_golden", SHARED / "tools" / "check_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_golden_cases_exist():
    assert len(GOLDEN) >= 2, f"expected the golden cases under {SHARED / 'golden'}"


@pytest.mark.parametrize("precision", ["float64", None], ids=["float64", "default"])
@pytest.mark.parametrize("case", GOLDEN, ids=[c.name for c in GOLDEN])
def test_golden(case, precision):
    """float64 matches to 1e-6 per layer, the default precision to 2e-2; pass-through keys byte-identical."""
    ok, msg = _checker().check(str(case), precision, shlex.join([sys.executable, "-m", "casa_core"]), [])
    assert ok, msg
