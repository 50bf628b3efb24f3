"""What a hobbyist's first five minutes and a researcher's 300-layer day need (issue 15), one test or more per item."""

import csv
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from casa_core.api import THRESHOLDS
from casa_core.resources import demo_inputs
from casa_gui.layer_table import COLUMNS, TIPS, parse_blocks
from casa_gui.settings_store import GuiSettings


def col(name):
    return COLUMNS.index(name)


def shown(w, name):
    """The column's texts in the table's (sorted, filtered) order."""
    p = w.table.proxy
    return [p.data(p.index(i, col(name))) for i in range(p.rowCount())]


# ---- 2: the window fits 1366 x 768 and 1024 x 700, whatever was converted --------------------------------

def test_the_window_fits_1024_px_after_a_run_and_long_names(converted, qtbot):
    w = converted
    for size in ((1366, 768), (1024, 700)):
        w.resize(*size)
        qtbot.wait(50)
        assert w.minimumSizeHint().width() <= 1024 and (w.width(), w.height()) == size
    before = w.minimumSizeHint().width()
    w.heatmap.info.setText("x" * 400)                   # a long routing line wraps; it never widens the window
    w.state.status = "y" * 400
    w.layers_pane.pattern.setText("blocks")
    w.layers_pane.blocks.setText("0-2")
    qtbot.wait(50)
    assert w.minimumSizeHint().width() == before


# ---- 3: the wheel changes a field only when it has the focus ---------------------------------------------

def wheel(widget, down=True) -> bool:
    """One wheel notch on ``widget``; returns whether it was accepted (an ignored one goes on to the parents
    when the system sends it: a real X server, see the closing note's screenshots)."""
    pos = QPointF(widget.rect().center())
    ev = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, -120 if down else 120),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, ev)
    return ev.isAccepted()


def test_the_wheel_scrolls_the_controls_and_leaves_unfocused_fields_alone(demo_window, qtbot):
    w = demo_window
    w.resize(1024, 700)
    qtbot.wait(50)
    rank, q_act = w.convert.rank, w.convert.params.spins["q_act"]
    w.table.setFocus()
    for _ in range(3):
        assert not wheel(rank) and not wheel(q_act)     # not taken: left for the scroll area
    assert rank.currentText() == "same" and q_act.value() == 0.85
    assert rank.focusPolicy() == Qt.FocusPolicy.StrongFocus          # a turn does not give it the focus
    q_act.setFocus()
    qtbot.waitUntil(q_act.hasFocus)
    wheel(q_act)
    assert q_act.value() != 0.85                        # with the focus it is the field's


# ---- 4: export asks before overwriting; the name follows the inputs ----------------------------------------

def test_export_asks_before_replacing_a_file(converted, qtbot, tmp_path, answers):
    w = converted
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"keep me")
    w.export.path.setText(str(out))
    answers.append(False)
    assert not w.start_export()
    assert out.read_bytes() == b"keep me" and answers.asked == ["Replace the file?"]
    assert "Nothing was written" in w.messages.text()
    with qtbot.waitSignal(w.controller.exported, timeout=30_000):
        assert w.start_export()                         # unanswered: yes
    assert out.stat().st_size > 1000 and answers.asked == ["Replace the file?"] * 2


def test_the_suggested_file_name_follows_the_lora_and_target(demo_window, qtbot, tmp_path):
    w = demo_window
    assert Path(w.export.output()).name == "lora-target-casa.safetensors"
    other = tmp_path / "steamboat.safetensors"
    shutil.copy(demo_inputs()["lora"], other)
    d = demo_inputs()
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000):
        w.sources.set_values(str(d["base"]), str(d["target"]), str(other))
    assert Path(w.export.output()).name == "steamboat-target-casa.safetensors"
    typed = str(tmp_path / "mine.safetensors")
    w.export.path.setText(typed)                        # a name the user chose stays
    qtbot.waitUntil(lambda: not w.controller.runner.busy, timeout=30_000)
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000):
        w.sources.set_values(str(d["base"]), str(d["target"]), str(d["lora"]))
    assert w.export.output() == typed


# ---- 5: quiet validation while typing; ask before discarding results -----------------------------------

