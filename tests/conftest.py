"""Shared fixtures: an isolated VLMCAP_HOME and the tiny offline model, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Everything vlmcap writes by default (presets, runs, engines) goes under a per-session folder.
_SESSION_HOME = Path(os.environ.get("VLMCAP_TEST_HOME", "")) if os.environ.get("VLMCAP_TEST_HOME") else None


@pytest.fixture(scope="session", autouse=True)
def vlmcap_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = _SESSION_HOME or tmp_path_factory.mktemp("vlmcap-home")
    os.environ["VLMCAP_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_config():
    from vlmcap.config import load_config

    return load_config(preset="tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    from vlmcap.model import VideoLanguageModel

    return VideoLanguageModel.from_config(tiny_config)
