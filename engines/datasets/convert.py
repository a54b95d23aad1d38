"""The captions JSONL as dataset files: Parquet, CSV, WebDataset tars (docs/BATCH.md, "Dataset formats").

The JSONL stays the crash-safe ledger; a conversion is a snapshot of it, read the way the ledger
reads itself (engines/batch/ledger.py): a line is a caption record or it is skipped and counted (torn by
a crash, hand-edited, foreign), and the latest line of a video is its record.

- The columns are fixed and typed here (`COLUMNS`), never inferred from the data: a file of errors
  only still has `caption` typed string. A value that does not fit its column (a field a newer
  vlmcap added, a hand-edited line) is not dropped: it goes to the `extra` column as JSON.
- The ledger is read twice through one open file (find the latest line of each video, then convert
  those), so memory grows with the number of videos, not the file's size, and a run appending or
  compacting meanwhile cannot shift the lines under the second pass.
- Every output is written beside its final name and renamed into place only when all of them are
  complete: a failed conversion leaves no output behind and the files that were there untouched.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime
import hashlib
import io
import itertools
import logging
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlmcap.engines.batch.ledger import caption_record, real_path
from vlmcap.errors import ConfigError
from vlmcap.files import fsync_path, json_line, remove_stale_temporaries, temp_sibling

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "webdataset")
STATUSES = ("ok", "error", "all")
SCHEMA_VERSION = "2"  # in the Parquet file's metadata (`vlmcap.schema`); raised when a column changes
ROWS_PER_GROUP = 10_000
_SUFFIX = {"parquet": ".parquet", "csv": ".csv", "webdataset": ".tar"}
_SNIFF_BYTES = 1 << 16
_FOREIGN_WARNINGS = 5

_STR, _F64, _I64, _BOOL = pa.string(), pa.float64(), pa.int64(), pa.bool_()
_TIMESTAMP = pa.timestamp("us", tz="UTC")
SEGMENT = pa.struct(
    [
        ("start_s", _F64),
        ("end_s", _F64),
        ("caption", _STR),
        ("frames_s", pa.list_(_F64)),
        ("num_tokens", _I64),
        ("finish_reason", _STR),
        ("quality", pa.struct([("flags", pa.list_(_STR)), ("retried", _BOOL)])),
    ]
)


@dataclass(frozen=True)
class Column:
    name: str
    path: tuple[str, ...]  # where the value sits in a JSONL record (engines/batch/records.py, `to_record`)
    type: pa.DataType


COLUMNS = (
    Column("video", ("video",), _STR),
    Column("status", ("status",), _STR),
    Column("caption", ("caption",), _STR),
    Column("duration_s", ("duration_s",), _F64),
    Column("num_tokens", ("num_tokens",), _I64),
    Column("finish_reason", ("finish_reason",), _STR),
    Column("frames_s", ("frames_s",), pa.list_(_F64)),
    Column("segments", ("segments",), pa.list_(SEGMENT)),
    Column("decoder", ("decoder",), _STR),
    Column("quality_flags", ("quality", "flags"), pa.list_(_STR)),
    Column("quality_retried", ("quality", "retried"), _BOOL),
    Column("bundle", ("bundle",), _STR),
    Column("prompt", ("prompt",), _STR),
    Column("vlmcap_version", ("provenance", "vlmcap"), _STR),
    Column("vision_precision", ("provenance", "vision", "precision"), _STR),
    Column("vision_engine", ("provenance", "vision", "engine"), _STR),
    Column("llm_dtype", ("provenance", "llm", "dtype"), _STR),
    Column("llm_quantization", ("provenance", "llm", "quantization"), _STR),
    Column("llm_engine", ("provenance", "llm", "engine"), _STR),
    Column("max_new_tokens", ("provenance", "generation", "max_new_tokens"), _I64),
    Column("temperature", ("provenance", "generation", "temperature"), _F64),
    Column("top_p", ("provenance", "generation", "top_p"), _F64),
    Column("repetition_penalty", ("provenance", "generation", "repetition_penalty"), _F64),
    Column("seed", ("provenance", "generation", "seed"), _I64),
    Column("stop_token_ids", ("provenance", "generation", "stop_token_ids"), pa.list_(_I64)),
    Column("error_type", ("error", "type"), _STR),
    Column("error_message", ("error", "message"), _STR),
    Column("file_path", ("file", "path"), _STR),
    Column("file_size", ("file", "size"), _I64),
    Column("file_mtime_ns", ("file", "mtime_ns"), _I64),
    Column("sha256", ("sha256",), _STR),
    Column("duplicate_of", ("duplicate_of",), _STR),
    Column("decode_ms", ("timings_ms", "decode"), _F64),
    Column("vision_ms", ("timings_ms", "vision"), _F64),
    Column("llm_ms", ("timings_ms", "llm"), _F64),
    Column("finished_at", ("finished_at",), _TIMESTAMP),
)
SCHEMA = pa.schema(
    [pa.field(c.name, c.type) for c in COLUMNS] + [pa.field("extra", _STR)],
    metadata={"vlmcap.schema": SCHEMA_VERSION},
)
_CONTAINERS = {c.path[:i] for c in COLUMNS for i in range(1, len(c.path))}  # error, provenance.llm, ...


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


# --- one record as one row ---------------------------------------------------------------------

_NOTHING = object()  # nothing left over for `extra`


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _utf8(value: Any) -> bool:
    try:
        value.encode("utf-8")  # a file name in another encoding reads back with lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def parse_timestamp(text: str) -> datetime.datetime | None:
    """`finished_at` ("2026-11-26T20:57:51.122Z") as an aware UTC datetime, or None when it is not one."""
    try:
        value = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:  # Python 3.10 reads no "Z": replaced above
        return None
    return value.astimezone(datetime.timezone.utc) if value.tzinfo is not None else None


def _fit(value: Any, kind: pa.DataType) -> tuple[Any, Any]:
    """(the value as a column of `kind` holds it, what is left over for `extra` or _NOTHING)."""
    if value is None:
        return None, _NOTHING
    if kind == _STR:
        return (value, _NOTHING) if isinstance(value, str) and _utf8(value) else (None, value)
    if kind == _F64:
        if _is_number(value):
            with contextlib.suppress(OverflowError):  # an int beyond float's range
                return float(value), _NOTHING
        return None, value
    if kind == _BOOL:
        return (value, _NOTHING) if isinstance(value, bool) else (None, value)
    if kind == _I64:
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        return (value, _NOTHING) if ok else (None, value)
    if kind == _TIMESTAMP:
        parsed = parse_timestamp(value) if isinstance(value, str) else None
        return (parsed, _NOTHING) if parsed is not None else (None, value)
    if pa.types.is_struct(kind):
        if not isinstance(value, dict):
            return None, value
        held, left = {}, dict(value)
        for member in kind:
            held[member.name], rest = _fit(value.get(member.name), member.type)
            if rest is _NOTHING:
                left.pop(member.name, None)
            else:
                left[member.name] = rest
        return held, left or _NOTHING
    if pa.types.is_list(kind) and isinstance(value, list):
        item = kind.value_type
        if pa.types.is_struct(item):
            if not all(isinstance(v, dict) for v in value):
                return None, value
            fitted = [_fit(v, item) for v in value]
            rests = [{} if rest is _NOTHING else rest for _, rest in fitted]
            return [held for held, _ in fitted], rests if any(rests) else _NOTHING
        fitted = [_fit(v, item) for v in value]
        if all(rest is _NOTHING and held is not None for held, rest in fitted):
            return [held for held, _ in fitted], _NOTHING
    return None, value


def _json(value: Any) -> str:
    return json_line(value).rstrip("\n")  # as the JSONL spells it: UTF-8, or \udcxx escapes for lone surrogates


def to_row(record: dict[str, Any]) -> dict[str, Any]:
    """A caption record as a row of `SCHEMA`: each column's value or None, and `extra`, the JSON of
    whatever no column holds (None when nothing is left)."""
    left = copy.deepcopy(record)
    row: dict[str, Any] = {}
    for column in COLUMNS:
        *parents, name = column.path
        holder: Any = left
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            row[column.name] = None
            continue
        row[column.name], rest = _fit(holder.get(name), column.type)
        if rest is _NOTHING:
            holder.pop(name, None)
        else:
            holder[name] = rest
    # Emptied containers (or null: a video with no file identity) are all in the columns; the
    # deepest first, so a container left with only emptied ones goes too.
    for path in sorted(_CONTAINERS, key=len, reverse=True):
        *parents, name = path
        holder = left
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and name in holder and holder[name] in ({}, None):
            del holder[name]
    row["extra"] = _json(left) if left else None
    return row


# --- reading the ledger ------------------------------------------------------------------------


@dataclass
class _Scan:
    lines: int = 0
    latest: dict[str, int] = field(default_factory=dict)  # a video's real path -> its latest line's index
    foreign_at: list[int] = field(default_factory=list)  # line numbers of the first few, for the warnings
    torn_at: int | None = None

    def warn(self, path: Path, stats: ConvertStats) -> None:
        for number in self.foreign_at:
            log.warning("%s:%d: not a vlmcap caption record; skipped", path, number)
        if stats.foreign_lines > len(self.foreign_at):
            log.warning(
                "%s: %d more lines that are no caption record skipped", path, stats.foreign_lines - len(self.foreign_at)
            )
        if self.torn_at is not None:
            log.warning("%s:%d: a torn last line (cut short by a crash); skipped", path, self.torn_at)


def _scan(f: IO[bytes], stats: ConvertStats) -> _Scan:
    scan = _Scan()
    records = 0
    for index, line in enumerate(f):
        scan.lines += 1
        if not line.strip():
            continue  # a blank line: nothing to report
        record = caption_record(line)
        if record is None:
            if not line.endswith(b"\n"):
                stats.torn_lines += 1  # only the last line can lack its newline
                scan.torn_at = index + 1
                continue
            stats.foreign_lines += 1
            if len(scan.foreign_at) < _FOREIGN_WARNINGS:
                scan.foreign_at.append(index + 1)
            continue
        records += 1
        scan.latest[real_path(record) or ""] = index  # the key compaction keeps a video's last line by
    stats.lines = scan.lines
    stats.duplicates = records - len(scan.latest)
    return scan


def _latest_records(f: IO[bytes], scan: _Scan) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(record, its line without the newline) for the latest line of each video, in file order."""
    keep = set(scan.latest.values())
    f.seek(0)
    for index, line in enumerate(itertools.islice(f, scan.lines)):
        if index in keep:
            record = caption_record(line)
            if record is not None:
                yield record, line.rstrip(b"\r\n")


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


