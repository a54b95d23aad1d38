"""`vlmcap captions convert`: the captions JSONL as Parquet, CSV or WebDataset (docs/BATCH.md, "Dataset formats").

The JSONL stays the crash-safe ledger; a conversion is a snapshot of it (engines/outputs/ledger_scan.py)
in the fixed columns of engines/outputs/schema.py, one writer per format. Every output is written
beside its final name and renamed into place only when all of them are complete: a failed
conversion leaves no output behind and the files that were there untouched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vlmcap.engines.batch.ledger import real_path
from vlmcap.engines.outputs.csv_writer import write_csv
from vlmcap.engines.outputs.ledger_scan import latest_records, scan_ledger
from vlmcap.engines.outputs.parquet_writer import write_parquet
from vlmcap.engines.outputs.schema import SCHEMA
from vlmcap.engines.outputs.webdataset_writer import write_webdataset
from vlmcap.errors import ConfigError
from vlmcap.storage.files import open_regular, staged_files
from vlmcap.storage.output_guard import check_file_output, real

FORMATS = ("parquet", "csv", "webdataset")
STATUSES = ("ok", "error", "all")
_SUFFIX = {"parquet": ".parquet", "csv": ".csv", "webdataset": ".tar"}
_SNIFF_BYTES = 1 << 16


@dataclass
class ConvertStats:
    """What a conversion read and wrote (the CLI's summary, `--json`)."""

    input: str
    format: str
    status: str
    outputs: list[str] = field(default_factory=list)
    records: int = 0  # written: one per video
    lines: int = 0
    torn_lines: int = 0  # a last line cut short by a crash
    foreign_lines: int = 0  # not a caption record: hand-edited, corrupt, another tool's
    duplicates: int = 0  # older lines of a video that has a later one (--retry-errors, a changed file)
    left_out: int = 0  # videos whose latest record has another status than --status asked for
    videos_unavailable: int = 0  # --with-videos: a video missing or changed since captioned; its sample left out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        where = self.outputs[0] if len(self.outputs) == 1 else f"{len(self.outputs)} shards ({self.outputs[0]} ...)"
        parts = [f"{self.records} record{'s' * (self.records != 1)} -> {where}"]
        skipped = [f"{n} {what}" for n, what in ((self.torn_lines, "torn"), (self.foreign_lines, "foreign")) if n]
        if skipped:
            parts.append(f"skipped {' and '.join(skipped)} line{'s' * (self.torn_lines + self.foreign_lines != 1)}")
        if self.duplicates:
            parts.append(f"{self.duplicates} superseded line{'s' * (self.duplicates != 1)} of re-captioned videos")
        if self.left_out:
            parts.append(f"{self.left_out} not {self.status} left out (--status all keeps them)")
        if self.videos_unavailable:
            parts.append(f"{self.videos_unavailable} left out: video missing or changed since captioned")
        return "; ".join(parts)


# --- where the output goes ---------------------------------------------------------------------


def _shard_pattern(out: Path) -> Path:
    """`out` as a shard name with one %d field: `x-%06d.tar` as given, `x.tar` -> `x-%06d.tar`."""
    if "%" not in out.name:
        return out.with_name(f"{out.stem}-%06d{out.suffix or '.tar'}")
    fields = re.findall(r"%[^%]*?[a-zA-Z%]", out.name)
    if len(fields) != 1 or not re.fullmatch(r"%0?\d*d", fields[0]):
        raise ConfigError(f"{out}: a shard name takes one %d field (e.g. captions-%06d.tar)")
    return out


def _shard_regex(pattern: Path) -> re.Pattern[str]:
    prefix, suffix = re.split(r"%0?\d*d", pattern.name)
    return re.compile(re.escape(prefix) + r"\d+" + re.escape(suffix))


def _is_tar(f: BinaryIO) -> bool:
    return f.read(512)[257:262] == b"ustar"  # the POSIX header's magic (PAX tars carry it too)


def _is_captions_csv(f: BinaryIO) -> bool:
    return f.readline(1 << 16).rstrip(b"\r\n") == ",".join(SCHEMA.names).encode()


# What each format's file starts with: an existing output is replaced only when it is one of these.
_RECOGNISE: dict[str, tuple[Callable[[BinaryIO], bool], str]] = {
    "parquet": (lambda f: f.read(4) == b"PAR1", "a Parquet file"),
    "csv": (_is_captions_csv, "a captions CSV (vlmcap's header)"),
    "webdataset": (_is_tar, "a tar"),
}


def _existing_shards(pattern: Path) -> list[Path]:
    if not pattern.parent.is_dir():
        return []
    match = _shard_regex(pattern).fullmatch
    return sorted(p for p in pattern.parent.iterdir() if match(p.name))


def _resolve_output(src: Path, fmt: str, out: str | Path | None, sharded: bool) -> Path:
    """The output file (or the shard name pattern)."""
    suffix = _SUFFIX[fmt]
    if out is None:
        target = src.with_suffix(suffix)
    elif str(out).endswith(os.sep) or Path(out).is_dir():
        target = Path(out) / (src.stem + suffix)
    else:
        target = Path(out)
    return _shard_pattern(target) if sharded else target


# --- the conversion ----------------------------------------------------------------------------


def check_captions_file(src: Path) -> None:
    """A ConfigError unless `src` is a regular file that starts like a captions JSONL."""
    if not src.exists():
        raise ConfigError(f"{src}: no such file")
    if src.is_dir():
        raise ConfigError(f"{src}: is a directory, not a captions JSONL")
    try:
        with open_regular(src) as f:  # a FIFO or a device: a plain open could block forever
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise ConfigError(f"{src}: {e.strerror}; give the file `vlmcap batch --out` wrote") from None
    # Binary from its first line on: not a ledger. NULs further down are what a power cut leaves at
    # the end of a ledger (blocks allocated, never written): skipped and counted like a torn line.
    if b"\0" in head.split(b"\n", 1)[0]:
        raise ConfigError(f"{src}: not a captions JSONL (binary data); give the file `vlmcap batch --out` wrote")


def convert_captions(
    src: Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    status: str = "ok",
    overwrite: bool = False,
    shard_size: int | None = None,
    with_videos: bool = False,
) -> ConvertStats:
    """Convert the captions JSONL `src` to `fmt` (parquet, csv, webdataset) at `out` (default: `src`
    with the format's suffix; a folder: `src`'s name in it), keeping the videos whose latest record
    has `status` (ok, error, all)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if status not in STATUSES:
        raise ConfigError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    if fmt != "webdataset" and (shard_size is not None or with_videos):
        raise ConfigError("--shard-size and --with-videos are for --to webdataset")
    src = Path(src)
    check_captions_file(src)
    target = _resolve_output(src, fmt, out, sharded=shard_size is not None)
    if shard_size is None and target.is_dir():
        raise ConfigError(f"{target}: is a directory; name the output file")
    # Never a video's name (`%05d.mp4` shards would replace synth's videos), never the ledger, and an
    # existing output is replaced only when it is one of this format's (vlmcap/storage/output_guard.py).
    recognise, kind = _RECOGNISE[fmt]
    check_file_output("--out", target, [("CAPTIONS", src)], recognise=recognise, kind=kind)
    existing = _existing_shards(target) if shard_size is not None else [target] if target.exists() else []
    for shard in existing[:1] if shard_size is None else existing:
        check_file_output("--out", shard, [("CAPTIONS", src)], recognise=recognise, kind=kind)
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]}: exists; pass --overwrite to replace it")
    replaced = {str(real(path)): path for path in existing}

    stats = ConvertStats(input=str(src), format=fmt, status=status)
    with open_regular(src) as f:
        scan = scan_ledger(f)
        seen = scan.seen
        stats.lines, stats.torn_lines, stats.foreign_lines = seen.lines, seen.torn_lines, seen.foreign_lines
        stats.duplicates = scan.duplicates
        if not scan.latest:  # one line says it all, not a warning per line first
            raise ConfigError(
                f"{src}: no caption record to convert: the file is empty"
                if not stats.lines
                else f"{src}: not a captions JSONL: none of its {stats.lines} lines is a vlmcap caption record"
            )
        seen.warn(src)

        def wanted() -> Iterator[tuple[dict[str, Any], bytes]]:
            for record, line in latest_records(f, scan):
                if real_path(record) in replaced:  # before any output replaces it (staged until the end)
                    raise ConfigError(
                        f"--out {replaced[real_path(record)]}: is the video {record.get('video')} of {src}; "
                        "write the output apart"
                    )
                if status in ("all", record["status"]):
                    yield record, line
                else:
                    stats.left_out += 1

        with staged_files() as staged:
            if fmt == "parquet":
                with staged.open(target) as binary:
                    stats.records = write_parquet((r for r, _ in wanted()), binary)
                written = [target]
            elif fmt == "csv":
                with staged.open(target, "w", encoding="utf-8", newline="") as text:
                    stats.records = write_csv((r for r, _ in wanted()), text)
                written = [target]
            else:
                written = write_webdataset(wanted(), staged, target, shard_size, with_videos, stats)
    for stale in {p.resolve() for p in existing} - {p.resolve() for p in written}:
        stale.unlink(missing_ok=True)  # --overwrite: shards of a bigger earlier conversion
    stats.outputs = [str(p) for p in written]
    return stats
