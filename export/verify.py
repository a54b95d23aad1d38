"""Export verification: the shipped graphs and weights must compute what the trained model computes.

Vision: ONNX Runtime on the shipped vision.onnx against the float32 PyTorch encoder + projector,
on real sample frames, at batch 2 and batch 1 (the batch axis is dynamic).
- fp32 is held to an absolute tolerance scaled by the output's magnitude: only summation order
  differs, so anything beyond float32 round-off means a wrong graph.
- fp16 and int8 change every number, so they are judged as the LLM sees them: the cosine
  similarity of each output row (one vision token) with the float32 PyTorch row. The threshold is
  the minimum over all rows, not the mean, so one broken frame or token cannot hide in an average.

LLM: logits of the merged checkpoint against the un-merged base + adapter on the same inputs.
"""

from __future__ import annotations

import numpy as np

from vlmcap.errors import ExportError
from vlmcap.metrics.closeness import VISION_TOLERANCE, Tolerance, row_cosines

__all__ = ["VISION_TOLERANCE", "Tolerance", "check", "compare", "row_cosines"]


class RunningComparison:
    """`compare`'s statistics over arrays fed a few rows at a time (rows of the last axis whole), so
    LLM logits (0.7 GB per video at a 151,936-token vocabulary) are never all in memory at once."""

    def __init__(self) -> None:
        self.max_abs = self.sum_abs = self.ref_max_abs = self.sum_cosine = 0.0
        self.min_cosine = np.inf
        self.values = self.rows = 0
        self.finite = True

    def update(self, ref: np.ndarray, out: np.ndarray) -> RunningComparison:
        if ref.shape != out.shape:
            raise ExportError(f"output shape {out.shape} differs from the PyTorch reference {ref.shape}")
        diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
        cos = row_cosines(ref, out)
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.sum_abs += float(diff.sum())
        self.values += diff.size
        self.ref_max_abs = max(self.ref_max_abs, float(np.abs(ref).max()))
        self.min_cosine = min(self.min_cosine, float(cos.min()))
        self.sum_cosine += float(cos.sum())
        self.rows += cos.size
        self.finite = self.finite and bool(np.isfinite(out).all())
        return self

    def result(self) -> dict[str, float]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.sum_abs / max(self.values, 1),
            "ref_max_abs": self.ref_max_abs,
            "max_abs_scaled": self.max_abs / max(1.0, self.ref_max_abs),
            "min_cosine": float(self.min_cosine),
            "mean_cosine": self.sum_cosine / max(self.rows, 1),
            "finite": self.finite,
        }


def compare(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return RunningComparison().update(ref, out).result()


def check(stats: dict[str, float], tolerance: Tolerance, what: str) -> dict:
    """Raise ExportError when `stats` miss `tolerance`; returns the record bundle.json keeps."""
    failures = []
    if not stats["finite"]:
        failures.append("output has NaN or Inf")
    if tolerance.max_abs_scaled is not None and stats["max_abs_scaled"] > tolerance.max_abs_scaled:
        failures.append(f"max |diff| (scaled) {stats['max_abs_scaled']:.3g} > {tolerance.max_abs_scaled:g}")
    if tolerance.min_cosine is not None and stats["min_cosine"] < tolerance.min_cosine:
        failures.append(f"min row cosine {stats['min_cosine']:.6f} < {tolerance.min_cosine:g}")
    if failures:
        raise ExportError(f"{what}: verification failed: {'; '.join(failures)}")
    return {**stats, "tolerance": {k: v for k, v in vars(tolerance).items() if v is not None}, "passed": True}
