"""`vlmcap batch` end to end: check, lock, check the bundle and settings, run, append, compact, report.

The order is what a nightly job needs (docs/BATCH.md, "Cron and systemd"):

1. checks that need nothing heavy: the output and stats paths, the settings (already validated);
2. the output's lock, so a second run exits 75 at once: this module imports no torch before it;
3. the URL inputs (the scheme's backend installed, s3 credentials, the bucket there and listable),
   the bundle (hashes verified, or known verified for these exact files), the prompt (no chat
   control tokens, fits the LLM's context), the engines' settings;
4. the run: the JSONL writer is one consumer of the batch run's records (vlmcap.engines.batch.run).

Every check in 1 and 3 fails with exit 2 before a video is decoded or an engine starts.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vlmcap.config.schema import BatchConfig
from vlmcap.engines.batch.ledger import CaptionWriter, ResumeState, read_resume_state, starts_a_ledger
from vlmcap.engines.batch.lock import OutputLock
from vlmcap.engines.batch.progress import Progress
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.run import BatchRun, Interrupt, RunStats, is_run_stats
from vlmcap.engines.batch.selection import Shard, TaskFilter
from vlmcap.engines.outputs.subtitles import write_sidecars
from vlmcap.errors import ConfigError
from vlmcap.storage.files import atomic_write_text
from vlmcap.storage.home import default_engine_dir
from vlmcap.storage.output_guard import check_apart, check_file_output, check_output_folder_path
from vlmcap.video.discovery import is_video_name, iter_video_paths
from vlmcap.video.remote_checks import check_remote_inputs

if TYPE_CHECKING:
    from vlmcap.bundle import Bundle
    from vlmcap.engines.batch.run import Driver
    from vlmcap.model.generation import GenerationParams

log = logging.getLogger(__name__)


def output_path(settings: BatchConfig) -> Path:
    if not settings.out:
        raise ConfigError("no output: pass --out FILE (or set batch.out in the config)")
    return Path(settings.out)


def bundle_path(settings: BatchConfig) -> Path:
    return Path(settings.engine) if settings.engine else default_engine_dir()


def check_writable_dir(path: Path, flag: str) -> None:
    """`path` is a directory this run can write files into (made if missing; a dangling symlink is refused)."""
    check_output_folder_path(flag, path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot create the directory ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: not writable")


def input_folders(settings: BatchConfig) -> list[tuple[str, str]]:
    """The local INPUTS, a glob as the folder its matches lie in: what outputs stay apart from."""
    located = [os.path.dirname(re.split(r"[*?[]", i)[0]) if glob.has_magic(i) else i for i in settings.inputs]
    return [("INPUTS", item or ".") for item in located]


def check_paths(settings: BatchConfig) -> Path:
    """Every file the run will write, checked before any work (vlmcap/storage/output_guard.py): writable, apart
    from the inputs and the bundle, never named like a video, and an existing `--out` / `--stats` only
    what a run writes there; returns the output."""
    out = output_path(settings)
    inputs, bundle = input_folders(settings), [("--engine", str(bundle_path(settings)))]
    real_out = check_file_output(
        "--out", out, bundle, may_hold=inputs, recognise=starts_a_ledger, kind="a captions JSONL"
    )
    if settings.stats is not None:
        outputs = [("--out", out), ("the lock of --out", f"{real_out}.lock")]
        check_file_output(
            "--stats",
            settings.stats,
            bundle + outputs,
            may_hold=inputs,
            recognise=is_run_stats,
            kind="the JSON `vlmcap batch --stats` writes",
        )
    for directory, flag in (
        (settings.srt_dir, "--srt"),
        (settings.vtt_dir, "--vtt"),
        (settings.thumbnails, "--thumbnails"),
    ):
        if directory is not None:
            check_apart(flag, directory, bundle, folder=True, may_hold=inputs)
            check_writable_dir(Path(directory), flag)
    return out


def prepare(settings: BatchConfig) -> tuple[Bundle, GenerationParams]:
    """The bundle, verified, and generation settings it accepts; raises ConfigError/BundleError (exit 2)."""
    from vlmcap.bundle import load_bundle
    from vlmcap.engines.runtime.engines import decodings
    from vlmcap.engines.runtime.llm_vllm import check_params_safe, check_vllm_can_spawn
    from vlmcap.engines.runtime.prompt_check import check_prompt
    from vlmcap.engines.runtime.quant_support import check_vllm_can_serve
    from vlmcap.model.generation import GenerationParams
    from vlmcap.video.pool import check_can_start_workers

    if settings.providers:
        from vlmcap.onnx.session import pick_providers

        pick_providers(settings.providers)  # an uninstalled provider fails here, not mid-run
    bundle = load_bundle(bundle_path(settings))
    params = GenerationParams.from_bundle(bundle, settings.generation)
    if settings.llm_backend == "vllm":
        for each in decodings(settings, params):  # the guards' retry too
            check_params_safe(each)
        check_vllm_can_serve(bundle, settings.vllm.dtype)
        check_vllm_can_spawn()
    if settings.ray.address is None:
        check_can_start_workers()  # decode workers are this process's children (Ray's are its actors')
    check_prompt(bundle, settings, params)
    return bundle, params


def task_filter(settings: BatchConfig, state: ResumeState, stop: threading.Event | None = None) -> TaskFilter:
    shard = Shard.parse(settings.shard) if settings.shard else None
    recaption_stale = settings.recaption == "stale"
    remote = settings.remote_options
    return TaskFilter(state, settings.retry_errors, recaption_stale, shard, settings.limit, remote=remote, stop=stop)


def check_remote(settings: BatchConfig) -> None:
    """The URLs named as inputs, before any work (exit 2): docs/BATCH.md, "Remote inputs"."""
    check_remote_inputs(settings.inputs, settings.remote_options, is_video_name)


def list_selected(settings: BatchConfig, stdin: TextIO | None = None) -> tuple[Iterator[str], TaskFilter]:
    """`--dry-run`: the videos a run would caption, after resume, shard and limit filtering."""
    from vlmcap.bundle import read_manifest

    out = output_path(settings)
    manifest = read_manifest(bundle_path(settings))  # its id and prompt say what is stale; no file is hashed
    prompt = manifest.prompt.instruction(settings.prompt)
    state = ResumeState() if settings.overwrite else read_resume_state(out, (manifest.id, prompt))
    check_remote(settings)
    selection = task_filter(settings, state)
    tasks = selection(iter_video_paths(settings.inputs, stdin, settings.remote_options))
    if settings.dedup == "sha256":  # hashes every selected file: what a run would copy is not listed
        from vlmcap.engines.batch.dedup import ContentIndex, Hasher, MadeBy, drop_known_duplicates

        lends = MadeBy(manifest.id, prompt, settings.segment_plan is not None)
        real_out = Path(os.path.realpath(out))
        index = ContentIndex(real_out) if settings.overwrite else ContentIndex.read(real_out)
        tasks = drop_known_duplicates(tasks, index, lends, selection.counts, Hasher())
    return (task.video for task in tasks), selection


def make_driver(bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> Driver:
    if settings.ray.address is not None:
        from vlmcap.engines.batch.ray_pipeline import RayPipeline

        return RayPipeline(bundle, settings, params)
    from vlmcap.engines.batch.pipeline import LocalPipeline
    from vlmcap.engines.runtime.engines import Engines

    return LocalPipeline(bundle, settings, lambda: Engines.open(bundle, settings, params))


def run_batch(settings: BatchConfig, stdin: TextIO | None = None) -> RunStats:
    """Caption `settings.inputs` into `settings.out`: resume, lock, append, compact; the run's stats."""
    out = check_paths(settings)
    with OutputLock(out, settings.wait_lock_s) as lock:
        check_remote(settings)
        bundle, params = prepare(settings)
        from vlmcap.engines.runtime.engine_choice import engine_settings

        settings, choice = engine_settings(bundle, settings, params)  # `auto` engines decided, threads set
        writer = CaptionWriter(out, overwrite=settings.overwrite, before_replace=lock.adopt)
        provenance = Provenance.of_run(bundle, settings, params, choice)
        made_by = (bundle.id, provenance.prompt)  # lines from another bundle or prompt are stale
        state = read_resume_state(out, made_by)
        stats = RunStats(torn_bytes_repaired=writer.torn_bytes)
        if state.duplicated:  # a compaction was interrupted: one line per video before anything is added
            stats.compacted_lines = writer.compact()
            log.warning("%s: %d superseded lines of an interrupted run removed", out, stats.compacted_lines)
            state = read_resume_state(out, made_by)
        interrupt = Interrupt()  # its first signal also abandons a remote request the intake waits on
        selection = task_filter(settings, state, interrupt.stop)
        stdin = stdin if stdin is not None else sys.stdin
        paths = iter_video_paths(settings.inputs, stdin, settings.remote_options, interrupt.stop)
        progress = Progress(settings.progress, settings.log_every_s)
        driver = make_driver(bundle, settings, params)
        dedup = None
        if settings.dedup == "sha256":
            from vlmcap.engines.batch.dedup import DedupDriver, MadeBy

            generation = provenance.fields.get("generation")
            lends = MadeBy(bundle.id, provenance.prompt, settings.segment_plan is not None, generation)
            driver = dedup = DedupDriver.open(driver, writer.path, lends)
        srt_dir, vtt_dir = (Path(d) if d is not None else None for d in (settings.srt_dir, settings.vtt_dir))
        try:
            tasks = selection(paths)
            with BatchRun(driver, tasks, provenance, stats, progress, settings.quality.strict, interrupt) as run:
                for records in run:
                    t0 = time.perf_counter()
                    # Sidecars first: a run killed before the line is written redoes the video (and them).
                    for i in write_sidecars(records, srt_dir, vtt_dir):  # now error lines
                        stats.unwritten(run.outcomes[i])
                    offsets = writer.append(records)
                    if dedup is not None:
                        dedup.written(records, offsets)
                    stats.stage_s["write"] += time.perf_counter() - t0
        finally:
            writer.close()
            if dedup is not None:
                dedup.index.close()
                stats.hashed_bytes, stats.stage_s["hash"] = dedup.hasher.bytes, dedup.hasher.seconds
        counts = selection.counts
        stats.skipped_ok, stats.skipped_failed, stats.other_shard = (
            counts.skipped_ok,
            counts.skipped_failed,
            counts.other_shard,
        )
        stats.recaptioned_stale, stats.skipped_stale = counts.stale, counts.skipped_stale
        stats.foreign_lines = state.foreign_lines
        if not stats.interrupted_by and counts.superseding:
            stats.compacted_lines += writer.compact()
    if settings.stats is not None:
        report = {**stats.to_dict(), "bundle": bundle.id, "out": str(out)}
        atomic_write_text(Path(settings.stats), json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return stats
