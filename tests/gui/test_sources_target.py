"""The target slot: a checkpoint, distillation LoRAs with strengths, or both; the expert of two-expert models."""

import json

from casa_gui.settings_store import GuiSettings
from tests.conftest import GOLDEN_DIR
from tests.core import factories

from .conftest import convert

CASE = GOLDEN_DIR / "target-lora-distill-comfy"
BASE, DISTILL, LORA = CASE / "base.safetensors", CASE / "distill.safetensors", CASE / "lora.safetensors"


def _inspect(window, qtbot, **kw):
    with qtbot.waitSignal(window.controller.inspected, timeout=30_000) as blocker:
        window.sources.set_values(kw.pop("base", str(BASE)), kw.pop("target", ""), kw.pop("lora", str(LORA)), **kw)
    qtbot.waitUntil(lambda: not window.controller.runner.busy, timeout=30_000)
    return blocker.args[0]


def test_distillation_loras_on_the_base(window, qtbot):
    assert _inspect(window, qtbot, target_loras=[f"{DISTILL}:0.8"]) == "ok", window.messages.text()
    plan = window.controller.session.plan
    stacked = plan.describe()["target"]["distillation_loras"]
    assert [(d["name"], d["strength"]) for d in stacked] == [("distill.safetensors", 0.8)]
    status = window.sources.status.text()
    assert plan.target.on_base and "26 layers will transfer" in status
    assert "1 distillation LoRA (distill.safetensors x0.8)" in status
    assert len(window.controller.session.drift) == 26
    convert(window, qtbot)      # with the spectra the GUI asks for: the target's from the low-rank drift
    res = window.controller.session.results["blocks.0.self_attn.q"]
    assert res.views.sigma_target is not None and len(window.controller.session.results) == 26


def test_a_checkpoint_and_two_distillation_loras(window, qtbot, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt.safetensors"
    save_file(factories.drifted(load_file(str(BASE)), 4), str(ckpt))
    window.sources.stack.add(str(DISTILL), 0.5)
    assert window.sources.stack.entries() == [f"{DISTILL}:0.5"]
    assert _inspect(window, qtbot, target=str(ckpt), target_loras=[str(DISTILL), f"{DISTILL}:0.25"]) == "ok"
    target = window.controller.session.plan.target
    assert not target.on_base and [d.strength for d in target.loras] == [1.0, 0.25]


def test_dropped_files_are_added(window, qtbot):
    from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    slot = window.sources.stack
    slot.set_entries([f"{DISTILL}:0.5"])
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(DISTILL))])
    event = QDropEvent(QPoint(5, 5), Qt.DropAction.CopyAction, md, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    slot.dropEvent(event)
    assert slot.entries() == [f"{DISTILL}:0.5", str(DISTILL)]


def test_a_bad_strength_is_one_line(window, qtbot):
    assert _inspect(window, qtbot, target_loras=[f"{DISTILL}:nan"]) == "failed"
    assert "not a finite number" in window.sources.status.text()


def test_expert_choice_offered_for_two_expert_models(window, qtbot, tmp_path):
    root = tmp_path / "A14B"
    t = factories.model_tensors(0)
    for folder in ("high_noise_model", "low_noise_model"):
        factories.write_model(t, root / folder, folder="transformer")
    lora = factories.write_lora(factories.lora_factors(t, 1), tmp_path / "style.safetensors")
    src = window.sources
    src.set_values("", "", "", inspect=False, target_loras=[], expert="")
    assert not src.expert.isVisible()
    assert _inspect(window, qtbot, base=str(root), target=str(root), lora=str(lora)) == "failed"
    assert src.expert.isVisible() and "holds two experts" in src.status.text()
    assert _inspect(window, qtbot, base=str(root), target=str(root), lora=str(lora), expert="low") == "ok"
    assert window.controller.session.plan.base.expert == "low" and "layout, low expert" in src.status.text()


def test_the_target_slot_is_remembered(window, tmp_path):
    window.sources.set_values(str(BASE), "", str(LORA), inspect=False, target_loras=[f"{DISTILL}:0.7"],
                              expert="high")
    gs = GuiSettings()
    window.sources.save_settings(gs)
    path = tmp_path / "settings.json"
    gs.save(path)
    again = GuiSettings.load(path)
    assert again.target_loras == [f"{DISTILL}:0.7"] and again.expert == "high" and again.target == ""
    assert json.loads(path.read_text())["target_loras"] == [f"{DISTILL}:0.7"]


def test_set_entries_is_no_edit(window, qtbot):
    """Entries set by the program (restored settings, a batch output, a file added) are not 'edited' again
    when the field loses the focus; entries typed since are."""
    slot = window.sources.stack
    slot.set_entries([f"{DISTILL}:0.5"])
    with qtbot.assertNotEmitted(slot.edited):
        slot.edit.editingFinished.emit()
    slot.edit.setText(f"{DISTILL}:0.25")
    with qtbot.waitSignal(slot.edited, timeout=1_000):
        slot.edit.editingFinished.emit()
