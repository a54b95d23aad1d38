"""`vlmcap bench night`: a whole night at the seed's shapes (docs/PERFORMANCE.md, "A whole night at the seed's shapes").

The real `vlmcap batch` command, in a child process as cron runs it (decode workers, the engines and
precisions `auto` takes on this machine, the LLM schedule, the ledger), over generated videos of
realistic size: 640x360 H.264 at 25 fps, 10-30 s each. The bundle's weights are random, so captions
are forced to a fixed length (`batch.generation.ignore_eos`: every caption is `tokens` long, as a
trained model's would roughly be) and the guards' retry is off (noise is flagged as a loop, and
retrying every caption would double the LLM's work; the guards cost nothing else).

Reported, all measured in the one sitting:
- videos/hour of the night once its pipeline is full (the captions' pace without the first and last
  quarter: what a night of thousands runs at), where the rest of its wall went (engines starting,
  the first video alone through both engines, the engines' shutdown), each model stage's span of
  work, and each stage's busy seconds;
- each stage alone, with the same engines and threads: vision on the videos' own frames, the LLM on
  their own rows and `tokens` new tokens, decoding from the run's own timings; the slowest one is
  the bottleneck, and the night's rate over the bottleneck's alone is the pipeline's efficiency;
- each model stage's achieved FLOP/s (counted from its layers at the bundle's shapes, vlmcap/bench/
  flops.py) over this machine's GEMM rate at the precision it computed in, and the LLM's decode
  steps as bytes of weights read per second over the memory bandwidth (vlmcap/bench/probes.py).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmcap.bench.flops import layer_flops
from vlmcap.bench.probes import machine_limits
from vlmcap.bundle import REFERENCE_DIR, Bundle
from vlmcap.config.loading import load_config
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.bench.long_videos import measure_batch, write_long_video
from vlmcap.engines.outputs.schema import parse_timestamp
from vlmcap.engines.runtime.engine_choice import engine_settings
from vlmcap.engines.runtime.engines import Engines, engine_threads, open_llm_engine, open_vision_engine
from vlmcap.model.generation import GenerationParams
from vlmcap.storage.run_dir import CONFIG_FILE
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.pool import DecodePool

NIGHT_FPS = 25
STANDALONE_VIDEOS = 4  # each model stage alone: this many of the night's videos (two vary by a tenth)


def night_videos(folder: Path, count: int, min_s: float, max_s: float, seed: int = 0) -> list[Path]:
    """`count` 640x360 videos of `min_s` to `max_s` seconds (kept for the next run: made once)."""
    rng = random.Random(seed)
    lengths = [round(rng.uniform(min_s, max_s), 1) for _ in range(count)]
    return [
        write_long_video(folder / f"night-{i:03d}-{s:g}s.mp4", s, seed + i, NIGHT_FPS) for i, s in enumerate(lengths)
    ]


def bench_night(
    bundle: Bundle, workdir: Path, videos: list[Path], batch_args: list[str], tokens: int
) -> dict[str, Any]:
    """The night, each stage alone, and the stages' rates against this machine's limits."""
    settings = BatchConfig(engine=str(bundle.root))
    params = GenerationParams.from_bundle(bundle, settings.generation)
    settings, choice = engine_settings(bundle, settings, params)  # measured once: the child takes the cache
    threads = {stage: engine_threads(settings, stage) or 1 for stage in ("vision", "llm")}
    limits = {n: machine_limits(n) for n in sorted(set(threads.values()))}  # each engine's threads' peaks
    forced = [
        f"batch.generation.max_new_tokens={tokens}",
        "batch.generation.ignore_eos=true",
        "batch.quality.retry=false",
    ]
    out = workdir / "night.jsonl"
    args = [*map(str, videos), "--out", str(out), "--overwrite", "--engine", str(bundle.root), *batch_args, *forced]
    run = measure_batch(args, workdir / "night.stats.json")
    stats = run.pop("stats")
    phases = night_phases(stats, _finished_at(out))
    night_per_hour = phases["steady_videos_per_hour"] or phases["ready_to_last_videos_per_hour"]  # too few to trim
    fixed = dataclasses.replace(params, max_new_tokens=tokens, ignore_eos=True)  # as the night's captions
    alone = _standalone(bundle, _as_the_night_ran(settings, stats["engines"]), fixed, videos[:STANDALONE_VIDEOS])
    alone["decode"] = stats["stage_s"]["decode"] / len(videos) / max(1, settings.workers)  # workers in parallel
    bottleneck = max(alone, key=alone.get)
    work = _work_per_video(bundle, settings, tokens)
    return {
        "bundle": bundle.id,
        "videos": len(videos),
        "video_seconds": round(sum(_seconds_of(v) for v in videos), 1),
        "tokens_per_caption": tokens,
        "engines": stats["engines"],
        "choice": choice.to_dict(),
        "threads_per_engine": threads,
        "limits": limits[threads["vision"]],
        **({"llm_limits": limits[threads["llm"]]} if threads["llm"] != threads["vision"] else {}),
        "night": {
            **run,
            "engines_ready_s": stats.get("engines_ready_s"),
            **phases,
            "videos_per_hour": round(night_per_hour, 1),
            "videos_per_hour_with_start": round(len(videos) / run["wall_s"] * 3600, 1),
            "stage_busy_s": stats["stage_s"],
            "waits_s": stats.get("waits", {}),
            "llm_batches": stats.get("llm_batches", {}),
            "failed": stats["failed"],
        },
        "alone_s_per_video": {stage: round(s, 3) for stage, s in alone.items()},
        "bottleneck": bottleneck,
        "efficiency": round(night_per_hour / (3600 / alone[bottleneck]), 3),
        "stages": _against_limits(
            work, alone, limits[threads["vision"]], limits[threads["llm"]], choice.vision_precision, settings.vllm.dtype
        ),
    }


def night_phases(stats: dict[str, Any], finished: list[float]) -> dict[str, Any]:
    """Where the night's wall went, and the rate it runs at once its pipeline is full, from its stats
    and its records' finish times (`finished`, seconds).

    Once a night: start (until both engines were up), fill (from then to the first caption: the first
    video goes through both engines alone), drain (the last videos leave the LLM after the vision
    stage is done) and close (the engines' shutdown, after the last caption). The steady rate is
    the captions' pace with the first and last quarter left out (at least one each side), what a
    night of thousands runs at; each model stage's rate over the span it had work is shown beside it.
    """
    ready, first, last = stats.get("engines_ready_s") or 0.0, stats["first_output_s"], stats["last_output_s"]
    times, videos = sorted(finished), len(finished)
    trim = max(1, videos // 4)
    steady = None
    if videos - 2 * trim >= 2 and times[-1 - trim] > times[trim]:
        steady = (videos - 1 - 2 * trim) / (times[-1 - trim] - times[trim]) * 3600
    spans = stats.get("spans_s", {})
    return {
        "start_s": round(ready, 1),
        "fill_s": round(first - ready, 1),
        "close_s": round(stats["wall_s"] - last, 1),
        "spans_s": spans,
        "stage_videos_per_hour": {stage: round(videos / (b - a) * 3600, 1) for stage, (a, b) in spans.items() if b > a},
        "steady_videos_per_hour": round(steady, 1) if steady else None,
        "ready_to_last_videos_per_hour": round(videos / (last - ready) * 3600, 1),
    }


def _finished_at(records: Path) -> list[float]:
    """Each record's `finished_at`, in seconds since the epoch."""
    with records.open(encoding="utf-8") as f:
        return [parse_timestamp(json.loads(line)["finished_at"]).timestamp() for line in f if line.strip()]


def _as_the_night_ran(settings: BatchConfig, engines: dict[str, str]) -> BatchConfig:
    """`settings` with the engines the night's `vlmcap batch` reported (BATCH_ARGS may have chosen
    them), so each stage alone runs what ran in the night."""
    llm = "vllm" if engines.get("llm", "").startswith("vllm") else "transformers"
    vision = engines.get("vision", "")
    backend = next((b for name, b in VISION_ENGINE_NAMES.items() if vision.startswith(name)), settings.vision_backend)
    precision = next((p for word, p in PRECISION_WORDS.items() if f", {word})" in vision), settings.vision_precision)
    if backend == "onnx":
        precision = "auto"  # ONNX Runtime computes the bundle's precision
    return settings.model_copy(update={"llm_backend": llm, "vision_backend": backend, "vision_precision": precision})


# How a vision engine's name starts (engines/runtime/vision.py), and its --vision-backend.
VISION_ENGINE_NAMES = {"onnxruntime": "onnx", "torch": "torch", "openvino": "openvino"}
PRECISION_WORDS = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "fp32", "float32": "fp32"}  # as names end


