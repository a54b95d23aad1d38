"""`vlmcap batch` end to end: check everything up front, take the lock, run, append, compact, report.

Every check that can fail on the user's input (bundle, settings, output location) runs before the
lock is taken, engines start or a video is decoded. The JSONL writer is one consumer of the batch
run's records (vlmcap.engines.run.BatchRun).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from vlmcap.bundle import Bundle, load_bundle
from vlmcap.config import BatchConfig
from vlmcap.engines.captioner import Captioner, with_cpu_threads
from vlmcap.engines.llm import GenerationParams
from vlmcap.engines.llm_vllm import check_params_safe
from vlmcap.engines.lock import OutputLock
from vlmcap.engines.output import CaptionWriter, ResumeState, read_resume_state
from vlmcap.engines.pipeline import LocalPipeline
from vlmcap.engines.progress import Progress
from vlmcap.engines.run import BatchRun, Driver, RunStats
from vlmcap.engines.selection import Shard, TaskFilter
from vlmcap.errors import ConfigError
from vlmcap.files import atomic_write_text
from vlmcap.home import default_engine_dir
from vlmcap.video.discovery import iter_video_paths

log = logging.getLogger(__name__)


def output_path(settings: BatchConfig) -> Path:
    if not settings.out:
        raise ConfigError("no output: pass --out FILE (or set batch.out in the config)")
    return Path(settings.out)


def bundle_path(settings: BatchConfig) -> Path:
    return Path(settings.engine) if settings.engine else default_engine_dir()


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


def prepare(settings: BatchConfig) -> tuple[Bundle, GenerationParams]:
    """All up-front checks; raises ConfigError/BundleError (exit 2) before any work."""
    _check_output(output_path(settings))
    if settings.providers:
        from vlmcap.onnx_session import pick_providers

        pick_providers(settings.providers)  # an uninstalled provider fails here, not mid-run
    bundle = load_bundle(bundle_path(settings))
    params = GenerationParams.from_bundle(bundle, settings.generation)
    if settings.llm_backend == "vllm":
        check_params_safe(params)
    if settings.prompt is not None:
        from transformers import AutoTokenizer

        from vlmcap.prompt import PromptBuilder

        tokenizer = AutoTokenizer.from_pretrained(bundle.llm_dir)
        prompt = bundle.manifest.prompt
        # A prompt with two <video> placeholders fails here, not on the first batch.
        PromptBuilder(tokenizer, prompt.default_prompt, prompt.system_prompt).encode(settings.prompt)
    return bundle, params


def task_filter(settings: BatchConfig, state: ResumeState) -> TaskFilter:
    shard = Shard.parse(settings.shard) if settings.shard else None
    return TaskFilter(state, settings.retry_errors, shard, settings.limit)


def list_selected(settings: BatchConfig, stdin: TextIO | None = None) -> tuple[Iterator[str], TaskFilter]:
    """`--dry-run`: the videos a run would caption, after resume, shard and limit filtering."""
    out = output_path(settings)
    selection = task_filter(settings, ResumeState() if settings.overwrite else read_resume_state(out))
    tasks = selection(iter_video_paths(settings.inputs, stdin))
    return (task.video for task in tasks), selection


def make_driver(bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> Driver:
    if settings.ray.address is not None:
        from vlmcap.engines.ray_pipeline import RayPipeline

        return RayPipeline(bundle, settings, params)
    return LocalPipeline(bundle, settings, lambda: Captioner.open(bundle, settings, params))


def caption_videos(settings: BatchConfig, stdin: TextIO | None = None) -> RunStats:
    """Caption `settings.inputs` into `settings.out`: resume, lock, append, compact; the run's stats."""
    bundle, params = prepare(settings)
    settings = with_cpu_threads(settings)
    out = output_path(settings)
    with OutputLock(out, settings.wait_lock_s):
        writer = CaptionWriter(out, overwrite=settings.overwrite)
        stats = RunStats(torn_bytes_repaired=writer.torn_bytes)
        selection = task_filter(settings, read_resume_state(out))
        paths = iter_video_paths(settings.inputs, stdin if stdin is not None else sys.stdin)
        prompt = bundle.manifest.prompt.default_prompt if settings.prompt is None else settings.prompt
        progress = Progress(settings.progress, settings.log_every_s)
        driver = make_driver(bundle, settings, params)
        try:
            with BatchRun(driver, selection(paths), bundle.id, prompt, stats, progress) as run:
                for records in run:
                    t0 = time.perf_counter()
                    writer.append(records)
                    stats.stage_s["write"] += time.perf_counter() - t0
        finally:
            writer.close()
        counts = selection.counts
        stats.skipped_ok, stats.skipped_failed, stats.other_shard = (
            counts.skipped_ok,
            counts.skipped_failed,
            counts.other_shard,
        )
        if not stats.interrupted_by and counts.superseding:
            stats.compacted_lines = writer.compact()
    if settings.stats is not None:
        report = {**stats.to_dict(), "bundle": bundle.id, "out": str(out)}
        atomic_write_text(Path(settings.stats), json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return stats