def test_leaving_a_half_typed_path_shows_no_error(window, qtbot, tmp_path):
    d = demo_inputs()
    w = window
    w.sources.slots["base"].set_text(str(d["base"]), emit=False)
    w.sources.slots["target"].set_text(str(d["target"]), emit=False)
    line = w.sources.slots["lora"].combo.lineEdit()
    line.setFocus()
    qtbot.waitUntil(line.hasFocus)
    qtbot.keyClicks(line, str(tmp_path / "lora.saf"))   # still typing
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000) as blocker:
        w.sources.slots["base"].combo.lineEdit().setFocus()     # focus moves on: a quiet check
    assert blocker.args == ["failed"]
    assert not w.messages.isVisible() and "Not ready yet" in w.sources.status.text()
    assert w.sources.status.styleSheet() == ""         # not red
    line.setFocus()
    qtbot.waitUntil(line.hasFocus)
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000) as blocker:
        qtbot.keyClick(line, Qt.Key.Key_Return)         # Enter: the user is done, errors show
    assert blocker.args == ["failed"] and w.messages.kind == "error" and "does not exist" in w.messages.text()


def test_new_inputs_ask_before_discarding_converted_layers(converted, qtbot, tmp_path, answers):
    w = converted
    results = dict(w.controller.session.results)
    inputs = w.controller.session.inputs
    other = tmp_path / "other.safetensors"
    shutil.copy(demo_inputs()["lora"], other)
    answers.append(False)
    w.sources.slots["lora"].set_text(str(other))        # a pick: asks
    assert answers.asked == ["Discard the converted layers?"]
    assert w.controller.session.results == results and w.sources.values() == inputs     # kept, and so are the paths
    w.sources.slots["lora"].combo.setEditText(str(other))
    w.sources._edited("lora", str(other))               # leaving the field with new text: a note, nothing lost
    assert answers.asked == ["Discard the converted layers?"] and w.controller.session.results == results
    assert "press Enter or Inspect" in w.sources.status.text()
    w.sources.slots["lora"].combo.setEditText(inputs[2])
    w.sources._edited("lora", inputs[2])                 # edited back to what was inspected: nothing happens
    assert len(answers.asked) == 1 and w.controller.session.results == results
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000):
        w.sources.request()                             # Inspect: asks again (same inputs too); yes
    assert answers.asked == ["Discard the converted layers?"] * 2 and not w.controller.session.results


# ---- 6: verdict per layer and for the model; tooltips; the help page -------------------------------------

def test_every_layer_and_the_model_get_a_verdict_with_reasons(converted):
    w = converted
    m = w.table.model_
    verdicts = shown(w, "Verdict")
    assert len(verdicts) == 32 and set(verdicts) <= {"good", "check", "poor"}
    i = m.index(0, col("Verdict"))
    tip = m.data(i, Qt.ItemDataRole.ToolTipRole)
    assert "energy kept by the rank" in tip and "drift" in tip
    assert m.data(i, Qt.ItemDataRole.BackgroundRole) is not None
    assert w.layers_pane.verdict.text().startswith("Model: ")
    assert "layers good" in w.layers_pane.verdict.toolTip()
    for c, name in enumerate(COLUMNS):                  # a tooltip on every column's header
        assert m.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole) == TIPS[name]


def test_help_explains_the_numbers_in_the_app(window, qtbot):
    window.menus.show_numbers()
    dlg = window.menus._numbers
    qtbot.waitUntil(dlg.isVisible)
    text = dlg.browser.toPlainText()
    assert "What the numbers mean" in text and "{thresholds}" not in text
    for t in THRESHOLDS:
        assert t.label in text and f"{t.good:g}" in text
    dlg.close()


# ---- 7: close asks during a run; Convert resumes after Cancel ---------------------------------------------

def test_close_during_a_run_asks_first(demo_window, qtbot, slow_layers, answers):
    w = demo_window
    w.controller.start_convert()
    qtbot.waitUntil(lambda: len(w.controller.session.results) >= 1, timeout=30_000)
    answers.append(False)
    assert not w.close()                                # No: the window and its run stay
    assert answers.asked == ["Stop the running job?"] and w.isVisible() and w.controller.runner.busy
    assert w.close()                                    # Yes: stops and closes
    assert not w.controller.runner.busy