def _seconds_of(path: Path) -> float:
    return float(path.stem.rsplit("-", 1)[-1].removesuffix("s"))


def _standalone(bundle: Bundle, settings: BatchConfig, params: GenerationParams, videos: list[Path]) -> dict:
    """Seconds per video of the vision engine and the LLM engine alone, as the run opened them."""
    spec = bundle.manifest.image.spec()
    options = DecodeOptions(num_frames=bundle.manifest.video.num_frames)
    with DecodePool(options, spec, num_workers=1) as pool:
        frames = [r.video.frames for r in sorted(pool.imap_unordered(map(str, videos)), key=lambda r: r.index)]
    vision = open_vision_engine(bundle, settings)
    vision.encode_frames(frames[:1])  # warm-up
    start = time.perf_counter()
    rows = np.concatenate([vision.encode_frames([f]) for f in frames])
    vision_s = (time.perf_counter() - start) / len(frames)
    del vision
    engines = Engines(bundle, None, None, params)
    llm = open_llm_engine(bundle, settings, params, engines.max_prompt_len(settings.prompt), len(frames))
    try:
        batch = engines.embed(rows, [settings.prompt] * len(frames))
        llm.generate(engines.embed(rows[:1], [settings.prompt]), params)  # warm-up
        start = time.perf_counter()
        llm.generate(batch, params)
        llm_s = (time.perf_counter() - start) / len(frames)
    finally:
        llm.close()
    return {"vision": vision_s, "llm": llm_s}


