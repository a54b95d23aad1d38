"""Decode throughput (videos/s, frames/s) per decoder and worker count, through the real worker pool."""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

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
    thumbnails: bool = False,
) -> list[dict]:
    """Decode `paths` x `repeat` with each decoder alone at each worker count; one row per combination.

    The pool is started (and its workers warmed on one video) before the clock starts, so the
    numbers are steady-state throughput, not process start-up. With `thumbnails`, each combination
    is measured again with the workers writing a contact sheet per video (`batch --thumbnails`)
    right after the run without: the cost of the sheets, and their bytes per video.
    """
    rows = []
    work = list(paths) * repeat
    with tempfile.TemporaryDirectory(prefix="vlmcap-bench-sheets-") as sheets:
        for decoder in decoders:
            if not available_decoders((decoder,)):
                continue
            options = DecodeOptions(num_frames=num_frames, decoders=(decoder,))
            for n in workers:
                for sheet_dir in (None, sheets) if thumbnails else (None,):
                    run_options = dataclasses.replace(options, thumbnail_dir=sheet_dir)
                    rows.append(_decode_row(run_options, image_spec, n, paths, work))
    return rows


def _decode_row(
    options: DecodeOptions, image_spec: ImageSpec | None, workers: int, paths: Sequence[str], work: list[str]
) -> dict:
    with DecodePool(options, image_spec=image_spec, num_workers=workers, timeout_s=120) as pool:
        list(pool.imap_unordered(list(paths)[:1] * workers))  # warm-up: start and import in every worker
        start = time.perf_counter()
        results = list(pool.imap_unordered(work))
        elapsed = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    row = {
        "decoder": options.decoders[0],
        "workers": workers,
        "videos": len(work),
        "failed": len(work) - len(ok),
        "seconds": round(elapsed, 3),
        "videos_per_s": round(len(ok) / elapsed, 2),
        "frames_per_s": round(len(ok) * options.num_frames / elapsed, 1),
        "preprocess": image_spec is not None,
        "thumbnails": options.thumbnail_dir is not None,
    }
    if options.thumbnail_dir is not None:
        sheets = {r.thumbnail for r in ok if r.thumbnail}
        row["sheet_bytes_per_video"] = round(sum(Path(s).stat().st_size for s in sheets) / max(len(sheets), 1))
    return row


def machine_description() -> dict:
    import torch

    from vlmcap.environment import cpu_description

    cpu = cpu_description()
    return {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "native_bf16": cpu["native_bf16"],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
