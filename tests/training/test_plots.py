"""training/plots.py: the run's curves as PNG and the numbers behind them as CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

from vlmcap.training.plots import write_training_plots


def test_curves_and_their_numbers_come_from_the_metrics_log(tmp_path: Path) -> None:
    lines = [
        {"step": s, "loss": 3.0 / s, "lr": {"projector": 1e-3 * s, "lora": 2e-4 * s}, "samples_per_s": 9.0}
        for s in (1, 2, 3, 4)
    ]
    lines.insert(2, {"step": 2, "eval": {"val": {"chrf++": 31.5, "cider_d": 0.4, "n": 8}}})
    lines.append({"step": 4, "eval": {"val": {"chrf++": 48.25, "cider_d": 0.9}, "heldout": {"chrf++": 20.0}}})
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 5, "lo'  # torn by kill -9
    (tmp_path / "metrics.jsonl").write_text(text)

    written = write_training_plots(tmp_path)
    assert [p.name for p in written] == ["metrics.csv", "loss.png", "lr.png", "eval.png"]
    rows = list(csv.DictReader((tmp_path / "plots" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == [3.0, 1.5, 1.0, 0.75]
    assert float(rows[3]["lr/lora"]) == 8e-4
    assert (rows[1]["eval/val/chrf++"], rows[3]["eval/val/chrf++"], rows[0]["eval/val/chrf++"]) == ("31.5", "48.25", "")
    assert rows[3]["eval/heldout/chrf++"] == "20.0" and "eval/val/n" not in rows[0]
    for name in ("loss.png", "lr.png", "eval.png"):
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.format == "PNG" and image.size == (700, 400)


def test_a_run_without_validation_gets_no_eval_curve(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0, "lr": {"projector": 1e-3}}) + "\n")
    assert [p.name for p in write_training_plots(tmp_path)] == ["metrics.csv", "loss.png", "lr.png"]


def test_without_matplotlib_the_numbers_are_still_written(tmp_path: Path, monkeypatch, caplog) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0, "lr": {"projector": 1e-3}}) + "\n")
    assert [p.name for p in write_training_plots(tmp_path)] == ["metrics.csv"]
    assert "matplotlib is not installed" in caplog.text
