"""Training throughput (samples/s) with and without the feature cache, through the real trainer."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from vlmcap.config.schema import VlmcapConfig
from vlmcap.storage.run_dir import METRICS_FILE
from vlmcap.training.trainer import run_training


def _steady_samples_per_s(run_dir: Path, warmup: int = 3) -> float:
    lines = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    rates = [line["samples_per_s"] for line in lines if "samples_per_s" in line][warmup:]
    return round(statistics.median(rates), 2)


def bench_train(data: Path, config: VlmcapConfig, steps: int = 30) -> list[dict]:
    """Steady-state samples/s (median step, first 3 excluded): decoding every step vs reading the feature cache.

    Filling the cache happens before the first step, so it counts only in `wall_s` (with model loading).
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlmcap-bench-train-") as tmp:
        for label, cache in (("decode every step", False), ("feature cache", True)):
            train = {"data": str(data), "max_steps": steps, "save_every": steps, "feature_cache": cache}
            run_config = config.model_copy(update={"train": config.train.model_copy(update=train)})
            run_dir = Path(tmp) / label.split()[0]
            start = time.perf_counter()
            result = run_training(run_config, run_dir)
            rows.append(
                {
                    "mode": label,
                    "batch_size": run_config.train.batch_size,
                    "steps": result.step,
                    "samples_per_s": _steady_samples_per_s(run_dir),
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )
    return rows
