"""`casa batch --executor ray`: the same outputs, byte for byte, from Ray tasks on a local Ray instance."""

import pytest

from casa_core import cli
from tests.core.test_batch import inputs  # noqa: F401  (the fixture)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_outputs_equal_the_local_run(inputs, local_ray, tmp_path):  # noqa: F811
    import json

    outs = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        out.mkdir()
        rc = cli.main(["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--target",
                       str(inputs["slow"]), "--lora", str(inputs["lib"]), "--lora",
                       str(tmp_path / "missing.safetensors"), "--chunk", "2", "--output-dir", str(out),
                       "--device", "cpu", "-q", "--executor", executor])
        assert rc == 1     # the missing LoRA
        outs[executor] = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
        summary = json.loads((out / "batch-summary.json").read_text())
        assert summary["counts"]["written"] == 6 and summary["counts"]["failed"] == 2
        assert summary["executor"] == executor
    assert outs["ray"] == outs["local"] and len(outs["ray"]) == 6
    # a rerun on Ray skips what is complete
    assert cli.main(["batch", "--base", str(inputs["base"]), "--target", str(inputs["fast"]), "--lora",
                     str(inputs["lib"]), "--output-dir", str(tmp_path / "ray"), "--device", "cpu", "-q",
                     "--executor", "ray"]) == 0
    summary = json.loads((tmp_path / "ray" / "batch-summary.json").read_text())
    assert summary["counts"]["skipped"] == 3 and summary["counts"]["written"] == 0
