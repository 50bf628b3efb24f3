"""Tests of the GUI package that need no Qt: settings, entry point, messages, diagnostics, module boundaries."""

import pytest


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch):
    """Settings and logs go to tmp_path, never to the user's config."""
    monkeypatch.setenv("CASA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CASA_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "config"
