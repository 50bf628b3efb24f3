"""Every tensor the demo and the golden cases write, in each format, is byte-identical to the record.

The record (output_digests.json) was made on main before the redesign; see digests.py.
"""

import json

import pytest

from casa_core import cli
from tests.core import digests

RECORDED = json.loads(digests.RECORD.read_text())
CASES = digests.cases()


def test_every_case_is_recorded():
    assert sorted(RECORDED) == sorted(name for name, _ in CASES)


@pytest.mark.parametrize("name,args", CASES, ids=[name for name, _ in CASES])
def test_tensors_unchanged(name, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.safetensors"
    assert cli.main(["convert", *args, "--device", "cpu", "-q", "--output", str(out)]) == 0
    got = digests.tensor_digests(out)
    want = RECORDED[name]
    assert sorted(got) == sorted(want), "the output holds other keys than before"
    changed = [k for k in want if got[k] != want[k]]
    assert not changed, f"{len(changed)} tensors differ (first: {changed[:3]})"
