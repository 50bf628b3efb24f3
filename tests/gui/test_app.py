"""The entry point, settings that persist, the headless fallback and the packaging self-test."""

import json
import subprocess
import sys

from casa_core.api import TransferSettings
from casa_gui.settings_store import GuiSettings

from ..gui_noqt.env import clean_env


def test_settings_and_layout_persist_in_the_config_dir(demo_window, private_config):
    w = demo_window
    w.convert.params.spins["tau"].setValue(0.7)
    w.convert.rank.setEditText("16")
    w.export.format.setCurrentIndex(w.export.format.findData("kohya"))
    w.tabs.setCurrentIndex(2)
    w.close()
    saved = json.loads((private_config / "settings.json").read_text())
    assert saved["params"]["casa"]["tau"] == 0.7 and saved["rank"] == "16" and saved["out_format"] == "kohya"
    assert saved["lora"].endswith("lora.safetensors") and saved["recent"]["lora"][0] == saved["lora"]
    assert (private_config / "layout.ini").is_file()
    gs = GuiSettings.load()
    assert gs.params["casa"]["tau"] == 0.7 and gs.method == "casa" and gs.rank == "16"


def test_a_new_window_restores_settings_and_layout(qtbot, qapp, private_config):
    from casa_gui.main_window import MainWindow

    gs = GuiSettings(params={"casa": {"tau": 0.65, "q_act": 0.9}}, rank="32", theme="dark")
    gs.save()
    w1 = MainWindow(GuiSettings.load())
    qtbot.addWidget(w1)
    spins = w1.convert.params.spins
    assert spins["tau"].value() == 0.65 and spins["q_act"].value() == 0.9
    assert w1.convert.rank_text() == "32" and w1.export.rank.currentText() == "32"
    assert w1.state.settings == TransferSettings.of("casa", tau=0.65, q_act=0.9)
    w1.tabs.setCurrentIndex(3)
    w1.close()
    w2 = MainWindow(GuiSettings.load())
    qtbot.addWidget(w2)
    assert w2.tabs.currentIndex() == 3 and w2.gs.theme == "dark"
    w2.close()


def test_settings_of_0_1_0_are_read(private_config):
    """The first release kept CASA's thresholds at the top level of settings.json."""
    private_config.mkdir(parents=True, exist_ok=True)
    (private_config / "settings.json").write_text(json.dumps({"method": "casa", "tau": 0.3, "q_act": 0.7}))
    assert GuiSettings.load().transfer_settings() == TransferSettings.of("casa", tau=0.3, q_act=0.7)


def test_switching_method_shows_its_own_parameters(demo_window):
    w = demo_window
    spins = w.convert.params.spins
    spins["q_act"].setValue(0.6)
    w.convert.method.setCurrentIndex(w.convert.method.findData("direct"))
    assert w.state.settings == TransferSettings("direct")
    assert not any(w.convert.params.form.isRowVisible(s) for s in spins.values())   # direct takes none
    w.convert.method.setCurrentIndex(w.convert.method.findData("casa"))
    assert w.state.settings == TransferSettings.of("casa", q_act=0.6)                # its values come back
    assert all(w.convert.params.form.isRowVisible(s) for s in spins.values())


def test_dark_theme_renders(converted, qapp, tmp_path):
    from casa_gui import theme

    converted.set_theme("dark")
    try:
        assert theme.current().dark
        assert qapp.palette().color(qapp.palette().ColorRole.Window).lightness() < 100
        assert converted.heatmap.showing_view
        assert converted.grab().save(str(tmp_path / "dark.png"))
    finally:
        converted.set_theme("light")


def test_self_test_renders_every_view(tmp_path):
    out = tmp_path / "self-test.png"
    p = subprocess.run([sys.executable, "-c", "import sys; from casa_gui.app import main; sys.exit(main())",
                        "--self-test", str(out)], env=clean_env(tmp_path), capture_output=True, text=True,
                       timeout=150)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "self-test: passed" in p.stderr and "FAIL" not in p.stderr
    assert out.is_file() and out.stat().st_size > 20_000
    from PySide6.QtGui import QImage

    assert QImage(str(out)).width() <= 1366          # the screenshot of a window that fits a laptop


def test_documentation_screenshots_regenerate(tmp_path):
    from PySide6.QtGui import QPixmap

    from casa_gui.screenshots import SHOTS, make_screenshots
    from casa_gui.self_test import not_blank

    paths = make_screenshots(tmp_path)
    assert [p.stem for p in paths] == list(SHOTS)
    for p in paths:
        assert p.stat().st_size < 300_000, p
        assert not_blank(QPixmap(str(p))), p


def test_about_box_names_torch_and_device(window, monkeypatch):
    import torch
    from PySide6.QtWidgets import QMessageBox

    shown = {}
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.update(title=title, text=text))
    window.menus.show_about()
    assert torch.__version__ in shown["text"]
    assert "default device" in shown["text"] and "Logs:" in shown["text"]


def test_about_box_links_the_method_notes(demo_window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append(text))
    demo_window.menus.show_about()
    assert len(shown) == 1 and "method.md</a>" in shown[0] and "torch" in shown[0]
    assert 'href="file://' in shown[0] and "arxiv.org/abs/2605.01929" in shown[0]


def test_garbage_is_collected_from_the_gui_thread_only(window, qtbot):
    """With a window, Python's automatic collector is off and a timer in the GUI thread collects."""
    import gc

    from casa_gui import qt_compat

    assert not gc.isenabled()
    assert qt_compat._collector is not None and qt_compat._collector.timer.isActive()
