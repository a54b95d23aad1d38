"""`vlmcap batch --ray`: the batch stages as Ray Data operators, for more than one machine.

    driver: discover + resume/shard/limit filter (engines.stages.TaskFilter)
      -> map_batches(DecodeStage)   actors, each with its own DecodePool: a hung or crashing
                                    decode costs one video, exactly as locally
      -> map_batches(VisionStage)   actor pool over the bundle's vision.onnx (GPUs per actor configurable)
      -> map_batches(LLMStage)      actor pool of LLM engines (vLLM fed prompt embeds, or transformers)
      -> driver: records (engines.stages.ok_record / error_record) -> CaptionWriter (fsync per batch)

One implementation, two drivers: the stage bodies are the same `Captioner.encode`/`caption`,
`pixel_batch`, `decoded_fields`, record builders and JSONL writer the local pipeline uses, so the
output schema, resume keys and error semantics are the same. Ray Data's own LLM processor takes
token prompts, not prompt embeddings, so the LLM stage is our engine class in actors.

Every actor opens the bundle with `load_bundle`, which verifies each file's sha256 on that node
before the actor takes work: a node with a damaged or different copy fails loudly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from vlmcap.engines.captioner import Captioner, EngineOptions, open_llm_engine, open_vision_engine
from vlmcap.engines.llm import GenerationParams
from vlmcap.engines.output import CaptionWriter, read_resume_state
from vlmcap.engines.pipeline import BatchOptions, Interrupt, RunStats
from vlmcap.engines.progress import Progress
from vlmcap.engines.stages import (
    BatchTimings,
    TaskFilter,
    VideoTask,
    decoded_fields,
    error_record,
    ok_record,
    pixel_batch,
)
from vlmcap.export.bundle import Bundle, load_bundle

from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.preprocess import ImageSpec

log = logging.getLogger(__name__)


@dataclass
class RayOptions:
    address: str = "auto"  # auto: the cluster in RAY_ADDRESS / a running one, else a local one
    decode_actors: int = 1  # each runs BatchOptions.workers decode processes
    vision_actors: int = 1
    llm_actors: int = 1
    gpus_per_vision_actor: float = 0.0
    gpus_per_llm_actor: float = 0.0
    # The model actors mostly wait on their accelerator (or share the cores with decoding on a CPU
    # box): half a CPU each lets decode + vision + LLM actors fit a 2-CPU node together.
    cpus_per_model_actor: float = 0.5
    num_cpus: int | None = None  # only when starting a local cluster


class DecodeStage:
    """Decode a block of paths in this actor's worker processes; failures become rows, not exceptions."""

    def __init__(self, bundle_path: str, options: BatchOptions) -> None:
        from vlmcap.video.pool import DecodePool

        bundle = load_bundle(bundle_path)
        self.spec = ImageSpec.from_fields(bundle["image"])
        self.num_frames = int(bundle["video"]["num_frames"])
        decode = DecodeOptions(num_frames=self.num_frames, decoders=options.decoders)
        self.pool = DecodePool(decode, self.spec, options.workers, options.decode_timeout_s)
        self.frame_shape = (self.num_frames, *self.spec.output_hw, 3)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["video"]]
        results = {r.path: r for r in self.pool.imap_unordered(paths)}
        out: dict[str, list] = {k: [] for k in ("video", "ok", "error_type", "error_message", "frames")}
        out.update({k: [] for k in ("frames_s", "duration_s", "decoder", "decode_ms")})
        for path in paths:
            r = results[path]
            out["video"].append(path)
            out["ok"].append(r.ok)
            out["error_type"].append(r.error_type or "")
            out["error_message"].append(r.error_message or "")
            fields = decoded_fields(r) if r.ok else {"frames_s": [0.0] * self.num_frames, "duration_s": 0.0}
            out["frames"].append(r.video.frames if r.ok else np.zeros(self.frame_shape, np.uint8))
            out["frames_s"].append(np.asarray(fields["frames_s"], np.float64))
            out["duration_s"].append(fields["duration_s"])
            out["decoder"].append(fields.get("decoder", ""))
            out["decode_ms"].append(r.decode_ms)
        return {k: np.asarray(v) if k != "frames" else np.stack(v) for k, v in out.items()}

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()


class VisionStage:
    def __init__(self, bundle_path: str, engines: EngineOptions) -> None:
        self.bundle = load_bundle(bundle_path)
        self.spec = ImageSpec.from_fields(self.bundle["image"])
        self.engine = open_vision_engine(self.bundle, engines)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        shape = (len(ok), int(self.bundle["tokens_per_video"]), int(self.bundle["llm"]["hidden_size"]))
        rows = np.zeros(shape, np.float32)
        start = time.perf_counter()
        if ok.any():
            rows[ok] = self.engine.encode(pixel_batch(batch["frames"][ok], self.spec))
        elapsed_ms = (time.perf_counter() - start) * 1e3
        out = {k: v for k, v in batch.items() if k != "frames"}
        out["vision_rows"] = rows
        out["vision_ms"] = np.full(len(ok), elapsed_ms / max(int(ok.sum()), 1))
        return out