# --- writing -----------------------------------------------------------------------------------


class _Staged:
    """Files written under temporary names beside their targets and renamed into place together."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, Path]] = []  # (temporary, target)

    def open(self, path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
        target = Path(os.path.realpath(path))  # renaming over a symlink would replace the link
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)  # of conversions that were killed
        tmp = temp_sibling(target)
        self.files.append((tmp, target))
        return open(tmp, mode, **kwargs)

    def commit(self) -> None:
        for tmp, _ in self.files:
            fsync_path(tmp)
        for tmp, target in self.files:
            os.replace(tmp, target)
        for directory in {target.parent for _, target in self.files}:
            fsync_path(directory)

    def discard(self) -> None:
        for tmp, _ in self.files:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _staged_outputs() -> Iterator[_Staged]:
    staged = _Staged()
    try:
        yield staged
        staged.commit()
    except BaseException:
        staged.discard()
        raise


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _write_parquet(records: Iterable[dict[str, Any]], f: IO[bytes]) -> int:
    written = 0
    with pq.ParquetWriter(f, SCHEMA) as writer:  # no rows: still a valid file with the schema
        for chunk in _chunks(records, ROWS_PER_GROUP):
            writer.write_table(pa.Table.from_pylist([to_row(r) for r in chunk], schema=SCHEMA))
            written += len(chunk)
    return written


def format_timestamp(value: datetime.datetime) -> str:
    """As `finished_at` is written (engines/batch/records.py, `utc_now`): milliseconds unless finer, `Z`."""
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=spec).replace("+00:00", "Z")


def csv_cell(value: Any) -> str | int | float:
    """One CSV field: empty for null, JSON for lists, objects and booleans, the ledger's text for times."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON spells it, not Python's True
    if isinstance(value, (list, dict)):
        return _json(value)
    if isinstance(value, datetime.datetime):
        return format_timestamp(value)
    return value


