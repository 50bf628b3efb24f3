import os


def clean_env(tmp_path, **extra):
    """This process's environment without a display, with config and logs under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(CASA_CONFIG_DIR=str(tmp_path / "cfg"), CASA_LOG_DIR=str(tmp_path / "logs"), **extra)
    return env
