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

from dataclasses import dataclass

import numpy as np

from vlmcap.errors import ExportError


@dataclass(frozen=True)
class Tolerance:
    max_abs_scaled: float | None = None  # max |onnx - torch| / max(1, max |torch|)
    min_cosine: float | None = None  # over every output row


# Measured (`vlmcap bench vision`, docs/PERFORMANCE.md), random CLIP-L/336 + c-abstractor and the tiny preset:
# fp32: only summation order differs (1e-7 tiny, 1.5e-6 CLIP-L scaled); 1e-4 leaves a wide margin and still
#       catches any wrong op, which shows up at 1e-2 or more.
# fp16: ~11 bits of mantissa; rows measure > 0.99999 cosine. 0.999 flags a layer that overflowed.
# int8: per-channel dynamic quantization measures 0.9996-0.9998 min row cosine; 0.99 accepts that
#       rounding but fails a quantized op that went wrong (those fall far below).
VISION_TOLERANCE = {
    "fp32": Tolerance(max_abs_scaled=1e-4),
    "fp16": Tolerance(min_cosine=0.999),
    "int8": Tolerance(min_cosine=0.99),
}


def row_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    ref = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    out = out.reshape(-1, out.shape[-1]).astype(np.float64)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return (ref * out).sum(axis=1) / np.maximum(denom, 1e-30)


def compare(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    if ref.shape != out.shape:
        raise ExportError(f"output shape {out.shape} differs from the PyTorch reference {ref.shape}")
    diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
    cos = row_cosines(ref, out)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "ref_max_abs": float(np.abs(ref).max()),
        "max_abs_scaled": float(diff.max() / max(1.0, float(np.abs(ref).max()))),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "finite": bool(np.isfinite(out).all()),
    }


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
