"""`vlmcap batch` end to end: check everything up front, take the lock, run the pipeline, report.

Every check that can fail on the user's input (bundle, flags, output location) runs before the
lock is taken, engines start or a video is decoded.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vlmcap.engines.captioner import Captioner, EngineOptions, cpu_threads_per_engine
from vlmcap.engines.llm import GenerationParams
from vlmcap.engines.llm_vllm import check_params_safe
from vlmcap.engines.lock import OutputLock
from vlmcap.engines.output import ResumeState, read_resume_state
from vlmcap.engines.pipeline import BatchOptions, RunStats, run_batch
from vlmcap.engines.ray_pipeline import RayOptions
from vlmcap.engines.stages import TaskFilter
from vlmcap.export.bundle import Bundle, load_bundle

from vlmcap.errors import ConfigError
from vlmcap.video.discovery import iter_video_paths

log = logging.getLogger(__name__)


@dataclass
class BatchRequest:
    inputs: list[str]
    bundle: Path
    options: BatchOptions
    engines: EngineOptions = field(default_factory=EngineOptions)
    generation: dict = field(default_factory=dict)  # GenerationParams overrides (None = bundle default)
    wait_lock_s: float = 0.0
    stats_path: Path | None = None
    ray: RayOptions | None = None  # set: run the stages as Ray Data operators (engines.ray_pipeline)


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_file():
        raise ConfigError(f"--out {out}: exists and is not a file")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot create {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ConfigError(f"--out {out}: not writable")


def prepare(request: BatchRequest) -> tuple[Bundle, GenerationParams]:
    """All up-front checks; raises ConfigError/BundleError (exit 2) before any work."""
    _check_output(request.options.out)
    if request.options.batch_size < 1 or request.options.workers < 1:
        raise ConfigError("--batch-size and --workers must be >= 1")
    for name in request.options.decoders:
        if name not in ("decord", "pyav") and ":" not in name:
            raise ConfigError(f"--decoders: unknown decoder {name!r}; use decord, pyav or module:Class")
    if request.engines.providers:
        from vlmcap.engines.onnx_session import pick_providers

        pick_providers(request.engines.providers)  # an uninstalled provider fails here, not mid-run
    if request.engines.cpu_threads is None:
        request.engines.cpu_threads = cpu_threads_per_engine(request.options.workers)
    bundle = load_bundle(request.bundle)
    params = GenerationParams.from_bundle(bundle, **request.generation)
    if request.engines.llm_backend == "vllm":
        check_params_safe(params)
    if request.options.prompt is not None:
        from transformers import AutoTokenizer

        from vlmcap.prompt import PromptBuilder

        tokenizer = AutoTokenizer.from_pretrained(bundle.llm_dir)
        PromptBuilder(tokenizer, bundle["prompt"]["default_prompt"], bundle["prompt"]["system_prompt"]).encode(
            request.options.prompt
        )  # a prompt with two <video> placeholders fails here, not on the first batch
    return bundle, params


def list_selected(request: BatchRequest, stdin: TextIO | None = None) -> tuple[Iterator[str], TaskFilter]:
    """`--dry-run`: the videos a run would caption, after resume, shard and limit filtering."""
    options = request.options
    state = ResumeState() if options.overwrite else read_resume_state(options.out)
    task_filter = TaskFilter(state, options.retry_errors, options.shard, options.limit)
    tasks = task_filter(iter_video_paths(request.inputs, stdin))
    return (task.video for task in tasks), task_filter


def caption_videos(request: BatchRequest, stdin: TextIO | None = None) -> RunStats:
    bundle, params = prepare(request)
    with OutputLock(request.options.out, request.wait_lock_s):

        def open_captioner() -> Captioner:
            return Captioner.open(bundle, request.engines, params, request.options.prompt, request.options.batch_size)

        paths: Iterable[str] = iter_video_paths(request.inputs, stdin if stdin is not None else sys.stdin)
        if request.ray is not None:
            from vlmcap.engines.ray_pipeline import run_batch_ray

            stats = run_batch_ray(paths, bundle, request.engines, params, request.options, request.ray)
        else:
            stats = run_batch(paths, bundle, open_captioner, request.options)
    if request.stats_path is not None:
        report = {**stats.to_dict(), "bundle": bundle.id, "out": str(request.options.out)}
        request.stats_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return stats
