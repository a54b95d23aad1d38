"""This machine's limits, measured in the same sitting as a benchmark: the "% of the limit" a stage
reaches is its achieved rate over these, not over a datasheet (a CPU's peak depends on its vector
units, its clocks and what else runs).

- GEMM: a square matrix product per precision through torch (oneDNN: AMX tiles for bf16 and int8
  where the CPU has them, AVX-512 or AVX2 otherwise); int8 through `torch._int_mm` (int32 sums);
- memory: a large copy, bytes read plus bytes written per second (what a decode step that reads every
  weight once is bound by).
"""

from __future__ import annotations

import time
from typing import Any

import torch

GEMM_SIZE = 2048  # large enough to leave the caches, small enough to take a second on 2 cores
COPY_BYTES = 512 << 20


def _best_seconds(fn, repeat: int) -> float:
    fn()  # warm-up: first-call allocation and kernel selection
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_peak(precision: str, threads: int, size: int = GEMM_SIZE, repeat: int = 3) -> float | None:
    """Achieved multiply-add operations per second (x2) of one size x size product at `precision`
    (fp32, bf16, int8) on `threads` threads; None where this torch has no such kernel."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if precision == "int8":
            a = torch.randint(-128, 128, (size, size), dtype=torch.int8)
            b = torch.randint(-128, 128, (size, size), dtype=torch.int8)
            seconds = _best_seconds(lambda: torch._int_mm(a, b), repeat)
        else:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
            a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
            seconds = _best_seconds(lambda: a @ b, repeat)
    except RuntimeError:  # no int8 matmul on this build or CPU
        return None
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / seconds


def memory_bandwidth(threads: int, nbytes: int = COPY_BYTES, repeat: int = 3) -> float:
    """Bytes per second of a `nbytes` copy (read + write) on `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = torch.ones(nbytes // 4)
        dst = torch.empty_like(src)
        seconds = _best_seconds(lambda: dst.copy_(src), repeat)
    finally:
        torch.set_num_threads(previous)
    return 2 * nbytes / seconds


def machine_limits(threads: int) -> dict[str, Any]:
    """GEMM rates per precision and the memory bandwidth, on `threads` threads (what one engine has)."""
    gemm = {p: gemm_peak(p, threads) for p in ("fp32", "bf16", "int8")}
    return {
        "threads": threads,
        "gemm_tflops": {p: round(v / 1e12, 4) if v else None for p, v in gemm.items()},
        "memory_gb_per_s": round(memory_bandwidth(threads) / 1e9, 2),
    }
