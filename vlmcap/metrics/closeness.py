"""How close a lower precision must stay to float32: one table for export verification
(export/verify.py) and the engines' precision check before a run (engines/runtime/engine_choice.py).

Vision rows are judged as the LLM sees them: the cosine similarity of each output row (one vision
token) with the float32 row, its minimum over every row, so one broken frame or token cannot hide
in an average. float32 itself is held to an absolute tolerance scaled by the output's magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    max_abs_scaled: float | None = None  # max |out - reference| / max(1, max |reference|)
    min_cosine: float | None = None  # over every output row


# Measured (`vlmcap bench vision`, docs/PERFORMANCE.md), random CLIP-L/336 + c-abstractor and the tiny preset:
# fp32: only summation order differs (1e-7 tiny, 1.5e-6 CLIP-L scaled); 1e-4 leaves a wide margin and still
#       catches any wrong op, which shows up at 1e-2 or more.
# fp16: ~11 bits of mantissa; rows measure > 0.99999 cosine. 0.999 flags a layer that overflowed.
# bf16: 8 bits of mantissa, fp32's range; OpenVINO on AMX measured 0.999991 at CLIP-L/336. 0.999 as fp16.
# int8: per-channel dynamic quantization measures 0.9996-0.9998 min row cosine; 0.99 accepts that
#       rounding but fails a quantized op that went wrong (those fall far below).
VISION_TOLERANCE = {
    "fp32": Tolerance(max_abs_scaled=1e-4),
    "fp16": Tolerance(min_cosine=0.999),
    "bf16": Tolerance(min_cosine=0.999),
    "int8": Tolerance(min_cosine=0.99),
}


def row_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row (the last axis) of `out` with the same row of `ref`."""
    ref = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    out = out.reshape(-1, out.shape[-1]).astype(np.float64)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return (ref * out).sum(axis=1) / np.maximum(denom, 1e-30)
