"""The run directory a training run writes, read side (docs/TRAINING.md, "Checkpoints and resume").

    <run>/config.yaml              the validated config the run trained with
    <run>/checkpoint-<step>/       projector.safetensors, adapter/ (peft), optimizer, scheduler, RNG,
                                   trainer_state.json; complete once renamed into place
    <run>/final/                   projector.safetensors, adapter/, config.yaml, trainer_state.json
    <run>/metrics.jsonl, summary.json

The training stage writes it (vlmcap.training.checkpoint); export and the CLI read it through
these functions, so neither needs the trainer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlmcap.config.loading import load_config
from vlmcap.config.schema import VlmcapConfig
from vlmcap.errors import ConfigError
from vlmcap.storage.home import runs_dir

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"
FINAL_DIR = "final"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories and ones without state are not)."""
    found = []
    for path in Path(run_dir).iterdir() if Path(run_dir).is_dir() else []:
        match = CHECKPOINT_NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_weights_dir(path: str | Path, what: str) -> Path:
    """A run directory means its final/ (or latest checkpoint); a checkpoint directory means itself."""
    p = Path(path)
    if (p / WEIGHTS_FILE).exists():
        return p
    if (p / FINAL_DIR / WEIGHTS_FILE).exists():
        return p / FINAL_DIR
    latest = latest_checkpoint(p) if p.is_dir() else None
    if latest is None:
        raise ConfigError(f"{what}={str(path)!r}: no final/ or checkpoint with {WEIGHTS_FILE} there")
    return latest


def weights_config(weights_dir: Path) -> VlmcapConfig:
    """The config a checkpoint or final/ was trained with (its own copy, else the run's)."""
    for candidate in (weights_dir / CONFIG_FILE, weights_dir.parent / CONFIG_FILE):
        if candidate.exists():
            return load_config(candidate)
    raise ConfigError(f"{weights_dir}: no {CONFIG_FILE} here or in the run directory above it")


def trained_step(weights_dir: Path) -> int | None:
    """The optimizer step the weights were saved at, when the state file says."""
    state = weights_dir / STATE_FILE
    if not state.is_file():
        return None
    try:
        return int(json.loads(state.read_text(encoding="utf-8"))["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{state}: unreadable ({type(e).__name__})") from None


def latest_run() -> Path | None:
    """The most recently modified run under VLMCAP_HOME/runs, if any."""
    root = runs_dir()
    runs = [p for p in root.glob("*") if (p / CONFIG_FILE).exists()] if root.exists() else []
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None
