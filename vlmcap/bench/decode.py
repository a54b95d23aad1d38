"""Decode throughput (videos/s, frames/s) per decoder and worker count, through the real worker pool."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

from vlmcap.video.decoders import DecodeOptions, available_decoders
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.pool import DecodePool


def bench_decode(
    paths: Sequence[str],
    decoders: Sequence[str] = ("decord", "pyav"),
    workers: Sequence[int] = (1, 2),
    num_frames: int = 8,
    repeat: int = 3,
    image_spec: ImageSpec | None = None,
) -> list[dict]:
    """Decode `paths` x `repeat` with each decoder alone at each worker count; one row per combination.

    The pool is started (and its workers warmed on one video) before the clock starts, so the
    numbers are steady-state throughput, not process start-up.
    """
    rows = []
    work = list(paths) * repeat
    for decoder in decoders:
        if not available_decoders((decoder,)):
            continue
        options = DecodeOptions(num_frames=num_frames, decoders=(decoder,))
        for n in workers:
            with DecodePool(options, image_spec=image_spec, num_workers=n, timeout_s=120) as pool:
                list(pool.imap_unordered(list(paths)[:1] * n))  # warm-up: start and import in every worker
                start = time.perf_counter()
                results = list(pool.imap_unordered(work))
                elapsed = time.perf_counter() - start
            ok = sum(r.ok for r in results)
            rows.append(
                {
                    "decoder": decoder,
                    "workers": n,
                    "videos": len(work),
                    "failed": len(work) - ok,
                    "seconds": round(elapsed, 3),
                    "videos_per_s": round(ok / elapsed, 2),
                    "frames_per_s": round(ok * num_frames / elapsed, 1),
                    "preprocess": image_spec is not None,
                }
            )
    return rows


def machine_description() -> dict:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
