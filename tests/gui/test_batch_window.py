"""The batch queue window: LoRAs and targets in, per-output status and results out, cancel, inspect."""

import time

from tests.core import factories as fx

from .conftest import convert


def _inputs(tmp_path):
    t = fx.model_tensors(1, blocks=1)
    base = fx.write_model(t, tmp_path / "base.safetensors")
    fast = fx.write_model(fx.drifted(t, 2), tmp_path / "fast.safetensors")
    lib = tmp_path / "loras"
    lib.mkdir()
    for i, name in enumerate(("one", "two")):
        fx.write_lora(fx.lora_factors(t, 10 + i), lib / f"{name}.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    return base, fast, lib, out


def _batch_window(window, tmp_path):
    base, fast, lib, out = _inputs(tmp_path)
    bw = window.open_batch()
    bw.base.setText(str(base))
    bw.add_targets([str(fast)])
    bw.add_loras([str(lib), str(lib / "one.safetensors")])       # a folder, and a LoRA given twice
    bw.output_dir.setText(str(out))
    return bw, out


def test_batch_queue_runs_and_shows_each_output(window, qtbot, tmp_path):
    window.state.device = "cpu"
    bw, out = _batch_window(window, tmp_path)
    assert bw.lora_paths() == [str(tmp_path / "loras" / "one.safetensors"), str(tmp_path / "loras" / "two.safetensors")]
    with qtbot.waitSignal(bw.finished, timeout=60_000) as blocker:
        assert bw.start()
    assert blocker.args == ["succeeded"], bw.note.text()
    qtbot.waitUntil(lambda: not bw.runner.busy, timeout=5_000)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["one-fast.safetensors", "two-fast.safetensors"]
    rows = [[bw.table.item(r, c).text() for c in range(4)] for r in range(bw.table.rowCount())]
    assert [r[:3] for r in rows] == [["one", "fast", "written"], ["two", "fast", "written"]]
    assert rows[0][3].endswith("one-fast.safetensors")
    assert "2 written" in bw.note.text() and bw.progress.value() == 100
    # the same output again is complete already
    with qtbot.waitSignal(bw.finished, timeout=60_000):
        assert bw.start()
    qtbot.waitUntil(lambda: not bw.runner.busy, timeout=5_000)
    assert [bw.table.item(r, 2).text() for r in range(2)] == ["skipped", "skipped"]
    bw.force.setChecked(True)
    with qtbot.waitSignal(bw.finished, timeout=60_000):
        assert bw.start()
    qtbot.waitUntil(lambda: not bw.runner.busy, timeout=5_000)
    assert [bw.table.item(r, 2).text() for r in range(2)] == ["written", "written"]
    bw.force.setChecked(False)
    # an output opens in the main window, with its own LoRA and target, and is converted there (its views)
    bw.table.selectRow(1)
    with qtbot.waitSignal(window.controller.run_finished, timeout=60_000) as blocker:
        assert bw.inspect_selected()
    assert blocker.args == ["succeeded"], window.messages.text()
    assert window.sources.values() == (bw.base.text(), str(tmp_path / "fast.safetensors"),
                                       str(tmp_path / "loras" / "two.safetensors"))
    assert window.controller.session.conversion.complete
    qtbot.waitUntil(lambda: not window.controller.runner.busy, timeout=5_000)


def test_batch_queue_cancel_leaves_no_partial_file(window, qtbot, tmp_path, monkeypatch):
    from casa_core.batch import Batch

    real = Batch._layer

    def slow(self, work, compute):
        time.sleep(0.2)
        return real(self, work, compute)

    monkeypatch.setattr(Batch, "_layer", slow)
    window.state.device = "cpu"
    bw, out = _batch_window(window, tmp_path)
    assert bw.start()
    qtbot.waitUntil(lambda: "layer" in bw.note.text(), timeout=30_000)
    assert bw.table.item(0, 2).text() == "computing" and bw.table.item(0, 3).text().startswith("layer ")
    with qtbot.waitSignal(bw.finished, timeout=60_000) as blocker:
        bw.cancel()
    assert blocker.args == ["cancelled"]
    qtbot.waitUntil(lambda: not bw.runner.busy, timeout=5_000)
    assert sorted(p.name for p in out.iterdir()) == ["batch-summary.json"]
    assert {bw.table.item(r, 2).text() for r in range(2)} == {"cancelled"}
    assert "nothing partial" in bw.note.text()


def test_an_output_not_inspected_is_not_converted_later(window, qtbot, tmp_path, answers):
    """Inspecting an output the main window does not take (the user keeps its converted layers, or a job
    runs there) leaves nothing behind: a later inspection of other inputs converts nothing unasked."""
    window.state.device = "cpu"
    bw, _ = _batch_window(window, tmp_path)
    with qtbot.waitSignal(bw.finished, timeout=60_000) as blocker:
        assert bw.start()
    assert blocker.args == ["succeeded"], bw.note.text()
    qtbot.waitUntil(lambda: not bw.runner.busy, timeout=5_000)
    ctl = window.controller
    with qtbot.waitSignal(ctl.inspected, timeout=30_000):
        window.open_demo()
    qtbot.waitUntil(lambda: not ctl.runner.busy, timeout=30_000)
    convert(window, qtbot)
    demo = ctl.session.inputs
    bw.table.selectRow(0)
    answers.append(False)                   # keep the converted layers
    assert not bw.inspect_selected()
    assert answers.asked == ["Discard the converted layers?"] and ctl.session.inputs == demo
    assert ctl.start_convert()              # a job runs in the main window
    assert not bw.inspect_selected()
    with qtbot.waitSignal(ctl.run_finished, timeout=60_000):
        ctl.cancel()
    qtbot.waitUntil(lambda: not ctl.runner.busy, timeout=5_000)
    with qtbot.waitSignal(ctl.inspected, timeout=30_000) as blocker:
        window.open_demo()
    assert blocker.args == ["ok"]
    qtbot.waitUntil(lambda: not ctl.runner.busy, timeout=30_000)
    qtbot.wait(100)
    assert not ctl.runner.busy and not ctl.session.results


def test_batch_queue_says_what_is_missing(window):
    bw = window.open_batch()
    bw.base.setText("")
    assert not bw.start()
    assert "no base model" in bw.note.text()


def test_dropping_files_adds_loras_and_targets(window, qtbot, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    base, fast, lib, _ = _inputs(tmp_path)
    bw = window.open_batch()
    for widget, paths in ((bw.loras, [lib]), (bw.targets, [fast])):
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        ev = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                        Qt.KeyboardModifier.NoModifier)
        widget.dropEvent(ev)
    assert bw.lora_paths() == [str(lib / "one.safetensors"), str(lib / "two.safetensors")]
    assert [(t.label, t.path) for t in bw.target_specs()][-1] == ("fast", str(fast))


def test_a_target_of_distillation_loras_runs_and_opens_in_the_main_window(window, qtbot, tmp_path):
    """A target given as the base plus a distillation LoRA: the output is what a single conversion onto
    that stack writes, and inspecting it opens the same stack in the main window."""
    from safetensors.torch import load_file

    from casa_core.api import Conversion
    from tests.conftest import GOLDEN_DIR

    case = GOLDEN_DIR / "target-lora-distill-comfy"
    window.state.device = "cpu"
    bw = window.open_batch()
    bw.base.setText(str(case / "base.safetensors"))
    bw.add_target_loras([str(case / "distill.safetensors")])
    bw.targets.item(0, 2).setText(f"{case / 'distill.safetensors'}:0.8")
    bw.add_loras([str(case / "lora.safetensors")])
    bw.output_dir.setText(str(tmp_path))
    [target] = bw.target_specs()
    assert target.path is None and target.loras == ((str(case / "distill.safetensors"), 0.8),)
    with qtbot.waitSignal(bw.finished, timeout=60_000) as blocker:
        assert bw.start()
    assert blocker.args == ["succeeded"], bw.note.text()
    qtbot.waitUntil(lambda: not bw.runner.busy, timeout=5_000)
    written = load_file(str(tmp_path / "lora-distill.safetensors"))

    single = tmp_path / "single.safetensors"
    conv = Conversion.open(str(case / "base.safetensors"), None, str(case / "lora.safetensors"),
                           target_loras=[(str(case / "distill.safetensors"), 0.8)])
    conv.convert(str(single), window.state.settings, window.state.run_options())
    expected = load_file(str(single))
    assert written.keys() == expected.keys()
    assert all(torch_equal(written[k], expected[k]) for k in expected)

    bw.table.selectRow(0)
    with qtbot.waitSignal(window.controller.run_finished, timeout=60_000) as blocker:
        assert bw.inspect_selected()
    assert blocker.args == ["succeeded"], window.messages.text()
    assert window.sources.values()[1] == ""
    assert window.sources.stack.entries() == [f"{case / 'distill.safetensors'}:0.8"]
    qtbot.waitUntil(lambda: not window.controller.runner.busy, timeout=5_000)


def test_a_strength_that_is_not_a_number_is_refused_before_work(window, tmp_path):
    bw = window.open_batch()
    bw.base.setText(str(tmp_path / "base.safetensors"))
    bw.output_dir.setText(str(tmp_path))
    bw.add_target_loras([str(tmp_path / "distill.safetensors")])
    bw.targets.item(0, 2).setText(f"{tmp_path / 'distill.safetensors'}:nan")
    assert not bw.start()
    assert "not a finite number" in bw.note.text()
    assert not list(tmp_path.glob("*.safetensors"))


def torch_equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and torch.equal(a, b)
