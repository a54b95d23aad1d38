"""`vlmcap bench batch`: the batch pipeline against the naive loop LLaVA-style scripts run.

Naive baseline, one video at a time in one process: decode (decord/PyAV in-process), preprocess,
PyTorch encoder + projector, transformers `generate` with batch size 1. Pipeline: what
`vlmcap batch` runs (decode workers, ONNX Runtime, the chosen LLM engine, batches, overlap).
Both use the same bundle, videos and greedy settings; engine start-up is timed separately, since
it is paid once per run, not per video. The captions of both are compared as a sanity check.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config import BatchConfig
from vlmcap.engines.captioner import Captioner, with_cpu_threads
from vlmcap.engines.llm import GenerationParams
from vlmcap.engines.llm_transformers import TransformersEngine
from vlmcap.engines.output import ResumeState
from vlmcap.engines.pipeline import LocalPipeline
from vlmcap.engines.progress import Progress
from vlmcap.engines.run import BatchRun, RunStats
from vlmcap.engines.selection import TaskFilter
from vlmcap.engines.vision import TorchVisionEngine
from vlmcap.video.decoders import DecodeOptions, decode_video
from vlmcap.video.preprocess import preprocess_frames


def naive_loop(bundle: Bundle, videos: Sequence[str], params: GenerationParams) -> dict[str, Any]:
    start = time.perf_counter()
    captioner = Captioner(bundle, TorchVisionEngine(bundle, "cpu"), TransformersEngine(bundle, "cpu"), params)
    startup = time.perf_counter() - start
    spec = bundle.manifest.image.spec()
    options = DecodeOptions(num_frames=bundle.manifest.video.num_frames)
    captions: dict[str, str] = {}
    start = time.perf_counter()
    for video in videos:
        try:
            decoded = decode_video(video, options)
        except Exception:
            continue
        pixels = preprocess_frames(decoded.frames, spec).numpy()[None]
        captions[video] = captioner.caption(captioner.encode(pixels), [None])[0].text
    wall = time.perf_counter() - start
    return {"startup_s": round(startup, 2), "wall_s": round(wall, 2), "captions": captions}


def _run(bundle: Bundle, videos: Sequence[str], captioner: Captioner, settings: BatchConfig) -> tuple[RunStats, dict]:
    """One pass of the batch pipeline over `videos` with engines already open; records in memory."""
    stats, captions = RunStats(), {}
    tasks = TaskFilter(ResumeState())(videos)
    prompt = bundle.manifest.prompt.default_prompt
    with BatchRun(LocalPipeline(bundle, settings, captioner), tasks, bundle.id, prompt, stats, Progress(False)) as run:
        for records in run:
            captions.update((r["video"], r["caption"]) for r in records if r["status"] == "ok")
    return stats, captions


def pipeline_run(bundle: Bundle, videos: Sequence[str], params: GenerationParams, settings: BatchConfig) -> dict:
    start = time.perf_counter()
    captioner = Captioner.open(bundle, settings, params)
    try:
        # Start-up also covers the decode forkserver (it imports torch/decord once per process): one
        # warm-up batch, so the timed run measures the steady state, as the naive loop's does.
        _run(bundle, videos[: settings.batch_size], captioner, settings)
        startup = time.perf_counter() - start
        stats, captions = _run(bundle, videos, captioner, settings)
    finally:
        captioner.close()
    return {
        "startup_s": round(startup, 2),
        "wall_s": round(stats.wall_s, 2),
        "captions": captions,
        "engines": stats.engines,
        "stage_s": stats.to_dict()["stage_s"],
    }


def bench_batch(bundle: Bundle, videos: Sequence[str], settings: BatchConfig) -> dict[str, Any]:
    """`settings`: batch size, decode workers, engines and max_new_tokens, as `vlmcap batch` takes them."""
    params = GenerationParams.from_bundle(bundle, settings.generation)
    naive = naive_loop(bundle, videos, params)  # torch's default threads, as scripts run
    pipeline = pipeline_run(bundle, videos, params, with_cpu_threads(settings))  # threads as `vlmcap batch` sets
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
        "batch_size": settings.batch_size,
        "workers": settings.workers,
        "max_new_tokens": params.max_new_tokens,
        "naive": rows["naive"],
        "pipeline": rows["pipeline"],
        "speedup": round(rows["pipeline"]["videos_per_s"] / rows["naive"]["videos_per_s"], 2),
        "same_captions": f"{same}/{n}",
    }
