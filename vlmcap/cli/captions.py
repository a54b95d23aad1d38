"""`vlmcap captions`: what to do with a captions JSONL once `vlmcap batch` has written it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vlmcap.cli.options import json_option

# The same names as vlmcap.engines.outputs.convert.FORMATS / STATUSES (tests/engines/outputs/test_captions_convert.py
# checks), spelled out so that `vlmcap --help` does not import pyarrow.
FORMATS = ("parquet", "csv", "webdataset")
STATUSES = ("ok", "error", "all")


@click.group()
def captions() -> None:
    """Work with a captions JSONL (what `vlmcap batch --out` writes)."""


@captions.command("convert")
@click.argument("captions_file", metavar="CAPTIONS", type=click.Path(path_type=Path))
@click.option("--to", "fmt", type=click.Choice(FORMATS), required=True, help="The dataset format to write.")
@click.option(
    "--out",
    help="Output file (default: CAPTIONS with the format's suffix; a folder: CAPTIONS' name in it). "
    "With --shard-size a shard name with a %d field, e.g. shards/train-%06d.tar.",
)
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default="ok",
    show_default=True,
    help="Keep the videos whose latest record has this status.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(1),
    help="webdataset: this many samples per tar, named by --out's %d field (default: NAME-%06d.tar).",
)
@click.option("--with-videos", is_flag=True, help="webdataset: put each video's bytes in its sample too.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist (default: refuse).")
@json_option
def convert(
    captions_file: Path,
    fmt: str,
    out: str | None,
    status: str,
    shard_size: int | None,
    with_videos: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Convert the captions JSONL CAPTIONS to Parquet, CSV or WebDataset tars (docs/BATCH.md,
    "Dataset formats").

    One row (sample) per video, its latest line; torn and foreign lines are skipped and counted.
    The JSONL stays the ledger `vlmcap batch` resumes from: convert again after each run. The
    output appears whole or not at all.

    \b
    Examples:
      vlmcap captions convert captions.jsonl --to parquet          # -> captions.parquet
      vlmcap captions convert captions.jsonl --to csv --status all --out report.csv
      vlmcap captions convert captions.jsonl --to webdataset --shard-size 1000 --out shards/train-%06d.tar
    """
    from vlmcap.engines.outputs.convert import convert_captions

    stats = convert_captions(
        captions_file,
        fmt,
        out,
        status=status,
        overwrite=overwrite,
        shard_size=shard_size,
        with_videos=with_videos,
    )
    if as_json:
        click.echo(json.dumps(stats.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(stats.summary())


@captions.command("report")
@click.argument("captions_file", metavar="CAPTIONS", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The folder the site is written to.")
@click.option("--stats", "stats_file", type=click.Path(dir_okay=False, path_type=Path), help="The run's --stats JSON.")
@click.option("--srt-dir", type=click.Path(file_okay=False, path_type=Path), help="Link each video's SRT file here.")
@click.option("--vtt-dir", type=click.Path(file_okay=False, path_type=Path), help="Link each video's WebVTT file here.")
@click.option("--title", help="The report's title (default: the captions file's name).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (default: refuse).")
@json_option
def report(
    captions_file: Path,
    out: Path,
    stats_file: Path | None,
    srt_dir: Path | None,
    vtt_dir: Path | None,
    title: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Write a static site to look at the captions JSONL CAPTIONS: counts, errors by type, guard flags,
    and every video with its caption, flags and per-segment timeline (docs/BATCH.md, "Looking at a night").

    It opens from file:// on an offline machine (no server, no network): open OUT/index.html. The
    site appears whole or not at all.

    \b
    Examples:
      vlmcap captions report captions.jsonl --out report/
      vlmcap captions report captions.jsonl --out report/ --stats stats.json --srt-dir subs/ --overwrite
    """
    from vlmcap.engines.outputs.report import build_report

    stats = build_report(
        captions_file, out, stats_file=stats_file, srt_dir=srt_dir, vtt_dir=vtt_dir, overwrite=overwrite, title=title
    )
    click.echo(json.dumps(stats.to_dict(), ensure_ascii=False, indent=2) if as_json else stats.summary())