def _work_per_video(bundle: Bundle, settings: BatchConfig, tokens: int) -> dict[str, float]:
    """FLOPs of one video's vision pass and LLM prefill, counted on the meta device at the bundle's
    shapes, and the bytes of weights its decode steps read (one batch shares each step's read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlmcap.model.vision_graph import build_vision_graph

    manifest = bundle.manifest
    config = load_config(bundle.root / REFERENCE_DIR / CONFIG_FILE)
    graph = build_vision_graph(config, attention="sdpa").to("meta")  # built on the CPU (it loads its tower)
    with torch.device("meta"):
        height, width = manifest.image.spec().output_hw
        pixels = torch.empty(1, manifest.video.num_frames, 3, height, width)
        vision = layer_flops(lambda: graph(pixels))
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bundle.llm_dir))
        length = manifest.tokens_per_video + 40  # the prompt's text tokens around the video (about 40)
        embeds = torch.empty(1, length, llm.config.hidden_size)
        prefill = layer_flops(lambda: llm(inputs_embeds=embeds, logits_to_keep=1))
        params = sum(p.numel() for p in llm.parameters())
    dtype_bytes = 2 if settings.vllm.dtype in ("bfloat16", "float16") else 4
    batch = max(1, settings.batch_size)
    return {
        "vision_flops": vision,
        "llm_flops": prefill + 2 * params * tokens,
        "decode_bytes": params * dtype_bytes * tokens / batch,
    }


def _against_limits(
    work: dict[str, float],
    alone: dict[str, float],
    vision_limits: dict[str, Any],
    limits: dict[str, Any],
    vision_precision: str,
    llm_dtype: str,
) -> dict[str, Any]:
    """Each model stage alone: achieved TFLOP/s and its share of the GEMM rate at its precision, on its
    own thread count (`limits` are the LLM's)."""
    vision_peak = vision_limits["gemm_tflops"]["bf16" if vision_precision == "bf16" else "fp32"]
    llm_peak = limits["gemm_tflops"]["bf16" if llm_dtype in ("bfloat16", "float16") else "fp32"]
    vision = work["vision_flops"] / alone["vision"] / 1e12
    llm = work["llm_flops"] / alone["llm"] / 1e12
    return {
        "vision": {"tflops": round(vision, 4), "of_gemm_peak": round(vision / vision_peak, 3) if vision_peak else None},
        "llm": {
            "tflops": round(llm, 4),
            "of_gemm_peak": round(llm / llm_peak, 3) if llm_peak else None,
            "decode_weight_gb_per_s_floor": round(work["decode_bytes"] / alone["llm"] / 1e9, 2),
            "of_memory_bandwidth": round(work["decode_bytes"] / alone["llm"] / 1e9 / limits["memory_gb_per_s"], 3),
        },
    }
