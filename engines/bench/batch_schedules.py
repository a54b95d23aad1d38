"""`vlmcap bench batch`: the batch pipeline against the naive loop LLaVA-style scripts run.

Naive baseline, one video at a time in one process: decode (decord/PyAV in-process), preprocess,
PyTorch encoder + projector, transformers `generate` with batch size 1. Pipeline: what
`vlmcap batch` runs (decode workers, ONNX Runtime, the chosen LLM engine, batches, overlap).
Both use the same bundle, videos and generation settings; engine start-up is timed separately,
since it is paid once per run, not per video. Greedy captions of both are compared as a sanity check.

Where the LLM engine streams (vLLM), the pipeline runs on the same engines with the per-batch
schedule and the streaming one (engines/batch/llm_stage.py), each twice in A B B A order, so both
numbers come from one sitting. Each
run says whether decoding or the engines held it back and how many decode workers would keep the
engines fed (`bound_report`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.batch.in_memory import records_in_memory
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.run import RunStats
from vlmcap.engines.runtime.engine_choice import engine_settings
from vlmcap.engines.runtime.engines import Engines
from vlmcap.engines.runtime.llm import StreamingLLMEngine
from vlmcap.engines.runtime.llm_transformers import TransformersEngine
from vlmcap.engines.runtime.vision import TorchVisionEngine
from vlmcap.environment import usable_cpus
from vlmcap.model.generation import GenerationParams
from vlmcap.video.decoders import DecodeOptions, decode_video
from vlmcap.video.preprocess import preprocess_frames


def naive_loop(bundle: Bundle, videos: Sequence[str], params: GenerationParams) -> dict[str, Any]:
    start = time.perf_counter()
    vision = TorchVisionEngine.from_bundle(bundle, "cpu")
    engines = Engines(bundle, vision, TransformersEngine(bundle, "cpu"), params)
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
        captions[video] = engines.caption(engines.encode(pixels), [None])[0].text
    wall = time.perf_counter() - start
    return {"startup_s": round(startup, 2), "wall_s": round(wall, 2), "captions": captions}


def _run(bundle: Bundle, videos: Sequence[str], engines: Engines, settings: BatchConfig) -> tuple[RunStats, dict]:
    """One pass of the batch pipeline over `videos` with engines already open; records in memory."""
    stats = RunStats()
    provenance = Provenance.of_run(bundle, settings, engines.params)
    records = records_in_memory(bundle, settings, engines, videos, provenance, stats=stats)
    return stats, {video: r for video, r in records.items() if r["status"] == "ok"}


def schedules(engines: Engines, settings: BatchConfig) -> list[str]:
    """The LLM schedules to measure: both where the engine streams (vLLM), else batched only."""
    if isinstance(engines.llm, StreamingLLMEngine) and settings.llm_schedule == "auto":
        return ["batch", "stream"]
    return [settings.llm_schedule if settings.llm_schedule != "auto" else "batch"]


def pipeline_runs(bundle: Bundle, videos: Sequence[str], params: GenerationParams, settings: BatchConfig) -> dict:
    """`vlmcap batch`'s pipeline over `videos`, twice per LLM schedule, on one set of engines."""
    start = time.perf_counter()
    engines = Engines.open(bundle, settings, params)
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        # Start-up also covers the decode forkserver (it imports torch/decord once per process): one
        # warm-up batch, so the timed run measures the steady state, as the naive loop's does.
        _run(bundle, videos[: settings.batch_size], engines, settings)
        startup = time.perf_counter() - start
        names = schedules(engines, settings)
        # Each schedule twice, in A B B A order, so neither gains from going second (warmer caches,
        # a quieter machine); the faster of its two runs is reported, both rates are listed.
        for schedule in names + names[::-1]:
            stats, records = _run(bundle, videos, engines, settings.model_copy(update={"llm_schedule": schedule}))
            rate = round((stats.captioned + stats.failed) / stats.wall_s, 3)
            runs.setdefault(schedule, []).append({"stats": stats, "records": records, "rate": rate})
    finally:
        engines.close()
    best = {}
    for schedule, tries in runs.items():
        fastest = max(tries, key=lambda run: run["rate"])
        best[schedule] = {**fastest, "startup_s": round(startup, 2), "rates": [run["rate"] for run in tries]}
    return best