def test_convert_after_cancel_resumes_from_the_layers_done(demo_window, qtbot, slow_layers):
    w = demo_window
    ctl = w.controller
    with qtbot.waitSignal(ctl.run_finished, timeout=30_000) as blocker:
        ctl.start_convert()
        qtbot.waitUntil(lambda: len(ctl.session.results) >= 4, timeout=30_000)
        ctl.cancel()
    assert blocker.args == ["cancelled"]
    done = dict(ctl.session.results)
    n = len(done)
    assert 4 <= n < 32
    fresh, progress = [], []
    ctl.result_ready.connect(fresh.append)
    ctl.progress.connect(lambda *a: progress.append(a))
    with qtbot.waitSignal(ctl.run_finished, timeout=60_000) as blocker:
        assert ctl.start_convert()
    assert blocker.args == ["succeeded"] and ctl.session.complete
    assert len(fresh) == 32 - n and not {r.name for r in fresh} & set(done)      # only the rest was computed
    assert all(ctl.session.results[m] is r for m, r in done.items())
    assert progress[0][:2] == (n, 32) and progress[-1][:2] == (32, 32)
    assert w.convert.progress.format() == "layer 32/32"


# ---- 9: sort, filter, full values, CSV ----------------------------------------------------------------

def test_the_table_sorts_filters_and_exports_csv(converted, tmp_path):
    w = converted
    w.table.sortByColumn(col("Energy kept"), Qt.SortOrder.DescendingOrder)
    energies = [float(v) for v in shown(w, "Energy kept")]
    assert energies == sorted(energies, reverse=True)
    w.table.sortByColumn(col("Layer"), Qt.SortOrder.AscendingOrder)          # back to the network's order
    assert shown(w, "Layer") == [lp.module for lp in w.controller.session.plan.layers]
    pane = w.layers_pane
    pane.pattern.setText(r"ffn\.\d")
    assert shown(w, "Layer") == [f"blocks.{b}.ffn.{x}" for b in range(3) for x in (0, 2)]
    pane.pattern.setText("(")                           # not a pattern: marked, the filter is off
    assert "c0392b" in pane.pattern.styleSheet() and len(shown(w, "Layer")) == 32
    pane.pattern.setText("")
    pane.blocks.setText("1-2")
    assert all(m.startswith(("blocks.1.", "blocks.2.")) for m in shown(w, "Layer")) and len(shown(w, "Layer")) == 20
    pane.part.setCurrentIndex(pane.part.findData("self_attn"))
    assert shown(w, "Layer") == [f"blocks.{b}.self_attn.{x}" for b in (1, 2) for x in "qkvo"]
    assert pane.count.text() == "8/32"
    w.state.select("blocks.2.self_attn.q")
    w.table.step(+1)
    assert w.state.selected == "blocks.2.self_attn.k"      # the arrows walk the rows shown
    out = w.export_table(tmp_path / "layers.csv")
    rows = list(csv.DictReader(out.open()))
    assert [r["Layer"] for r in rows] == shown(w, "Layer") and "Verdict reasons" in rows[0]
    res = w.controller.session.results["blocks.1.self_attn.q"]
    assert float(rows[0]["Energy kept"]) == res.energy_kept          # full precision
    assert rows[0]["k"] == str(res.diagnostics.k)
    assert (rows[0]["Block"], rows[0]["Module type"]) == ("1", "self_attn.q")
    assert parse_blocks("1, 4, 10-12") == {1, 4, 10, 11, 12} and parse_blocks(" ") is None
    with pytest.raises(ValueError):
        parse_blocks("one")


def test_columns_are_wide_enough_for_their_values(converted):
    t = converted.table
    fm = t.fontMetrics()
    for name in ("k", "Capped", "Energy kept", "Drift"):
        assert t.columnWidth(col(name)) >= fm.horizontalAdvance("0.00000"), name
    assert not t.tabKeyNavigation()                     # 13: Tab leaves the table
    dock = converted.layers_dock                        # 9: the table floats off as a window of its own
    assert dock.features() & dock.DockWidgetFeature.DockWidgetFloatable
    dock.setFloating(True)
    assert dock.isFloating() and dock.widget() is converted.layers_pane
    dock.setFloating(False)


# ---- 10: the block x module grid --------------------------------------------------------------------------

