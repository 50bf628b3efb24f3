"""Bad inputs and unexpected errors: a clear message, and the app stays usable."""


from casa_core.resources import demo_inputs


def inspect(w, qtbot, base, target, lora):
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000) as blocker:
        w.sources.set_values(base, target, lora)
    qtbot.waitUntil(lambda: not w.controller.runner.busy)
    return blocker.args[0]


def test_bad_inputs_show_a_message_and_the_app_stays_usable(window, qtbot, tmp_path):
    d = {k: str(v) for k, v in demo_inputs().items()}
    cases = [
        ((str(tmp_path / "missing.safetensors"), d["target"], d["lora"]), "does not exist"),
        ((d["lora"], d["target"], d["lora"]), "looks like a LoRA"),
        ((d["base"], d["target"], d["base"]), "looks like a model checkpoint, not a LoRA"),
    ]
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    cases.append(((str(junk), d["target"], d["lora"]), "not a readable safetensors file"))
    for (base, target, lora), words in cases:
        assert inspect(window, qtbot, base, target, lora) == "failed"
        assert words in window.messages.text(), window.messages.text()
        assert words in window.sources.status.text()
        assert "Traceback" not in window.messages.text()
        assert window.controller.session.plan is None and window.table.model_.rowCount() == 0
        assert not window.controller.start_convert()                     # nothing to run, says so
        assert "sources" in window.messages.text()
    assert inspect(window, qtbot, d["base"], d["target"], d["lora"]) == "ok"
    assert window.table.model_.n_layers() == 32


def test_hub_ids_are_accepted_as_free_text(window, qtbot):
    d = {k: str(v) for k, v in demo_inputs().items()}
    # until the sources resolver lands, a repo id that is not a path is refused with the core's message
    assert inspect(window, qtbot, "Wan-AI/Wan2.1-T2V-1.3B", d["target"], d["lora"]) == "failed"
    assert window.sources.slots["base"].text() == "Wan-AI/Wan2.1-T2V-1.3B"


def test_bad_rank_is_an_inline_message(demo_window):
    demo_window.convert.rank.setEditText("lots")
    assert not demo_window.controller.start_convert()
    assert "rank must be a positive whole number" in demo_window.messages.text()


def test_dropping_files_on_the_slots_inspects(window, qtbot):
    from PySide6.QtCore import QMimeData, QUrl

    d = demo_inputs()

    class Drop:
        def __init__(self, path):
            self.md = QMimeData()
            self.md.setUrls([QUrl.fromLocalFile(str(path))])

        def mimeData(self):
            return self.md

        def acceptProposedAction(self):
            pass

    window.sources.slots["base"].dropEvent(Drop(d["base"]))
    window.sources.slots["target"].dropEvent(Drop(d["target"]))
    with qtbot.waitSignal(window.controller.inspected, timeout=30_000) as blocker:
        window.sources.slots["lora"].dropEvent(Drop(d["lora"]))      # the third input starts the inspection
    assert blocker.args == ["ok"] and window.table.model_.n_layers() == 32
    assert window.gs.recent["lora"][0] == str(d["lora"])
