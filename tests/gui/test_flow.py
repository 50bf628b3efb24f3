"""The whole flow on the demo inputs: pick, run, select, override one layer, export, compare with the CLI."""

import json
import threading

import pytest
import torch
from PySide6.QtCore import Qt
from safetensors import safe_open

from casa_core.conversion import Conversion
from casa_core.resources import demo_inputs
from casa_core.settings import RunOptions, TransferSettings
from casa_gui.layer_table import COLUMNS

from .conftest import convert

OVERRIDE = COLUMNS.index("Override")


def read_all(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


def cli_output(tmp_path, rank):
    """What `casa convert --demo -o X --rank N` writes (the same function the CLI runs)."""
    d = demo_inputs()
    conv = Conversion.open(str(d["base"]), str(d["target"]), str(d["lora"]))
    out = tmp_path / "cli.safetensors"
    conv.convert(out, TransferSettings(), RunOptions(rank=rank, view_size=0), cancel=threading.Event())
    return out


def test_inspection_fills_the_layer_table(demo_window):
    w = demo_window
    model = w.table.model_
    assert model.n_layers() == 32 == len(w.controller.session.plan.layers)
    assert all(r.status == "will transfer" for r in model.rows)
    assert len(w.controller.session.drift) == 32 and all(0 < v < 0.1 for v in w.controller.session.drift.values())
    assert "32 layers will transfer" in w.sources.status.text()
    assert w.table.current_module() == "text_embedding.0"          # the network's order: embeddings first


def test_run_select_and_export_matches_cli(demo_window, qtbot, tmp_path):
    w = demo_window
    w.convert.rank.setEditText("4")
    assert w.export.rank.currentText() == "4"           # one rank, shown in both panels
    convert(w, qtbot)
    assert w.controller.session.complete
    assert w.convert.progress.value() == 32 and w.convert.progress.format() == "layer 32/32"
    first = w.state.selected
    qtbot.keyClick(w, Qt.Key.Key_Down, Qt.KeyboardModifier.ControlModifier)     # next layer
    assert w.state.selected != first and w.state.selected == w.controller.session.plan.layers[1].module
    assert w.heatmap.result is w.controller.session.results[w.state.selected]
    w.state.select("blocks.1.ffn.0")
    assert w.table.current_module() == "blocks.1.ffn.0" and w.spectra.result.name == "blocks.1.ffn.0"
    assert all(r.rank_out == 4 for r in w.controller.session.results.values())

    out = tmp_path / "gui.safetensors"
    w.export.path.setText(str(out))
    with qtbot.waitSignal(w.controller.exported, timeout=30_000):
        qtbot.keyClick(w, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert out.is_file() and "kB" in w.export.summary.text() and w.export.open_btn.isEnabled()
    assert out.with_suffix(".report.json").is_file()

    gui, gmeta = read_all(out)
    cli, cmeta = read_all(cli_output(tmp_path, 4))
    assert gui.keys() == cli.keys()
    for k in cli:
        assert gui[k].dtype == cli[k].dtype and torch.equal(gui[k], cli[k]), k
    for k in ("casa.settings", "casa.rank", "casa.overrides", "casa.method", "casa.layout"):
        assert gmeta[k] == cmeta[k], k


def test_one_layer_override_rearbitrates_without_new_svd(converted, qtbot, tmp_path, monkeypatch):
    w = converted
    module = "blocks.0.ffn.0"
    w.state.select(module)
    # selecting a converted layer caches its spectra in the background ...
    s = w.controller.session
    qtbot.waitUntil(lambda: s.has_analysis(module, s.run_options, s.run_settings), timeout=30_000)
    qtbot.waitUntil(lambda: not w.controller.runner.busy)
    # ... so re-arbitrating it never runs a new SVD
    calls = []
    monkeypatch.setattr("casa_core.conversion.analyse_pair", lambda *a, **k: calls.append(a) or pytest.fail("new SVD"))
    before = w.controller.session.results[module]
    other_before = w.controller.session.results["blocks.0.ffn.2"]
    w.override.params.spins["q_act"].setValue(0.3)
    with qtbot.waitSignal(w.controller.rearbitrated, timeout=30_000):
        qtbot.mouseClick(w.override.layer_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.controller.runner.busy)
    after = w.controller.session.results[module]
    assert after.settings.params.q_act == 0.3 and after.diagnostics.n_capped > before.diagnostics.n_capped
    assert w.heatmap.result is after and w.risk.result is after        # the plots follow
    assert w.controller.session.results["blocks.0.ffn.2"] is other_before          # other layers untouched
    assert w.controller.session.overrides[module].params.q_act == 0.3
    assert w.override.list.count() == 1 and module in w.override.list.item(0).text()
    assert "q_act 0.3" in w.table.model_.data(w.table.model_.index(w.table.model_.row_of(module), OVERRIDE))

    # a second change on the same layer uses the same cache
    w.override.params.spins["tau"].setValue(0.9)
    with qtbot.waitSignal(w.controller.rearbitrated, timeout=30_000):
        w.override.layer_btn.click()
    qtbot.waitUntil(lambda: not w.controller.runner.busy)
    assert not calls and w.controller.session.results[module].settings.params.tau == 0.9

    out = tmp_path / "over.safetensors"
    w.export.path.setText(str(out))
    with qtbot.waitSignal(w.controller.exported, timeout=30_000):
        assert w.start_export()
    qtbot.waitUntil(lambda: not w.controller.runner.busy)
    _, meta = read_all(out)
    assert json.loads(meta["casa.overrides"])[module]["q_act"] == 0.3
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["overrides"][module]["tau"] == 0.9
    assert report["layers"][module]["settings"]["q_act"] == 0.3

    # removing the override brings the global result back
    w.override.list.setCurrentRow(0)
    with qtbot.waitSignal(w.controller.rearbitrated, timeout=30_000):
        w.override.remove_btn.click()
    qtbot.waitUntil(lambda: not w.controller.runner.busy)
    assert module not in w.controller.session.overrides and w.override.list.count() == 0
    assert w.controller.session.results[module].diagnostics.n_capped == before.diagnostics.n_capped


def test_apply_to_all_layers_reruns_with_new_global_thresholds(converted, qtbot):
    w = converted
    w.state.select("blocks.2.self_attn.v")
    before = {m: r.diagnostics.n_capped for m, r in w.controller.session.results.items()}
    w.override.params.spins["q_act"].setValue(0.5)
    with qtbot.waitSignal(w.controller.run_finished, timeout=50_000) as blocker:
        w.override.all_btn.click()
    assert blocker.args == ["succeeded"]
    assert w.convert.params.spins["q_act"].value() == 0.5 and w.controller.session.run_settings.params.q_act == 0.5
    after = {m: r.diagnostics.n_capped for m, r in w.controller.session.results.items()}
    assert sum(after.values()) > sum(before.values())


def test_export_reruns_when_settings_changed(converted, qtbot, tmp_path):
    w = converted
    w.export.rank.setEditText("2")                  # results were made at the input's rank
    out = tmp_path / "r2.safetensors"
    w.export.path.setText(str(out))
    with qtbot.waitSignal(w.controller.exported, timeout=50_000):
        assert w.start_export()
    tensors, _ = read_all(out)
    assert all(t.shape[0] == 2 for k, t in tensors.items() if k.endswith("lora_A.weight"))


def test_views_show_data_and_hover(converted, qtbot):
    w = converted
    w.state.select("blocks.0.ffn.2")
    res = w.controller.session.results["blocks.0.ffn.2"]
    h = w.heatmap
    assert h.showing_view and h.images[0].image.shape == res.views.top.c_lora.shape
    lo, hi = h.images[2].levels
    assert hi == -lo > 0                                   # symmetric around 0
    h.set_region("full")
    assert h.images[0].image.shape == res.views.full.c_lora.shape
    rect = h.images[0].mapRectToView(h.images[0].boundingRect())
    assert rect.width() == res.views.full.step * res.views.full.c_lora.shape[1]    # axes in real indices
    p = h.plots[0]
    h._hover(p.vb.mapViewToScene(pg_point(3.5, 2.5)))              # hover shows (i, j) and the value
    assert h.hover.text().startswith("C_lora  (i, j) = (2, 3)  value ")
    assert w.clusters.showing_view and "clusters" in w.clusters.info.text()
    assert w.spectra.showing_view and len(w.spectra.plot.listDataItems()) == 3
    assert w.risk.showing_view
    w.tabs.setCurrentWidget(w.overview)
    assert w.overview.showing_view and len(w.overview.modules) == 32
    # clicking a bar opens that layer
    bar_plot = w.overview.plots[0]
    w.overview._clicked(type("Ev", (), {"scenePos": lambda self: bar_plot.vb.mapViewToScene(pg_point(7, 0.1))})())
    assert w.state.selected == w.controller.session.plan.layers[7].module


def test_export_plots_as_png(converted, tmp_path):
    paths = converted.tabs.export_plots(tmp_path / "plots")
    # routing, clusters, spectra, risk, rank, overview (Compare only once two methods were compared)
    assert len(paths) == 6 and all(p.is_file() and p.stat().st_size > 2000 for p in paths)


def pg_point(x, y):
    from PySide6.QtCore import QPointF

    return QPointF(x, y)


def test_an_override_may_change_the_layers_method(converted, qtbot):
    """The override panel lists the registry's methods; a layer may run another one."""
    w = converted
    module = "blocks.0.ffn.0"
    w.state.select(module)
    qtbot.waitUntil(lambda: not w.controller.runner.busy, timeout=30_000)
    assert w.heatmap.info.text().startswith(module)
    w.override.method.setCurrentIndex(w.override.method.findData("direct"))
    assert not any(w.override.params.form.isRowVisible(s) for s in w.override.params.spins.values())
    with qtbot.waitSignal(w.controller.rearbitrated, timeout=30_000):
        w.override.layer_btn.click()
    qtbot.waitUntil(lambda: not w.controller.runner.busy)
    res = w.controller.session.results[module]
    assert res.method == "direct" and res.views is None and res.diagnostics is None
    assert w.controller.session.overrides[module] == TransferSettings("direct")
    assert "direct method draws no routing" in w.heatmap.message.text() and w.heatmap.info.text() == ""
    row = w.table.model_.row_of(module)
    assert w.table.model_.data(w.table.model_.index(row, COLUMNS.index("k"))) == "–"     # no k for this method
    assert w.table.model_.data(w.table.model_.index(row, COLUMNS.index("Energy kept"))) == "–"   # nothing cut
    assert "Direct" in w.table.model_.data(w.table.model_.index(row, OVERRIDE))