def test_the_overview_grid_follows_the_plan_and_opens_a_layer(converted):
    w = converted
    ov = w.overview
    assert ov.grid_blocks == [0, 1, 2] and ov.grid_parts[:4] == ["self_attn.q", "self_attn.k", "self_attn.v",
                                                                  "self_attn.o"]
    assert ov.grid_img.image.shape == (3, 10)
    ov.figure.setCurrentIndex(ov.figure.findData("capped"))
    res = w.controller.session.results["blocks.1.ffn.2"]
    assert ov.grid_img.image[1, ov.grid_parts.index("ffn.2")] == res.diagnostics.n_capped
    ov.figure.setCurrentIndex(ov.figure.findData("verdict"))
    assert set(np.unique(ov.grid_img.image)) <= {0.0, 1.0, 2.0}
    w.tabs.setCurrentWidget(ov)
    pos = ov.grid_plot.vb.mapViewToScene(QPointF(ov.grid_parts.index("cross_attn.v") + 0.5, 2.5))
    ov._grid_clicked(type("Ev", (), {"scenePos": lambda self: pos})())
    assert w.state.selected == "blocks.2.cross_attn.v"
    # the bars read the method's figures (they were blank before)
    assert np.nanmax(ov.values["capped"]) > 0 and np.nanmax(ov.values["dominant_share"]) > 0


# ---- 11: heatmaps: linked square axes, index ticks, capped overlay, themes --------------------------------

def test_heatmaps_share_axes_and_tick_the_cells(converted):
    from casa_gui.plots.common import IndexAxis

    h = converted.heatmap
    p0 = h.plots[0]
    for p in h.plots[1:]:
        assert p.vb.linkedView(0) is p0.vb and p.vb.linkedView(1) is p0.vb
        assert p.vb.state["aspectLocked"]
    axis = p0.getAxis("bottom")
    assert isinstance(axis, IndexAxis) and axis.step == h.current_view().step
    (spacing, values), = axis.tickValues(-3.0, 60.0, 400)
    assert values[0] == 0.5 and all(float(v - 0.5).is_integer() for v in values)    # cell centres
    assert values[-1] < axis.extent and axis.tickStrings(values, 1, spacing)[0] == "0"
    axis.step = 12
    (spacing, values), = axis.tickValues(0.0, 1536.0, 300)
    assert spacing % 12 == 0 and values[0] == 6.0


def test_many_capped_entries_are_drawn_as_a_density():
    import pyqtgraph as pg

    from casa_gui.plots.heatmap import MAX_CAPPED_DOTS, capped_overlay

    few = np.zeros((40, 40))
    few[3, 4] = 1
    dots = capped_overlay(few, 1, "#111111", 300)
    assert isinstance(dots, pg.ScatterPlotItem) and dots.opts["size"] <= 6
    many = np.random.default_rng(0).random((128, 128))
    assert (many > 0).sum() > MAX_CAPPED_DOTS
    shade = capped_overlay(many, 12, "#111111", 300)
    assert isinstance(shade, pg.ImageItem) and shade.image[..., 3].max() <= 0.3 * 255
    assert capped_overlay(np.zeros((4, 4)), 1, "#111111", 300) is None


def test_a_theme_switch_keeps_the_plot_titles(converted):
    from casa_gui import theme

    w = converted
    titles = [p.titleLabel.text for p in w.heatmap.plots]
    try:
        w.set_theme("dark")
        for p, t in zip(w.heatmap.plots, titles, strict=True):
            assert p.titleLabel.text == t and p.titleLabel.opts["color"] == theme.DARK.foreground
    finally:
        w.set_theme("light")


# ---- 12: plot export --------------------------------------------------------------------------------------

def test_exported_heatmaps_are_drawn_at_their_own_size(converted, tmp_path):
    from PySide6.QtGui import QImage

    w = converted
    w.resize(1024, 700)
    before = w.size()
    path = w.heatmap.export_png(tmp_path / "h.png")
    img = QImage(str(path))
    assert img.width() >= 3 * 400 and w.size() == before          # the window is left as it was
    assert w.heatmap._export_twin.isHidden() or w.heatmap._export_twin.testAttribute(
        Qt.WidgetAttribute.WA_DontShowOnScreen)


def test_the_current_view_of_every_layer_in_the_filter_is_exported(converted, tmp_path):
    w = converted
    w.layers_pane.pattern.setText("ffn")
    w.tabs.setCurrentWidget(w.spectra)
    selected = w.spectra.result
    paths = w.tabs.export_current_view(tmp_path, w.table.visible_modules(), w.controller.session.results)
    assert sorted(p.name for p in paths) == sorted(f"blocks.{b}.ffn.{x}-spectra.png" for b in range(3) for x in (0, 2))
    assert w.spectra.result is selected                             # the window shows its layer again


