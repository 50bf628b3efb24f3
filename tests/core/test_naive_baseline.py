"""The benchmark's straightforward baseline implements the same rule (golden cases, float64)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import GOLDEN, open_case

naive = pytest.importorskip("benchmarks.naive")


# the methods the straightforward implementation has (the rule and its ablations), as its flags
NAIVE_FLAGS = {"casa": {}, "casa-no-clusters": {"singleton_clusters": True}, "casa-uniform": {"uniform": True},
               "casa-no-capping": {"no_capping": True}}
RULE_CASES = [c for c in GOLDEN if json.loads((c / "case.json").read_text()).get("method", "casa") in NAIVE_FLAGS]


@pytest.mark.parametrize("case", RULE_CASES, ids=[c.name for c in RULE_CASES])
def test_naive_matches_golden(case):
    c = json.loads((case / "case.json").read_text())
    flags = NAIVE_FLAGS[c.get("method", "casa")]
    plan = open_case(case).plan
    expected = load_file(case / "expected.safetensors")
    for lp in plan.layers:
        key = f"{lp.module}.weight"
        D = naive.naive_update(plan.base.read(key), plan.target.read(key), plan.lora.read(lp.pair.up_key),
                               plan.lora.read(lp.pair.down_key), lp.scale, dtype=torch.float64, **flags)
        e = expected[lp.module].double()
        assert float((D - e).norm() / e.norm()) < 1e-6, lp.module
