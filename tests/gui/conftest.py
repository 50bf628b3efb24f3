"""GUI tests: offscreen Qt, demo inputs, and a throw-away config/log dir per test."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch):
    """Settings, layout and logs go to tmp_path, never to the user's config."""
    monkeypatch.setenv("CASA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CASA_LOG_DIR", str(tmp_path / "logs"))
    # the windows of earlier tests are collected now, on this (the GUI) thread, not in the middle of this
    # test's run, where a collection of a whole window's cycles stalls the event loop for a second
    import gc

    gc.collect()
    return tmp_path / "config"


@pytest.fixture(autouse=True)
def answers(monkeypatch):
    """The window's yes / no questions, answered without a dialog: ``answers.append(False)`` says No to the
    next one; unanswered questions get Yes. ``answers.asked`` lists the titles asked."""
    from casa_gui.main_window import MainWindow

    class Answers(list):
        asked: list

    given = Answers()
    given.asked = []

    def ask(self, title, text):
        given.asked.append(title)
        return given.pop(0) if given else True

    monkeypatch.setattr(MainWindow, "ask", ask)
    return given


@pytest.fixture
def window(qtbot, qapp):
    from casa_gui import theme
    from casa_gui.main_window import MainWindow
    from casa_gui.settings_store import GuiSettings

    theme.apply(qapp, "light")
    win = MainWindow(GuiSettings())
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    yield win
    if win.controller.runner.busy:
        win.controller.runner.stop()


@pytest.fixture
def demo_window(window, qtbot):
    """The window with the demo inputs inspected (plan ready, drift read)."""
    with qtbot.waitSignal(window.controller.inspected, timeout=30_000) as blocker:
        window.open_demo()
    assert blocker.args == ["ok"], window.messages.text()
    qtbot.waitUntil(lambda: not window.controller.runner.busy, timeout=30_000)
    return window


def convert(window, qtbot, timeout=50_000):
    with qtbot.waitSignal(window.controller.run_finished, timeout=timeout) as blocker:
        assert window.controller.start_convert()
    assert blocker.args == ["succeeded"], window.messages.text()
    qtbot.waitUntil(lambda: not window.controller.runner.busy, timeout=5_000)


@pytest.fixture
def converted(demo_window, qtbot):
    convert(demo_window, qtbot)
    return demo_window


@pytest.fixture
def slow_layers(monkeypatch):
    """Make each layer take >= 0.15 s so a test can act in the middle of a run."""
    from casa_core.conversion import Conversion

    real = Conversion.layers

    def slow(self, settings, options, cancel=None, **kw):
        for res in real(self, settings, options, cancel, **kw):
            time.sleep(0.15)
            yield res

    monkeypatch.setattr(Conversion, "layers", slow)
    return slow


def worker_threads():
    """Python threads the core or the GUI started that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("casa-")]
