"""The one timer of every micro-benchmark (`vlmcap bench vision|llm|stages`, scripts/gpu-check).

A call is timed `repeat` times after `warmup` untimed calls (allocations, kernel selection, a CUDA
context, vLLM's compilation), and on a GPU the device is synchronized before each clock read, so
the time is of the work, not of the launches. The median is the number reported: one slow call
(another process, a page fault) moves a mean but not a median; min and max show the spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    seconds: tuple[float, ...]  # each timed call

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.05 means the calls were within 5% of each other."""
        return (max(self.seconds) - min(self.seconds)) / self.median_s if self.median_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": round(self.median_s, 6),
            "min_s": round(min(self.seconds), 6),
            "max_s": round(max(self.seconds), 6),
            "repeat": len(self.seconds),
        }


def synchronizer(device: Any) -> Callable[[], None]:
    """What waits for `device` ("cuda", "cuda:1", a torch.device, or None/"cpu": nothing to wait for)."""
    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if kind != "cuda":
        return lambda: None
    import torch  # only a GPU run needs it; the decode benchmark times without torch

    return lambda: torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1, device: Any = None) -> Timing:
    """Time `fn()` `repeat` times after `warmup` calls, synchronizing `device` around each."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    sync = synchronizer(device)
    for _ in range(warmup):
        fn()
    sync()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))
