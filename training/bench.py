"""Training throughput (samples/s) with and without the feature cache, through the real trainer."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from vlmcap.training.trainer import run_training

from vlmcap.config import load_config


def _steady_samples_per_s(run_dir: Path, warmup: int = 3) -> float:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [line["samples_per_s"] for line in lines if "samples_per_s" in line][warmup:]
    return round(statistics.median(rates), 2)


def bench_train(data: Path, preset: str = "tiny", steps: int = 30, overrides: tuple[str, ...] = ()) -> list[dict]:
    """Steady-state samples/s (median step, first 3 excluded): decoding every step vs reading the feature cache.

    Filling the cache happens before the first step, so it counts only in `wall_s` (with model loading).
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlmcap-bench-train-") as tmp:
        base = [f"train.data={data}", f"train.max_steps={steps}", f"train.save_every={steps}", *overrides]
        for label, extra in (
            ("decode every step", ["train.feature_cache=false"]),
            ("feature cache", ["train.feature_cache=true"]),
        ):
            config = load_config(preset=preset, overrides=[*base, *extra])
            run_dir = Path(tmp) / label.split()[0]
            start = time.perf_counter()
            result = run_training(config, run_dir)
            rows.append(
                {
                    "mode": label,
                    "batch_size": config.train.batch_size,
                    "steps": result.step,
                    "samples_per_s": _steady_samples_per_s(run_dir),
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )
    return rows