# ---- 13: keyboard -------------------------------------------------------------------------------------------

def test_plot_tabs_and_export_from_the_keyboard(converted, qtbot, tmp_path):
    w = converted
    w.table.setFocus()
    qtbot.waitUntil(w.table.hasFocus)
    w.tabs.setCurrentIndex(0)
    qtbot.keyClick(w.table, Qt.Key.Key_PageDown, Qt.KeyboardModifier.ControlModifier)
    assert w.tabs.currentIndex() == 1
    qtbot.keyClick(w.table, Qt.Key.Key_Tab, Qt.KeyboardModifier.ControlModifier)
    assert w.tabs.currentIndex() == 2
    qtbot.keyClick(w.table, Qt.Key.Key_PageUp, Qt.KeyboardModifier.ControlModifier)
    assert w.tabs.currentIndex() == 1
    n = w.tabs.indexOf(w.overview) + 1
    qtbot.keyClick(w.table, getattr(Qt.Key, f"Key_{n}"), Qt.KeyboardModifier.AltModifier)
    assert w.tabs.currentWidget() is w.overview
    out = tmp_path / "keys.safetensors"
    w.export.path.setText(str(out))
    w.export.path.setFocus()
    qtbot.waitUntil(w.export.path.hasFocus)
    with qtbot.waitSignal(w.controller.exported, timeout=30_000):
        qtbot.keyClick(w.export.path, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)   # a field has the focus
    assert out.is_file()


# ---- 14: small things ------------------------------------------------------------------------------------

def test_no_stale_hover_or_progress(converted, qtbot):
    w = converted
    w.heatmap.hover.setText("C_lora  (i, j) = (2, 3)  value +0.1")
    w.state.select("blocks.1.ffn.0")
    assert w.heatmap.hover.text().strip() == ""
    assert w.convert.progress.format() == "layer 32/32"
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000):
        w.sources.request()                             # the same inputs inspected again
    assert w.convert.progress.format() == "idle" and w.convert.eta.text() == ""


def test_failed_paths_stay_out_of_the_recent_lists(window, qtbot, tmp_path):
    d = {k: str(v) for k, v in demo_inputs().items()}
    missing = str(tmp_path / "gone.safetensors")
    with qtbot.waitSignal(window.controller.inspected, timeout=30_000) as blocker:
        window.sources.set_values(missing, d["target"], d["lora"])
    assert blocker.args == ["failed"] and missing not in window.gs.recent["base"]
    qtbot.waitUntil(lambda: not window.controller.runner.busy)
    with qtbot.waitSignal(window.controller.inspected, timeout=30_000) as blocker:
        window.sources.set_values(d["base"], d["target"], d["lora"])
    assert blocker.args == ["ok"] and window.gs.recent["base"][0] == d["base"]


def test_open_folder_says_where_the_file_is_without_a_file_manager(converted, qtbot, tmp_path, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    w = converted
    out = tmp_path / "here.safetensors"
    w.export.path.setText(str(out))
    with qtbot.waitSignal(w.controller.exported, timeout=30_000):
        w.start_export()
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)
    w.export.open_btn.click()
    assert "No file manager" in w.messages.text() and str(out) in w.messages.text()


def test_restored_paths_are_inspected_at_start_up(qtbot, qapp):
    from casa_gui.main_window import MainWindow

    d = {k: str(v) for k, v in demo_inputs().items()}
    w = MainWindow(GuiSettings(base=d["base"], target=d["target"], lora=d["lora"]))
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.controller.inspected, timeout=30_000) as blocker:
        w.show()
    assert blocker.args == ["ok"] and w.table.model_.n_layers() == 32
    qtbot.waitUntil(lambda: not w.controller.runner.busy, timeout=30_000)
    t0 = time.perf_counter()
    w.close()
    assert time.perf_counter() - t0 < 5


def test_the_cluster_map_uses_its_width_for_the_cluster_sizes(converted):
    w = converted
    w.state.select("blocks.0.ffn.0")
    c = w.clusters
    res = w.controller.session.results["blocks.0.ffn.0"]
    heights = c._size_bars.opts["height"]
    assert int(np.sum(heights)) == res.views.k and len(heights) == res.diagnostics.n_clusters