def _write_csv(records: Iterable[dict[str, Any]], f: IO[str]) -> int:
    writer = csv.writer(f)  # RFC 4180: fields holding a newline, comma or quote are quoted
    writer.writerow(SCHEMA.names)
    written = 0
    for record in records:
        row = to_row(record)
        writer.writerow([csv_cell(row[name]) for name in SCHEMA.names])
        written += 1
    return written


def _captioned_path(record: dict[str, Any]) -> str:
    """The file the record was captioned from: `file.path` (the real path), else (older lines) `video`."""
    file = record.get("file")
    return file["path"] if isinstance(file, dict) and isinstance(file.get("path"), str) else record["video"]


def sample_key(record: dict[str, Any]) -> str:
    """The WebDataset key of a record's sample: stable (the same ledger gives the same keys), tar- and
    WebDataset-safe (ASCII letters, digits, `_` and `-`; no dot, which would end the key), readable
    (the file name's stem) and unique (a hash of the path it was captioned from)."""
    path = _captioned_path(record)
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9]+", "_", os.path.splitext(os.path.basename(path))[0]).strip("_")[:48]
    return f"{stem}-{digest}" if stem else digest


def _tar_member(tar: tarfile.TarFile, name: str, f: IO[bytes], size: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    tar.addfile(info, f)


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    _tar_member(tar, name, io.BytesIO(data), len(data), mtime)


def _open_video(record: dict[str, Any]) -> tuple[IO[bytes], int, str] | None:
    """(the open video, its size, its extension) when it is still the file that was captioned."""
    file, path = record.get("file"), _captioned_path(record)
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed by the caller
    except OSError as e:
        log.warning("%s: not in the WebDataset: the video cannot be read (%s)", record["video"], e.strerror)
        return None
    st = os.fstat(f.fileno())
    if isinstance(file, dict) and (file.get("size"), file.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
        f.close()
        log.warning("%s: not in the WebDataset: the video changed since it was captioned", record["video"])
        return None
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    return f, st.st_size, extension if re.fullmatch(r"[a-z0-9]{1,8}", extension) else "video"


class _Shards:
    """The tar being written: one, or a new one every `shard_size` samples named by `target`'s %d field."""

    def __init__(self, staged: _Staged, target: Path, shard_size: int | None) -> None:
        self.staged, self.target, self.shard_size = staged, target, shard_size
        self.written: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._file: IO[bytes] | None = None
        self._samples = 0

    def tar(self) -> tarfile.TarFile:
        """The tar the next sample goes to."""
        if self._tar is None or (self.shard_size is not None and self._samples == self.shard_size):
            self.close()
            path = Path(str(self.target) % len(self.written)) if self.shard_size is not None else self.target
            self._file = self.staged.open(path)
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            self.written.append(path)
            self._samples = 0
        self._samples += 1
        return self._tar

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()  # a tar opened on a file object leaves the file open
            self._tar = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_webdataset(
    records: Iterable[tuple[dict[str, Any], bytes]],
    staged: _Staged,
    target: Path,
    shard_size: int | None,
    with_videos: bool,
    stats: ConvertStats,
) -> list[Path]:
    shards = _Shards(staged, target, shard_size)
    used: set[str] = set()
    try:
        for record, line in records:
            video = _open_video(record) if with_videos else None
            if with_videos and video is None:
                stats.videos_unavailable += 1
                continue
            tar = shards.tar()
            key = sample_key(record)
            while key in used:  # two spellings of one path that resolved apart: keep both samples
                key = hashlib.sha256(key.encode()).hexdigest()[:16]
            used.add(key)
            finished_at = record.get("finished_at")
            finished = parse_timestamp(finished_at) if isinstance(finished_at, str) else None
            mtime = int(finished.timestamp()) if finished is not None else 0  # the same ledger, the same bytes
            _tar_bytes(tar, f"{key}.json", line + b"\n", mtime)
            if isinstance(record.get("caption"), str):
                _tar_bytes(tar, f"{key}.txt", record["caption"].encode("utf-8", "backslashreplace"), mtime)
            if video is not None:
                f, size, extension = video
                with f:
                    _tar_member(tar, f"{key}.{extension}", f, size, mtime)
            stats.records += 1
        if not shards.written:  # no samples: still one (empty) tar, so the output exists
            shards.tar()
    finally:
        shards.close()
    return shards.written


# --- the conversion ----------------------------------------------------------------------------


def _check_input(src: Path) -> None:
    if not src.exists():
        raise ConfigError(f"{src}: no such file")
    if src.is_dir():
        raise ConfigError(f"{src}: is a directory, not a captions JSONL")
    with open(src, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if b"\0" in head:
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
    _check_input(src)
    target = _resolve_output(src, fmt, out, sharded=shard_size is not None)
    if shard_size is not None:
        existing = _existing_shards(target)
    else:
        if target.is_dir():
            raise ConfigError(f"{target}: is a directory; name the output file")
        if os.path.realpath(target) == os.path.realpath(src):
            raise ConfigError(f"{target}: is the input itself; name another --out")
        existing = [target] if target.exists() else []
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]}: exists; pass --overwrite to replace it")

    stats = ConvertStats(input=str(src), format=fmt, status=status)
    with open(src, "rb") as f:
        scan = _scan(f, stats)
        if not scan.latest and stats.foreign_lines:  # one line says it all, not a warning per line first
            raise ConfigError(
                f"{src}: not a captions JSONL: none of its {stats.lines} lines is a vlmcap caption record"
            )
        scan.warn(src, stats)

        def wanted() -> Iterator[tuple[dict[str, Any], bytes]]:
            for record, line in _latest_records(f, scan):
                if status in ("all", record["status"]):
                    yield record, line
                else:
                    stats.left_out += 1

        with _staged_outputs() as staged:
            if fmt == "parquet":
                with staged.open(target) as binary:
                    stats.records = _write_parquet((r for r, _ in wanted()), binary)
                written = [target]
            elif fmt == "csv":
                with staged.open(target, "w", encoding="utf-8", newline="") as text:
                    stats.records = _write_csv((r for r, _ in wanted()), text)
                written = [target]
            else:
                written = _write_webdataset(wanted(), staged, target, shard_size, with_videos, stats)
    for stale in {p.resolve() for p in existing} - {p.resolve() for p in written}:
        stale.unlink(missing_ok=True)  # --overwrite: shards of a bigger earlier conversion
    stats.outputs = [str(p) for p in written]
    return stats