class LLMStage:
    def __init__(
        self, bundle_path: str, engines: EngineOptions, params: GenerationParams, prompt: str | None, batch_size: int
    ) -> None:
        self.bundle = load_bundle(bundle_path)
        self.prompt = prompt
        self.captioner = Captioner(self.bundle, None, None, params)
        max_prompt_len = self.captioner.max_prompt_len(prompt)
        self.captioner.llm = open_llm_engine(self.bundle, engines, params, max_prompt_len, batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        captions = np.full(len(ok), "", dtype=object)
        tokens = np.zeros(len(ok), np.int64)
        start = time.perf_counter()
        if ok.any():
            texts, counts = self.captioner.caption(batch["vision_rows"][ok], [self.prompt] * int(ok.sum()))
            captions[ok] = texts
            tokens[ok] = counts
        elapsed_ms = (time.perf_counter() - start) * 1e3
        out = {k: v for k, v in batch.items() if k != "vision_rows"}
        out["caption"] = captions.astype(str)
        out["num_tokens"] = tokens
        out["llm_ms"] = np.full(len(ok), elapsed_ms / max(int(ok.sum()), 1))
        return out


def _init_ray(options: RayOptions) -> bool:
    """Connect (or start a local cluster); True when this driver started it and must shut it down."""
    import ray
    from ray.data import DataContext

    # vlmcap reports progress itself (bar or periodic lines); Ray Data's own is a second, noisier one.
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "logging_level": logging.WARNING}
    if options.address != "auto":
        ray.init(address=options.address, **kwargs)
        return True
    if options.num_cpus is not None:
        kwargs["num_cpus"] = options.num_cpus
    ray.init(**kwargs)
    return True


def run_batch_ray(
    paths: Iterable[str],
    bundle: Bundle,
    engines: EngineOptions,
    params: GenerationParams,
    options: BatchOptions,
    ray_options: RayOptions,
) -> RunStats:
    """The driver: `bundle` is already verified here; each actor verifies its own node's copy."""
    import ray

    stats = RunStats()
    start = time.perf_counter()
    writer = CaptionWriter(options.out, overwrite=options.overwrite)
    stats.torn_bytes_repaired = writer.torn_bytes
    task_filter = TaskFilter(read_resume_state(options.out), options.retry_errors, options.shard, options.limit)
    tasks: dict[str, VideoTask] = {t.video: t for t in task_filter(paths)}
    counts = task_filter.counts
    stats.skipped_ok, stats.skipped_failed = counts.skipped_ok, counts.skipped_failed
    stats.other_shard = counts.other_shard
    prompt_text = bundle["prompt"]["default_prompt"] if options.prompt is None else options.prompt
    progress = Progress(options.progress_bar, options.log_every_s)
    started = False
    try:
        if tasks:
            started = _init_ray(ray_options)
            stats.engines = {"vision": f"ray x{ray_options.vision_actors}", "llm": f"ray x{ray_options.llm_actors}"}
            root = str(bundle.root)
            ds = ray.data.from_items([{"video": v} for v in tasks])
            ds = ds.map_batches(
                DecodeStage,
                fn_constructor_kwargs={"bundle_path": root, "options": options},
                batch_size=options.batch_size,
                compute=ray.data.ActorPoolStrategy(size=ray_options.decode_actors),
                num_cpus=1,
            )
            ds = ds.map_batches(
                VisionStage,
                fn_constructor_kwargs={"bundle_path": root, "engines": engines},
                batch_size=options.batch_size,
                compute=ray.data.ActorPoolStrategy(size=ray_options.vision_actors),
                num_cpus=ray_options.cpus_per_model_actor,
                num_gpus=ray_options.gpus_per_vision_actor,
            )
            ds = ds.map_batches(
                LLMStage,
                fn_constructor_kwargs={
                    "bundle_path": root,
                    "engines": engines,
                    "params": params,
                    "prompt": options.prompt,
                    "batch_size": options.batch_size,
                },
                batch_size=options.batch_size,
                compute=ray.data.ActorPoolStrategy(size=ray_options.llm_actors),
                num_cpus=ray_options.cpus_per_model_actor,
                num_gpus=ray_options.gpus_per_llm_actor,
            )
            progress.start(stats)
            with Interrupt() as interrupt:
                try:
                    for batch in ds.iter_batches(batch_size=options.batch_size, batch_format="numpy"):
                        records = _records(batch, tasks, bundle.id, prompt_text, stats)
                        writer.append(records)
                        progress.update(stats)
                        if interrupt.stop.is_set():
                            break
                except KeyboardInterrupt:
                    if not interrupt.hard.is_set():
                        raise
                stats.interrupted_by = interrupt.signal.name if interrupt.signal else None
    finally:
        writer.close()
        progress.close()
        if started:
            ray.shutdown()
    if not stats.interrupted_by and counts.superseding:
        stats.compacted_lines = writer.compact()
    stats.wall_s = time.perf_counter() - start
    return stats


def _records(
    batch: dict[str, np.ndarray], tasks: dict[str, VideoTask], bundle_id: str, prompt: str, stats: RunStats
) -> list[dict[str, Any]]:
    records = []
    for i, video in enumerate(batch["video"]):
        task = tasks[str(video)]
        if not batch["ok"][i]:
            records.append(
                error_record(
                    task,
                    str(batch["error_type"][i]) or "VideoError",
                    str(batch["error_message"][i]),
                    bundle_id,
                    prompt,
                    float(batch["decode_ms"][i]),
                )
            )
            stats.failed += 1
            stats.stage_s["decode"] += float(batch["decode_ms"][i]) / 1e3
            continue
        decoded = {k: batch[k][i] for k in ("frames_s", "duration_s", "decoder", "decode_ms")}
        timings = BatchTimings(float(batch["vision_ms"][i]), float(batch["llm_ms"][i]))
        records.append(
            ok_record(
                task, decoded, str(batch["caption"][i]), int(batch["num_tokens"][i]), bundle_id, prompt, timings, 1
            )
        )
        stats.captioned += 1
        stats.generated_tokens += int(batch["num_tokens"][i])
        stats.stage_s["vision"] += float(batch["vision_ms"][i]) / 1e3
        stats.stage_s["llm"] += float(batch["llm_ms"][i]) / 1e3
        stats.stage_s["decode"] += float(batch["decode_ms"][i]) / 1e3
    return records
