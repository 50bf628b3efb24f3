"""Research views: every registered method offered, what a layer does in the table, the rank page, and two
methods side by side."""

import numpy as np


def test_every_registered_method_is_offered(window):
    from casa_core.api import methods

    combo = window.convert.method
    offered = [combo.itemData(i) for i in range(combo.count())]
    assert offered == list(methods.names())
    compare = window.tabs.compare.first
    assert [compare.itemData(i) for i in range(compare.count())] == list(methods.names())


def test_the_table_and_the_rank_page_show_what_a_layer_does(converted, qtbot, tmp_path):
    from casa_gui.layer_table import COLUMNS

    w = converted
    model = w.table.model_
    row = model.row_of(w.state.selected)
    res = w.controller.session.results[w.state.selected]
    text = {c: model.data(model.index(row, COLUMNS.index(c))) for c in COLUMNS}
    assert text["LoRA restored"] == f"{res.effect.lora_restored_share:.2f}"
    assert text["Drift undone"] == f"{res.effect.drift_undone:.3f}"
    assert 0 < float(text["LoRA reused"]) < 1
    assert np.isfinite(w.overview.values["dominant_share"]).all() and (w.overview.values["capped"] > 0).all()
    w.tabs.setCurrentWidget(w.tabs.rank)
    page = w.tabs.rank
    qtbot.waitUntil(lambda: page.showing_view, timeout=5_000)
    assert "needs rank" in page.needs.text() and "MB in 16-bit" in page.needs.text()
    page.fraction.setValue(0.999)
    assert "needs rank" in page.needs.text() or "more than rank" in page.needs.text()
    assert page.export_png(tmp_path / "rank.png").stat().st_size > 0


def test_two_methods_side_by_side(converted, qtbot, tmp_path):
    w = converted
    page = w.tabs.compare
    page.first.setCurrentIndex(page.first.findData("casa"))
    page.second.setCurrentIndex(page.second.findData("direct"))
    w.tabs.setCurrentWidget(page)
    with qtbot.waitSignal(w.controller.compared_changed, timeout=60_000):
        page.go.click()
    qtbot.waitUntil(lambda: not w.controller.runner.busy, timeout=10_000)
    compared = w.controller.session.compared
    assert set(compared) == {"casa", "direct"}
    assert all(len(v) == len(w.controller.session.plan.layers) for v in compared.values())
    module = w.state.selected
    a, b = (compared[m][module].routing[0] for m in ("casa", "direct"))
    assert a.shape == b.shape and not np.allclose(a, b)
    assert page.images[2].image is not None and np.allclose(page.images[2].image, a - b)
    assert "relative difference" in page.hover.text()
    # the conversion's own results (the table) are untouched by a comparison
    assert w.controller.session.results[module].method == "casa"
    assert page.export_png(tmp_path / "compare.png").stat().st_size > 0
    assert any(p.name.endswith("-compare.png") for p in w.tabs.export_plots(tmp_path / "plots"))


def test_the_auto_rank_from_the_app(demo_window, qtbot):
    from tests.gui.conftest import convert

    w = demo_window
    w.convert.rank.setEditText("auto:0.99")
    convert(w, qtbot)
    results = list(w.controller.session.results.values())
    assert all(r.rank_capped is not None for r in results)
    assert all(r.energy_kept >= 0.99 - 1e-9 or r.rank_capped for r in results)
    assert any(r.rank_out > r.rank_in for r in results)
