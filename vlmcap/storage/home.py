"""Where vlmcap keeps its runs, engines and materialized presets (docs/MODEL.md, "Where things live")."""

import os
from pathlib import Path


def vlmcap_home() -> Path:
    """`$VLMCAP_HOME`, default `~/.cache/vlmcap`."""
    return Path(os.environ.get("VLMCAP_HOME", Path.home() / ".cache" / "vlmcap")).expanduser()


def runs_dir() -> Path:
    return vlmcap_home() / "runs"


def default_engine_dir() -> Path:
    return vlmcap_home() / "engines" / "default"


def presets_dir() -> Path:
    return vlmcap_home() / "presets"
