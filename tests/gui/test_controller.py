"""The controller without a window, the context each job carries, and the one selected layer."""


from casa_core.resources import demo_inputs


def test_controller_runs_the_demo_without_widgets(qtbot):
    from casa_gui.controller import Controller, LayerInfo
    from casa_gui.state import AppState

    state = AppState()
    ctl = Controller(state)
    seen = {"plan": [], "results": [], "layers": [], "jobs": []}
    ctl.plan_changed.connect(seen["plan"].append)
    ctl.result_ready.connect(seen["results"].append)
    ctl.layer_changed.connect(seen["layers"].append)
    state.job_changed.connect(seen["jobs"].append)
    d = demo_inputs()
    with qtbot.waitSignal(ctl.inspected, timeout=30_000) as blocker:
        assert ctl.inspect(str(d["base"]), str(d["target"]), str(d["lora"]))
    assert blocker.args == ["ok"]
    first = ctl.session.plan.layers[0].module
    assert seen["plan"][0] is None and seen["plan"][-1] is ctl.session.plan
    assert state.selected == first                  # the controller picks the first layer
    qtbot.waitUntil(lambda: not ctl.runner.busy, timeout=30_000)
    with qtbot.waitSignal(ctl.run_finished, timeout=50_000) as blocker:
        assert ctl.start_convert()
        assert state.job == "conversion" and state.running
    assert blocker.args == ["succeeded"] and ctl.session.complete
    assert {r.name for r in seen["results"]} == {lp.module for lp in ctl.session.plan.layers}
    info = seen["layers"][-1]
    assert isinstance(info, LayerInfo) and info.module == first and info.tunable
    assert info.result is ctl.session.results[first]
    assert "inspection" in seen["jobs"] and "conversion" in seen["jobs"] and state.job in ("", "layer cache")
    qtbot.waitUntil(lambda: not ctl.runner.busy, timeout=30_000)
    ctl.shutdown()


def test_a_run_keeps_the_settings_it_was_started_with(demo_window, qtbot, slow_layers):
    w = demo_window
    ctl, state = w.controller, w.state
    started = state.settings
    with qtbot.waitSignal(ctl.run_finished, timeout=50_000) as blocker:
        assert ctl.start_convert()
        qtbot.waitUntil(lambda: len(ctl.session.results) >= 2, timeout=30_000)
        w.convert.params.spins["q_act"].setValue(0.4)               # changed while the run goes on
        assert state.settings.params.q_act == 0.4
    assert blocker.args == ["succeeded"]
    assert ctl.session.run_settings == started and ctl.session.run_settings.params.q_act == 0.85
    assert {r.settings.params.q_act for r in ctl.session.results.values()} == {0.85}
    w.convert.params.spins["q_dom"].setValue(0.45)                  # a change after the run says it is not applied
    assert w.status.text().startswith("Settings changed since the last run")
    for obj in (w, ctl):
        assert not [k for k in vars(obj) if k.startswith("_pending") or k.endswith("_after_run")]


def test_an_override_lands_on_the_layer_it_was_asked_for(converted, qtbot):
    w = converted
    ctl, state = w.controller, w.state
    a, b = "blocks.0.ffn.0", "blocks.1.ffn.2"
    state.select(a)
    qtbot.waitUntil(lambda: not ctl.runner.busy, timeout=30_000)
    before_b = ctl.session.results[b]
    with qtbot.waitSignal(ctl.rearbitrated, timeout=30_000) as blocker:
        assert ctl.apply_override(a, ctl.session.run_settings.with_(q_act=0.3))
        state.select(b)                             # the user moves on before the job is done
    assert blocker.args == [a]
    assert set(ctl.session.overrides) == {a} and ctl.session.overrides[a].params.q_act == 0.3
    assert ctl.session.results[a].settings.params.q_act == 0.3 and ctl.session.results[b] is before_b
    assert w.override.module == b and w.heatmap.result is before_b      # the views still show b
    assert w.override.list.count() == 1 and a in w.override.list.item(0).text()


def test_an_export_writes_where_and_how_it_was_started(converted, qtbot, tmp_path):
    w = converted
    ctl, state = w.controller, w.state
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    state.output = str(first)
    assert w.export.path.text() == str(first)      # the panel follows the state
    with qtbot.waitSignal(ctl.exported, timeout=30_000) as blocker:
        assert ctl.start_export(report=False)
        w.export.path.setText(str(second))          # a new path typed while writing
        assert state.output == str(second)
    assert blocker.args[0].path == first and first.is_file()
    assert not second.exists() and not first.with_suffix(".report.json").exists()
    assert w.export.export_dir == str(tmp_path)


def test_the_selected_layer_lives_in_the_state_only(converted, qtbot):
    w = converted
    state = w.state
    layers = [lp.module for lp in w.controller.session.plan.layers]
    assert not hasattr(w, "selected") and not hasattr(w.controller, "selected")
    state.select(layers[5])                         # the state drives every view
    assert w.table.current_module() == layers[5] and w.overview.selected == 5
    assert w.heatmap.result.name == w.spectra.result.name == w.risk.result.name == layers[5]
    assert w.override.module == layers[5]
    w.table.setCurrentIndex(w.table.proxy.mapFromSource(w.table.model_.index(w.table.model_.row_of(layers[9]), 0)))
    assert state.selected == layers[9] and w.overview.selected == 9 and w.clusters.result.name == layers[9]
    w.overview.layer_clicked.emit(layers[2])        # and so does the overview
    assert state.selected == layers[2] and w.table.current_module() == layers[2]
    assert w.override.layer_label.text().startswith(f"<b>{layers[2]}</b>")


def test_a_report_that_cannot_be_written_says_so(converted, qtbot, tmp_path):
    w = converted
    out = tmp_path / "lora.safetensors"
    out.with_suffix(".report.json").mkdir()         # the report's name is taken by a folder
    w.export.path.setText(str(out))
    with qtbot.waitSignal(w.controller.exported, timeout=30_000):
        assert w.start_export()                     # the panel's box asks for the report
    assert out.is_file()
    assert w.messages.kind == "error" and "The LoRA was written, but not its report" in w.messages.text()
