"""`vlmcap batch` and `vlmcap probe`: caption videos into a JSONL, or show what decoding sees."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import click

from vlmcap.cli.config_source import ConfigSource, config_options
from vlmcap.cli.options import SEGMENT_PLAN, decode_options, engine_options, flag, flags, sampling_options

# `vlmcap batch`'s own flags (and probe's remote ones), generated from their config fields (vlmcap/cli/options.py).
segment_options = flags(  # the segment plan and the files written per video (batch)
    *SEGMENT_PLAN,
    ("--srt", "batch.srt_dir"),
    ("--vtt", "batch.vtt_dir"),
    ("--thumbnails", "batch.thumbnails"),
)
quality_options = flags(  # the caption guards (docs/BATCH.md, "Caption quality")
    ("--quality-checks", "batch.quality.checks", {"empty": "none"}),
    ("--expected-script", "batch.quality.script"),
    ("--quality-retry", "batch.quality.retry"),
    ("--strict-quality", "batch.quality.strict"),
)
vllm_options = flags(
    ("--tensor-parallel-size", "batch.vllm.tensor_parallel_size"),
    ("--gpu-memory-utilization", "batch.vllm.gpu_memory_utilization"),
    ("--max-model-len", "batch.vllm.max_model_len"),
    ("--dtype", "batch.vllm.dtype"),
    ("--quantization", "batch.vllm.quantization"),
    ("--max-num-seqs", "batch.vllm.max_num_seqs"),
    ("--enforce-eager", "batch.vllm.enforce_eager"),
    ("--kv-cache-gib", "batch.vllm.kv_cache_gib"),
)
ray_options = flags(  # Run on Ray Data: --ray (a running cluster or a local one) or --ray ADDRESS (docs/RAY.md)
    ("--ray", "batch.ray.address", {"is_flag": False, "flag_value": "auto"}),
    ("--ray-decode-actors", "batch.ray.decode_actors"),
    ("--ray-vision-actors", "batch.ray.vision_actors"),
    ("--ray-llm-actors", "batch.ray.llm_actors"),
    ("--ray-gpus-per-vision-actor", "batch.ray.gpus_per_vision_actor"),
    ("--ray-gpus-per-llm-actor", "batch.ray.gpus_per_llm_actor"),
    ("--ray-num-cpus", "batch.ray.num_cpus"),
)
output_options = flags(  # what a batch run writes and which videos it takes
    ("--out", "batch.out"),
    ("--limit", "batch.limit"),
    ("--shard", "batch.shard"),
    ("--retry-errors", "batch.retry_errors"),
    ("--recaption", "batch.recaption"),
    ("--overwrite", "batch.overwrite"),
    ("--dedup", "batch.dedup"),
    ("--wait-lock", "batch.wait_lock_s"),
    ("--stats", "batch.stats"),
    ("--progress", "batch.progress"),
)
remote_options = flags(  # s3://, gs://, http(s):// inputs (batch, probe)
    ("--spool-dir", "batch.remote.spool_dir"),
    ("--remote-max-mb", "batch.remote.max_object_mb"),
    ("--remote-timeout", "batch.remote.timeout_s"),
    ("--remote-retries", "batch.remote.retries"),
    ("--remote-backoff", "batch.remote.backoff_s"),
    ("--remote-anonymous", "batch.remote.anonymous"),
)


@click.command()
@click.argument("inputs", nargs=-1)
@config_options(overrides="inputs")
@output_options
@engine_options
@decode_options
@segment_options
@sampling_options
@quality_options
@vllm_options
@ray_options
@remote_options
@click.option("--dry-run", is_flag=True, help="Print the videos that would be captioned, and stop.")
def batch(inputs: tuple[str, ...], config: ConfigSource, dry_run: bool) -> None:
    """Caption INPUTS (files, folders, globs, list files, - for stdin) into the JSONL --out.

    INPUTS may also hold `section.key=value` settings (batch.generation.max_new_tokens=48), applied
    like --config's; a file whose name reads as one is written ./NAME.

    Resumable (a re-run skips videos already captioned), crash-safe, and locked against a second
    concurrent run. Every flag can also come from the `batch:` section of --config FILE (flags
    win), so a nightly job can be one config file. Exit codes: 0 all captioned, 1 some failed
    (error lines written), 2 bad usage, 75 another run holds the lock, 130/143 interrupted.

    \b
    Examples:
      vlmcap batch ./videos --out captions.jsonl
      vlmcap batch ./recordings --out captions.jsonl --segments fixed:30 --srt subtitles/
      find /data -name '*.mp4' | vlmcap batch - --out captions.jsonl --shard 0/4 --stats stats.json
      vlmcap batch --config nightly.yaml
      vlmcap batch ./videos --out captions.jsonl batch.generation.max_new_tokens=48
    """
    from vlmcap.engines.api import caption_videos, selected_videos
    from vlmcap.engines.batch.progress import summary_lines

    if inputs:
        config.flags["batch.inputs"] = list(inputs)
    settings = config.load().batch
    if not settings.inputs:
        raise click.UsageError("no INPUTS: name files, folders, globs, list files or - (or set batch.inputs)")
    if dry_run:
        videos, counts = selected_videos(settings=settings)  # the Python API's selection (engines/api.py)
        for video in videos:
            click.echo(video)
        click.echo(
            f"new {counts.new}, stale {counts.stale + counts.skipped_stale}, "
            f"failed {counts.retried + counts.skipped_failed}, done {counts.skipped_ok - counts.skipped_stale}"
            + (f"; {counts.other_shard} in other shards" if counts.other_shard else ""),
            err=True,
        )
        held = [
            f"{n} {what}"
            for n, what in (
                (counts.skipped_stale, "stale (--recaption stale captions them again)"),
                (counts.skipped_failed, "failed (--retry-errors tries them again)"),
            )
            if n
        ]
        click.echo(
            f"would caption {counts.selected - counts.duplicates}"  # --dedup: copies are selected, not captioned
            + (f", copy {counts.duplicates} duplicates (--dedup)" if counts.duplicates else "")
            + (f"; would skip {', '.join(held)}" if held else "")
            + (" (stopped at --limit)" if counts.over_limit else ""),
            err=True,
        )
        return
    stats = caption_videos(settings=settings)  # the Python API's run (engines/api.py)
    for line in summary_lines(stats.to_dict()):
        click.echo(line, err=True)
    sys.exit(stats.exit_code)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@config_options(overrides="inputs")
@flag("--frames", "video.num_frames")
@decode_options
@remote_options
def probe(inputs: tuple[str, ...], config: ConfigSource) -> None:
    """Decode INPUTS (files, folders, globs, list files, - for stdin) and print one JSON line per video.

    Shows what the captioner would see: metadata, decoder used, sampled timestamps, or the error.
    Exit code 1 if any video failed.

    Example: vlmcap probe ./videos --frames 8 > probe.jsonl
    """
    from vlmcap.video.discovery import InputProblem, is_video_name, iter_video_paths
    from vlmcap.video.pool import DecodePool
    from vlmcap.video.remote_checks import check_remote_inputs

    loaded = config.load()
    settings = loaded.batch
    options = settings.decode_options(loaded.video.num_frames)
    check_remote_inputs(inputs, options.remote, is_video_name)
    failed = 0

    def error_line(path: str, error_type: str | None, message: str | None, decode_ms: float = 0.0) -> None:
        nonlocal failed
        failed += 1
        record = {"video": path, "status": "error", "error": {"type": error_type, "message": message}}
        click.echo(json.dumps({**record, "decode_ms": round(decode_ms, 1)}, ensure_ascii=False))

    def videos() -> Iterator[str]:
        for item in iter_video_paths(inputs, remote=options.remote):
            if isinstance(item, InputProblem):
                error_line(item.path, item.error_type, item.message)  # nothing to decode
            else:
                yield item

    with DecodePool(options, num_workers=settings.workers, timeout_s=settings.decode_timeout_s) as pool:
        for r in pool.imap_unordered(videos()):
            if not r.ok:
                error_line(r.path, r.error_type, r.error_message, r.decode_ms)
                continue
            record = {"video": r.path, "status": "ok", "frames_s": r.video.timestamps_s, **r.video.meta.__dict__}
            click.echo(json.dumps({**record, "decode_ms": round(r.decode_ms, 1)}, ensure_ascii=False))
    sys.exit(1 if failed else 0)
