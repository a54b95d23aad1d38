"""`vlmcap bench batch`: the batch pipeline against the naive loop LLaVA-style scripts run.

Naive baseline, one video at a time in one process: decode (decord/PyAV in-process), preprocess,
PyTorch encoder + projector, transformers `generate` with batch size 1. Pipeline: what
`vlmcap batch` runs (decode workers, ONNX Runtime, the chosen LLM engine, batches, overlap).
Both use the same bundle, videos and greedy settings; engine start-up is timed separately, since
it is paid once per run, not per video. The captions of both are compared as a sanity check.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmcap.engines.captioner import Captioner, EngineOptions, cpu_threads_per_engine
from vlmcap.engines.llm import GenerationParams
from vlmcap.engines.llm_transformers import TransformersEngine
from vlmcap.engines.pipeline import BatchOptions, run_batch
from vlmcap.engines.vision import TorchVisionEngine
from vlmcap.export.bundle import Bundle

from vlmcap.video.decoders import DecodeOptions, decode_video
from vlmcap.video.preprocess import ImageSpec, preprocess_frames


def naive_loop(bundle: Bundle, videos: Sequence[str], params: GenerationParams) -> dict[str, Any]:
    start = time.perf_counter()
    captioner = Captioner(bundle, TorchVisionEngine(bundle, "cpu"), TransformersEngine(bundle, "cpu"), params)
    startup = time.perf_counter() - start
    spec = ImageSpec.from_fields(bundle["image"])
    options = DecodeOptions(num_frames=int(bundle["video"]["num_frames"]))
    captions: dict[str, str] = {}
    start = time.perf_counter()
    for video in videos:
        try:
            decoded = decode_video(video, options)
        except Exception:
            continue
        pixels = preprocess_frames(decoded.frames, spec).numpy()[None]
        text, _ = captioner.caption(captioner.encode(pixels), [None])
        captions[video] = text[0]
    wall = time.perf_counter() - start
    return {"startup_s": round(startup, 2), "wall_s": round(wall, 2), "captions": captions}


def pipeline_run(
    bundle: Bundle, videos: Sequence[str], params: GenerationParams, engines: EngineOptions, options: BatchOptions
) -> dict[str, Any]:
    start = time.perf_counter()
    captioner = Captioner.open(bundle, engines, params, batch_size=options.batch_size)
    # Start-up also covers the decode forkserver (it imports torch/decord once per process): one
    # warm-up batch into a scratch file, so the timed run measures the steady state, as the naive
    # loop's does.
    scratch = replace(options, out=options.out.with_name("warm-up.jsonl"))
    run_batch(videos[: options.batch_size], bundle, lambda: captioner, scratch, keep_engines=True)
    startup = time.perf_counter() - start
    stats = run_batch(videos, bundle, lambda: captioner, options)
    records = [json.loads(line) for line in options.out.read_text(encoding="utf-8").splitlines()]
    captions = {r["video"]: r["caption"] for r in records if r["status"] == "ok"}
    return {
        "startup_s": round(startup, 2),
        "wall_s": round(stats.wall_s, 2),
        "captions": captions,
        "engines": stats.engines,
        "stage_s": stats.to_dict()["stage_s"],
    }


def bench_batch(
    bundle: Bundle,
    videos: Sequence[str],
    engines: EngineOptions,
    batch_size: int = 8,
    workers: int = 2,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    params = GenerationParams.from_bundle(bundle, max_new_tokens=max_new_tokens)
    naive = naive_loop(bundle, videos, params)  # torch's default threads, as scripts run
    if engines.cpu_threads is None:
        engines.cpu_threads = cpu_threads_per_engine(workers)  # as `vlmcap batch` sets them
    with tempfile.TemporaryDirectory(prefix="vlmcap-bench-") as tmp:
        options = BatchOptions(Path(tmp) / "captions.jsonl", batch_size=batch_size, workers=workers, progress_bar=False)
        pipeline = pipeline_run(bundle, videos, params, engines, options)
    n = len(naive["captions"])
    same = sum(pipeline["captions"].get(v) == c for v, c in naive["captions"].items())
    rows = {}
    for name, run in (("naive", naive), ("pipeline", pipeline)):
        rows[name] = {
            "videos": len(run["captions"]),
            "startup_s": run["startup_s"],
            "wall_s": run["wall_s"],
            "videos_per_s": round(len(run["captions"]) / run["wall_s"], 3),
        }
    rows["pipeline"]["engines"] = pipeline["engines"]
    rows["pipeline"]["stage_s"] = pipeline["stage_s"]
    return {
        "videos": len(videos),
        "batch_size": batch_size,
        "workers": workers,
        "max_new_tokens": params.max_new_tokens,
        "naive": rows["naive"],
        "pipeline": rows["pipeline"],
        "speedup": round(rows["pipeline"]["videos_per_s"] / rows["naive"]["videos_per_s"], 2),
        "same_captions": f"{same}/{n}",
    }