def bound_report(stats: dict[str, Any], workers: int) -> dict[str, Any]:
    """Was the run held back by decoding or by the engines, and how many decode workers would feed them.

    Decode capacity is `workers` videos per (decode seconds per video); engine capacity is one video
    per (seconds per video of the busier engine stage: vision and LLM run in their own threads).
    The stage waits back it up: the engines idle when decode is behind, decode blocks when they are.
    On a CPU-only machine the engines and the workers share the cores, so more workers than cores
    left over cannot help; the recommendation is capped at the CPUs this process may use.
    """
    done = stats["captioned"] + stats["failed"]
    stage_s = stats["stage_s"]
    decode_per_video = stage_s["decode"] / max(done, 1)
    engine_per_video = max(stage_s["vision"], stage_s["llm"]) / max(stats["captioned"], 1)
    decode_rate = workers / decode_per_video if decode_per_video else float("inf")
    engine_rate = 1 / engine_per_video if engine_per_video else float("inf")
    needed = math.ceil(decode_per_video / engine_per_video) if engine_per_video else 1
    return {
        "bound": "decode" if decode_rate < engine_rate else "engine",
        "decode_capacity_videos_per_s": round(decode_rate, 2),
        "engine_capacity_videos_per_s": round(engine_rate, 2),
        "waits_s": stats.get("waits", {}),
        "recommended_workers": max(1, min(needed, usable_cpus())),
    }


def bench_batch(bundle: Bundle, videos: Sequence[str], settings: BatchConfig) -> dict[str, Any]:
    """`settings`: batch size, decode workers, engines and generation, as `vlmcap batch` takes them."""
    params = GenerationParams.from_bundle(bundle, settings.generation)
    naive = naive_loop(bundle, videos, params)  # torch's default threads, as scripts run
    settings, _ = engine_settings(bundle, settings, params)  # engines and threads as `vlmcap batch` sets them
    runs = pipeline_runs(bundle, videos, params, settings)
    rows: dict[str, Any] = {"naive": _row(naive["captions"], naive["startup_s"], naive["wall_s"])}
    for schedule, run in runs.items():
        stats = run["stats"].to_dict()
        captions = {v: r["caption"] for v, r in run["records"].items()}
        tokens = sorted(r["num_tokens"] for r in run["records"].values())
        rows[schedule] = {
            **_row(captions, run["startup_s"], stats["wall_s"]),
            "engines": stats["engines"],
            "llm_batches": stats["llm_batches"],
            "stage_s": stats["stage_s"],
            "videos_per_s_each_run": run["rates"],
            "caption_tokens": {"min": tokens[0], "median": tokens[len(tokens) // 2], "max": tokens[-1]}
            if tokens
            else {},
            **bound_report(stats, settings.workers),
        }
    default = "stream" if "stream" in rows else next(iter(runs))  # what `vlmcap batch` runs with these engines
    report: dict[str, Any] = {
        "videos": len(videos),
        "batch_size": settings.batch_size,
        "vision_batch": settings.vision_batch_size,
        "workers": settings.workers,
        "max_new_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "naive": rows["naive"],
        "pipeline": rows[default],
        "speedup": round(rows[default]["videos_per_s"] / rows["naive"]["videos_per_s"], 2),
        # Sampling draws differently in the naive loop's transformers and in vLLM: only greedy can match.
        "same_captions": _same(naive["captions"], rows[default]["captions"]) if params.temperature == 0 else None,
    }
    if len(runs) > 1:
        report["schedules"] = {name: rows[name] for name in runs}
        report["stream_vs_batch"] = round(rows["stream"]["videos_per_s"] / rows["batch"]["videos_per_s"], 2)
        report["same_captions_stream_batch"] = _same(rows["batch"]["captions"], rows["stream"]["captions"])
    for row in rows.values():
        del row["captions"]
    return report


def _row(captions: dict[str, str], startup_s: float, wall_s: float) -> dict[str, Any]:
    return {
        "videos": len(captions),
        "startup_s": round(startup_s, 2),
        "wall_s": round(wall_s, 2),
        "videos_per_s": round(len(captions) / wall_s, 3) if wall_s else 0.0,
        "captions": captions,
    }


def _same(reference: dict[str, str], other: dict[str, str]) -> str:
    return f"{sum(other.get(v) == c for v, c in reference.items())}/{len(reference)}"
