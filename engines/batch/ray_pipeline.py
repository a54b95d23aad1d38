"""The Ray driver of a batch run (`vlmcap batch --ray`): the stages as Ray Data operators, for more than one machine.

    tasks (filtered on the driver by vlmcap.engines.batch.selection.TaskFilter)
      -> map_batches(RayDecode)   actors, each with its own DecodePool: a hung or crashing
                                  decode costs one video, exactly as locally; with --segments
                                  a row per segment, yielded as decoded (memory stays bounded)
      -> map_batches(RayVision)   actor pool over the bundle's vision.onnx (GPUs per actor configurable)
      -> map_batches(RayLLM)      actor pool of LLM engines (vLLM fed prompt embeds, or transformers)
      -> outcomes, back on the driver (vlmcap.engines.batch.run.BatchRun turns them into records)

One implementation, two drivers: the stage bodies are the same `Engines.caption` and vision
engine `encode_frames` the local pipeline uses (here the LLM runs batched, not streamed), and both
drivers hand `Outcome`s to the same run core, so the output schema, resume keys and error
semantics are the same. Ray Data's own LLM processor
takes token prompts, not prompt embeddings, so the LLM stage is our engine class in actors.

Every actor opens the bundle with `load_bundle`, which verifies each file's sha256 on that node
before the actor takes work: a node with a damaged or different copy fails loudly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from vlmcap.bundle import Bundle, load_bundle
from vlmcap.config.schema import BatchConfig, RayConfig
from vlmcap.engines.batch.in_flight import InFlight
from vlmcap.engines.batch.records import Outcome
from vlmcap.engines.batch.run import Interrupt
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.engines.runtime.caption_quality import Quality
from vlmcap.engines.runtime.engines import Engines, open_llm_engine, open_vision_engine
from vlmcap.engines.runtime.watchdog import Process, alive, descendants, kill_all
from vlmcap.model.generation import GenerationParams
from vlmcap.video.remote_listing import RemoteVideo
from vlmcap.video.worker import SegmentRef

log = logging.getLogger(__name__)


class RayDecode:
    """Decode a block of paths in this actor's worker processes; failures become rows, not exceptions."""

    def __init__(self, bundle_path: str, settings: BatchConfig) -> None:
        from vlmcap.video.pool import DecodePool

        bundle = load_bundle(bundle_path)
        self.spec = bundle.manifest.image.spec()
        self.num_frames = bundle.manifest.video.num_frames
        decode = settings.decode_options(self.num_frames)
        self.pool = DecodePool(
            decode, self.spec, settings.workers, settings.decode_timeout_s, segments=settings.segment_plan
        )
        self.frame_shape = (self.num_frames, *self.spec.output_hw, 3)
        self.rows_per_block = settings.batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Rows in blocks of `batch_size` as results come (a video's segments may span blocks)."""
        rows = []
        pairs = zip(batch["video"], batch["remote"], strict=True)
        videos = [RemoteVideo.from_json(v, said) if said else str(v) for v, said in pairs]
        for result in self.pool.imap_unordered(videos):
            rows.append(self._row(result))
            if len(rows) >= self.rows_per_block:
                yield _columns(rows)
                rows = []
        if rows:
            yield _columns(rows)

    def _row(self, r) -> dict[str, Any]:
        video, segment = r.video, r.segment
        return {
            "video": r.path,
            "ok": r.ok,
            "error_type": r.error_type or "",
            "error_message": r.error_message or "",
            "frames": video.frames if video else np.zeros(self.frame_shape, np.uint8),
            "frames_s": np.asarray(video.timestamps_s if video else [0.0] * self.num_frames, np.float64),
            "duration_s": video.meta.duration_s if video else 0.0,
            "decoder": video.meta.decoder if video else "",
            "decode_ms": r.decode_ms,
            "thumbnail": r.thumbnail or "",  # --thumbnails: written by the decode worker
            # -1: a whole video (or an error); else which segment of how many, and its span
            "segment_index": segment.index if segment else -1,
            "segment_count": segment.count if segment else 0,
            "segment_start_s": segment.start_s if segment else 0.0,
            "segment_end_s": segment.end_s if segment else 0.0,
        }

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()


class RayVision:
    def __init__(self, bundle_path: str, settings: BatchConfig) -> None:
        self.bundle = load_bundle(bundle_path)
        self.engine = open_vision_engine(self.bundle, settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        shape = (len(ok), self.bundle.manifest.tokens_per_video, self.bundle.manifest.llm.hidden_size)
        rows = np.zeros(shape, np.float32)
        start = time.perf_counter()
        if ok.any():
            rows[ok] = self.engine.encode_frames(list(batch["frames"][ok]))
        elapsed_ms = (time.perf_counter() - start) * 1e3
        out = {k: v for k, v in batch.items() if k != "frames"}
        out["vision_rows"] = rows
        out["vision_ms"] = np.full(len(ok), elapsed_ms / max(int(ok.sum()), 1))
        return out


class RayLLM:
    def __init__(self, bundle_path: str, settings: BatchConfig, params: GenerationParams) -> None:
        self.bundle = load_bundle(bundle_path)
        self.prompt = settings.prompt
        self.engines = Engines(self.bundle, None, None, params, settings.quality)
        max_prompt_len = self.engines.max_prompt_len(self.prompt)
        self.engines.llm = open_llm_engine(self.bundle, settings, params, max_prompt_len, settings.batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        captions = np.full(len(ok), "", dtype=object)
        tokens = np.zeros(len(ok), np.int64)
        reasons = np.full(len(ok), "", dtype=object)
        qualities = np.full(len(ok), "{}", dtype=object)  # JSON: Ray's blocks hold plain columns
        start = time.perf_counter()
        if ok.any():
            done = self.engines.caption(batch["vision_rows"][ok], [self.prompt] * int(ok.sum()))
            captions[ok] = [c.text for c in done]
            tokens[ok] = [c.num_tokens for c in done]
            reasons[ok] = [c.finish_reason for c in done]
            qualities[ok] = [json.dumps(c.quality.to_dict()) for c in done]
        elapsed_ms = (time.perf_counter() - start) * 1e3
        out = {k: v for k, v in batch.items() if k != "vision_rows"}
        out["caption"] = captions.astype(str)
        out["num_tokens"] = tokens
        out["finish_reason"] = reasons.astype(str)
        out["quality"] = qualities.astype(str)
        out["llm_ms"] = np.full(len(ok), elapsed_ms / max(int(ok.sum()), 1))
        return out


# After ray.shutdown(), a local cluster's dashboard and runtime-env agents notice their raylet is gone
# by polling; on a loaded 2-core box they outlived the run by more than 30 s. What is left after this
# long is killed: a nightly run leaves no process behind.
CLUSTER_EXIT_S = 5.0


def _init_ray(options: RayConfig) -> set[Process] | None:
    """Connect (or start a local cluster); None when Ray was up in this process already (nothing to shut
    down), else the processes below this one before Ray started: whatever else is below it at shutdown
    is the local cluster's (none when it joined a running cluster)."""
    import ray
    from ray.data import DataContext

    # vlmcap reports progress itself (bar or periodic lines); Ray Data's own is a second, noisier one.
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return None
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "logging_level": logging.WARNING}
    if options.address not in (None, "auto"):
        kwargs["address"] = options.address
    elif options.num_cpus is not None:
        kwargs["num_cpus"] = options.num_cpus
    # ray.init installs its own SIGTERM handler (sys.exit); the run's handler (a clean stop that
    # flushes the batch in progress, exit 143) must stay in charge.
    handler = signal.getsignal(signal.SIGTERM)
    not_ray = descendants(os.getpid())  # a resource tracker, say: not Ray's to stop
    try:
        ray.init(**kwargs)
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    return not_ray


def _shut_down(not_ray: set[Process]) -> None:
    """ray.shutdown(), then the local cluster's processes (GCS, raylet, agents, workers and actors)
    still there after CLUSTER_EXIT_S are killed."""
    import ray

    cluster = descendants(os.getpid()) - not_ray
    ray.shutdown()
    deadline = time.monotonic() + CLUSTER_EXIT_S
    while alive(cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left := alive(cluster):
        log.info("killing %d process(es) of the local Ray cluster still running after shutdown", len(left))
        kill_all(left)


class RayPipeline:
    """`bundle` is already verified on the driver; each actor verifies its own node's copy."""

    def __init__(self, bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> None:
        self.bundle = bundle
        self.settings = settings
        self.params = params

    def outcomes(
        self, tasks: Iterable[VideoTask], interrupt: Interrupt, ready: Callable[[dict[str, str]], None]
    ) -> Iterator[list[Outcome]]:

        in_flight = InFlight()  # Ray Data takes the whole list; the filter ran on the driver
        videos, unreadable = [], []
        for task in tasks:
            if task.problem is not None:
                unreadable.append(Outcome.unreadable(task))  # nothing to decode: no need to ship it
            elif in_flight.admit(task):
                videos.append(task.video)
        if unreadable:
            yield unreadable
        if not videos or interrupt.stop.is_set():
            return  # everything is done already: Ray is not even started
        settings, ray_options = self.settings, self.settings.ray
        not_ray = _init_ray(ray_options)
        try:
            ready({"vision": f"ray x{ray_options.vision_actors}", "llm": f"ray x{ray_options.llm_actors}"})
            for batch in self._dataset(videos).iter_batches(batch_size=settings.batch_size, batch_format="numpy"):
                outcomes = []
                for i in range(len(batch["video"])):
                    task = in_flight.task(str(batch["video"][i]))
                    if task is None:
                        continue  # a segment of a video that failed meanwhile: its error line is out
                    outcome = _outcome(batch, i, task)
                    if not outcome.ok:
                        outcomes.append(in_flight.failed(outcome))
                        continue
                    segment = _segment_ref(batch, i) if int(batch["segment_index"][i]) >= 0 else None
                    outcome = in_flight.captioned(outcome, segment)
                    if outcome is not None:  # None: more segments to come
                        outcomes.append(outcome)
                if outcomes:
                    yield outcomes
                if interrupt.stop.is_set():
                    break
        finally:
            if not_ray is not None:
                _shut_down(not_ray)

    def _dataset(self, videos: list[str]):
        import ray

        settings, ray_options, root = self.settings, self.settings.ray, str(self.bundle.root)
        # A URL carries what its metadata request said to the decode worker (vlmcap.video.remote.RemoteVideo);
        # Ray Data's string column would drop it, so it rides beside the video as JSON.
        ds = ray.data.from_items(
            [{"video": str(v), "remote": v.as_json() if isinstance(v, RemoteVideo) else ""} for v in videos]
        )
        ds = ds.map_batches(
            RayDecode,
            fn_constructor_kwargs={"bundle_path": root, "settings": settings},
            batch_size=settings.batch_size,
            compute=ray.data.ActorPoolStrategy(size=ray_options.decode_actors),
            num_cpus=1,
        )
        ds = ds.map_batches(
            RayVision,
            fn_constructor_kwargs={"bundle_path": root, "settings": settings},
            batch_size=settings.vision_batch_size,
            compute=ray.data.ActorPoolStrategy(size=ray_options.vision_actors),
            num_cpus=ray_options.cpus_per_model_actor,
            num_gpus=ray_options.gpus_per_vision_actor,
        )
        return ds.map_batches(
            RayLLM,
            fn_constructor_kwargs={"bundle_path": root, "settings": settings, "params": self.params},
            batch_size=settings.batch_size,
            compute=ray.data.ActorPoolStrategy(size=ray_options.llm_actors),
            num_cpus=ray_options.cpus_per_model_actor,
            num_gpus=ray_options.gpus_per_llm_actor,
        )


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) if k == "frames" else np.asarray([r[k] for r in rows]) for k in rows[0]}


def _segment_ref(batch: dict[str, np.ndarray], i: int) -> SegmentRef:
    return SegmentRef(
        int(batch["segment_index"][i]),
        int(batch["segment_count"][i]),
        float(batch["segment_start_s"][i]),
        float(batch["segment_end_s"][i]),
    )


def _outcome(batch: dict[str, np.ndarray], i: int, task: VideoTask) -> Outcome:
    decode_ms = float(batch["decode_ms"][i])
    if not batch["ok"][i]:
        return Outcome(task, decode_ms, str(batch["error_type"][i]) or "VideoError", str(batch["error_message"][i]))
    return Outcome(
        task,
        decode_ms,
        frames_s=[round(float(t), 3) for t in batch["frames_s"][i]],
        duration_s=round(float(batch["duration_s"][i]), 3),
        decoder=str(batch["decoder"][i]),
        caption=str(batch["caption"][i]),
        num_tokens=int(batch["num_tokens"][i]),
        finish_reason=str(batch["finish_reason"][i]),
        quality=Quality.from_dict(json.loads(batch["quality"][i])),
        vision_ms=float(batch["vision_ms"][i]),
        llm_ms=float(batch["llm_ms"][i]),
        thumbnail=str(batch["thumbnail"][i]) or None,
    )
