"""Training curves where people look: loss, learning rates and eval metrics of a run, as PNG and CSV.

Written into RUN_DIR/plots/ from the run's metrics.jsonl (the trainer's own log, so a resumed run's
curves are the uninterrupted run's), refreshed at every evaluation and at the end of training:
`metrics.csv` (one row per step, the numbers behind every curve), `loss.png`, `lr.png` and, once a
validation set was scored, `eval.png`. Each file is replaced whole (written beside it, renamed).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
from pathlib import Path
from typing import Any

from vlmcap.storage.files import atomic_write_bytes, atomic_write_text
from vlmcap.storage.run_dir import METRICS_FILE

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
EVAL_METRICS = ("chrf++", "cider_d")


def _records(run_dir: Path) -> list[dict[str, Any]]:
    records = []
    path = run_dir / METRICS_FILE
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by kill -9; the trainer trims it on resume
    return records


def _columns(records: list[dict[str, Any]]) -> tuple[list[str], dict[int, dict[str, float]]]:
    """CSV columns and the rows by step: loss, `lr/GROUP`, `eval/SPLIT/METRIC`."""
    rows: dict[int, dict[str, float]] = {}
    names: list[str] = []
    for record in records:
        row = rows.setdefault(int(record["step"]), {})
        values: dict[str, Any] = {}
        if "loss" in record:
            values["loss"] = record["loss"]
            values |= {f"lr/{group}": lr for group, lr in (record.get("lr") or {}).items()}
        for split, metrics in (record.get("eval") or {}).items():
            values |= {f"eval/{split}/{m}": metrics[m] for m in EVAL_METRICS if metrics.get(m) is not None}
        for name, value in values.items():
            if name not in names:
                names.append(name)
            row[name] = value
    return names, rows


def _png(series: dict[str, tuple[list[int], list[float]]], ylabel: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit on a server
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for label, (steps, values) in series.items():
        axes.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if len(series) > 1:
        axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_training_plots(run_dir: Path) -> list[Path]:
    """Write RUN_DIR/plots/ from RUN_DIR/metrics.jsonl; returns the files written.

    Without matplotlib (a dependency, but absent where scripts/gpu-check runs from a bare checkout)
    only the CSV is written, with a warning: curves must never end a training run.
    """
    names, rows = _columns(_records(run_dir))
    out = run_dir / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["step", *names])
    for step in sorted(rows):
        writer.writerow([step, *(rows[step].get(name, "") for name in names)])
    atomic_write_text(out / "metrics.csv", text.getvalue())
    written = [out / "metrics.csv"]

    def series(prefix: str) -> dict[str, tuple[list[int], list[float]]]:
        chosen = {}
        for name in names:
            if name == prefix or name.startswith(prefix + "/"):
                steps = [s for s in sorted(rows) if name in rows[s]]
                chosen[name.removeprefix(prefix + "/") or name] = (steps, [rows[s][name] for s in steps])
        return chosen

    if importlib.util.find_spec("matplotlib") is None:
        log.warning("%s: matplotlib is not installed; wrote metrics.csv but no curves", out)
        return written
    for file, prefix, label in (
        ("loss.png", "loss", "training loss"),
        ("lr.png", "lr", "learning rate"),
        ("eval.png", "eval", "validation score (chrF++, CIDEr-D)"),
    ):
        curves = series(prefix)
        if curves:
            atomic_write_bytes(out / file, _png(curves, label))
            written.append(out / file)
    return written
