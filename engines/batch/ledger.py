"""The captions JSONL (docs/BATCH.md): resume state, crash-safe appends, compaction.

- One JSON object per line. Lines are appended a batch at a time with one write, then flushed
  and fsynced, so `kill -9` loses at most the batch being written and can only tear the last line.
- On open, a torn last line (no trailing newline) is cut off before anything is appended.
- A video is known by its real path (symlinks resolved) and its file identity (size, mtime in
  ns), whatever spelling the input used (`dir/a.mp4`, `./dir/a.mp4`, `/abs/dir/a.mp4`). A video
  that changed since it was captioned is captioned again.
- Every video keeps exactly one line, its latest: when a run re-captions a video that already has
  a line (`--retry-errors`, a changed file) the file is compacted at the end (written beside it,
  fsynced, renamed over it, locked before the rename), and a run that finds more than one line for
  a video (a compaction that was interrupted) compacts before it appends anything.
- A line that is not a caption record (hand-edited, corrupt) is reported and left as it is.

One module past 300 lines: reading (resume state), repairing and appending the captions file share
its line format and key; they are changed together whenever the format changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from vlmcap.errors import ConfigError
from vlmcap.storage.files import append_durably, atomic_file, json_line, remove_stale_temporaries

log = logging.getLogger(__name__)

Key = tuple[str, int, int]  # (real path, size, mtime_ns)


def real_path(record: dict[str, Any]) -> str | None:
    """The real path a record is about: its own `file.path`, else (older lines) its `video` resolved."""
    file = record.get("file")
    if isinstance(file, dict) and isinstance(file.get("path"), str):
        return file["path"]
    video = record.get("video")
    if not isinstance(video, str):
        return None
    try:
        return os.path.realpath(video)
    except ValueError:  # a NUL, or a lone surrogate that is no undecodable byte: no file is named so
        return video


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: vlmcap writes no such number (vlmcap.storage.files.json_line)
        raise ValueError(f"{text}: not a finite number")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text}: not a JSON number")  # NaN, Infinity: Python reads them, JSON has none


# Strict JSON, as every line vlmcap writes is: a line with a number no JSON spells is foreign, so no
# reader (resume, convert, the report) meets one in a record.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def caption_record(line: str | bytes) -> dict[str, Any] | None:
    """The record on a line, or None for anything that is not a caption record (torn, corrupt, foreign:
    not UTF-8, not strict JSON, an integer of more digits than Python reads)."""
    try:
        record = _DECODER.decode(line.decode("utf-8") if isinstance(line, bytes) else line)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if isinstance(record, dict) and isinstance(record.get("video"), str) and record.get("status") in ("ok", "error"):
        return record
    return None


FIRST_LINE_MAX = 16 << 20  # a first record with a long segment list is far below this


def starts_a_ledger(f: BinaryIO) -> bool:
    """Whether the open file is a captions JSONL: its first line a caption record, or the start of one
    that a killed run left without its newline (every record vlmcap writes begins with its `video`)."""
    first = f.readline(FIRST_LINE_MAX)
    return caption_record(first) is not None or (not first.endswith(b"\n") and first.startswith(b'{"video":'))


def record_key(record: dict[str, Any]) -> Key | None:
    """The resume key, or None when the record has no usable file identity (a vanished file, or
    values no file has: a size of 1e400, a negative mtime)."""
    file = record.get("file")
    if not isinstance(file, dict):
        return None
    size, mtime_ns = file.get("size"), file.get("mtime_ns")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (size, mtime_ns)):
        return None
    real = real_path(record)
    return (real, size, mtime_ns) if real is not None else None


@dataclass
class ResumeState:
    ok: set[Key] = field(default_factory=set)
    failed: set[Key] = field(default_factory=set)
    stale: set[Key] = field(default_factory=set)  # of `ok`: captioned by another bundle or prompt than this run's
    videos: set[str] = field(default_factory=set)  # real paths with a line: re-captioning one supersedes it
    duplicated: int = 0  # lines beyond the first of a video: an interrupted compaction
    foreign_lines: int = 0  # lines that are not caption records, left as they are

    def status(self, key: Key) -> str | None:
        """ "ok", "stale" (ok, but from another bundle or prompt), "error", or None (no line)."""
        if key in self.ok:
            return "stale" if key in self.stale else "ok"
        return "error" if key in self.failed else None


_FOREIGN_WARNINGS = 5  # foreign lines named one by one; the rest counted in one warning


@dataclass
class LedgerLines:
    """What `ledger_records` skipped, the same for every reader (batch resume, compaction,
    `captions convert`): blank lines, a torn last line (cut by a crash, or the NULs a power cut
    leaves: no newline), and foreign lines (hand-edited, corrupt, another tool's)."""

    lines: int = 0
    records: int = 0
    blank: int = 0
    torn_at: int | None = None  # the line number of a torn last line
    foreign_lines: int = 0
    foreign_at: list[int] = field(default_factory=list)  # the first few, for the warnings

    @property
    def torn_lines(self) -> int:
        return int(self.torn_at is not None)

    def warn(self, path: Path, foreign_fate: str = "skipped") -> None:
        for number in self.foreign_at:
            log.warning("%s:%d: not a vlmcap caption record; %s", path, number, foreign_fate)
        if self.foreign_lines > len(self.foreign_at):
            more = self.foreign_lines - len(self.foreign_at)
            log.warning("%s: %d more lines that are no caption record %s", path, more, foreign_fate)
        if self.torn_at is not None:
            log.warning("%s:%d: a torn last line (cut short by a crash); skipped", path, self.torn_at)


def ledger_records(f: IO[bytes], seen: LedgerLines) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line index, record) for each caption record of the ledger open in `f` (binary), counting
    in `seen` every line that is not one. Every reader of a ledger reads it through here."""
    for index, line in enumerate(f):
        seen.lines += 1
        # Only the last line can lack its newline (the writer ends every line): torn by a crash, unless
        # it is a whole record (a hand edit), which the next run keeps (`repair_torn_tail`).
        if not line.endswith(b"\n") and caption_record(line) is None:
            seen.torn_at = index + 1
        elif not line.strip():
            seen.blank += 1
        elif (record := caption_record(line)) is None:
            seen.foreign_lines += 1
            if len(seen.foreign_at) < _FOREIGN_WARNINGS:
                seen.foreign_at.append(index + 1)
        else:
            seen.records += 1
            yield index, record


def read_resume_state(path: Path, made_by: tuple[str, str] | None = None) -> ResumeState:
    """What an existing output already holds; the latest line for a key wins.

    `made_by`: this run's (bundle id, prompt); an ok line with another one is stale (`--recaption
    stale`). Only the stale keys are kept apart, so a ledger of one model costs nothing more.
    """
    state = ResumeState()
    if not path.exists():
        return state
    seen = LedgerLines()
    with open(path, "rb") as f:
        for _, record in ledger_records(f, seen):
            real = real_path(record)
            if real in state.videos:
                state.duplicated += 1
            state.videos.add(real)
            key = record_key(record)
            if key is None:
                continue  # a record for a file that had vanished: nothing to resume from
            if record["status"] == "ok":
                state.ok.add(key)
                state.failed.discard(key)
                if made_by is not None and (record.get("bundle"), record.get("prompt")) != made_by:
                    state.stale.add(key)
                else:
                    state.stale.discard(key)
            else:
                state.failed.add(key)
                state.ok.discard(key)
                state.stale.discard(key)
    state.foreign_lines = seen.foreign_lines
    seen.torn_at = None  # CaptionWriter cuts it before it appends, and says so
    seen.warn(path, "skipped and left as it is")
    return state


def repair_torn_tail(path: Path) -> int:
    """Cut an incomplete last line (a crash mid-write); returns the number of bytes removed. A last line
    that is a whole record and only lacks its newline (a hand edit) gets the newline instead."""
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        block = 1 << 16
        pos, keep = size, 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            if start + len(chunk) == size and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        if size - keep <= FIRST_LINE_MAX:
            f.seek(keep)
            if caption_record(f.read()) is not None:
                f.write(b"\n")
                os.fsync(f.fileno())
                return 0
        f.truncate(keep)
        os.fsync(f.fileno())
        return size - keep


# What an error line keeps of a record it replaces: the keys resume and provenance need.
_KEPT_ON_ERROR = ("video", "file", "sha256", "thumbnail", "bundle", "prompt", "provenance", "finished_at")


def as_error(record: dict[str, Any], kind: str, message: str) -> dict[str, Any]:
    """`record` turned into its video's error line (a failure found after the outcome: a value JSON
    cannot spell, a sidecar that cannot be written): the video is retried by `--retry-errors`."""
    kept = {key: record[key] for key in _KEPT_ON_ERROR if key in record}
    return {**kept, "status": "error", "error": {"type": kind, "message": message}}


def _ledger_line(record: dict[str, Any]) -> str:
    """The record's line; a record that is no strict JSON (a NaN or infinity from a broken file's
    metadata) becomes that video's error line instead of ending the run."""
    try:
        return json_line(record)
    except ValueError as e:
        video = record.get("video")
        log.error("%s: its record holds a value JSON cannot spell (%s); written as an error line", video, e)
        message = f"{video}: its record held a non-finite number (NaN or infinity); nothing of it was kept"
        error = as_error(record, "NonFiniteValue", message)
        try:
            return json_line(error)
        except ValueError:  # the kept keys themselves: the video's name alone
            return json_line(as_error({"video": video}, "NonFiniteValue", message))


def _orphaned_copies(keep: set[int], hashed: dict[int, tuple[str, str, bool]]) -> dict[int, str | None]:
    """Kept copies whose content has no kept original: line -> the video it now copies (None: the
    first of them, now the original)."""
    has_original: set[str] = set()
    copies: dict[str, list[int]] = {}
    for i in sorted(keep & hashed.keys()):
        digest, _, is_copy = hashed[i]
        if is_copy:
            copies.setdefault(digest, []).append(i)
        else:
            has_original.add(digest)
    changes: dict[int, str | None] = {}
    for digest, lines in copies.items():
        if digest not in has_original:
            first, *rest = lines
            changes[first] = None
            changes.update(dict.fromkeys(rest, hashed[first][1]))
    return changes


class CaptionWriter:
    """Appends records to the output; call under the output's lock (`before_replace` re-locks a
    compacted file before it replaces the output: `OutputLock.adopt`)."""

    def __init__(
        self, path: Path, overwrite: bool = False, before_replace: Callable[[int], None] | None = None
    ) -> None:
        self.path = Path(os.path.realpath(path))
        self.before_replace = before_replace
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path)  # of compactions that were killed
            if overwrite and self.path.exists():
                # A new empty file renamed over the old one, locked as compaction's is: truncating in
                # place would empty every hard link to it too (a `cp -al` backup of last night's).
                with atomic_file(self.path, "wb", before_replace=self._relock):
                    pass
            self.torn_bytes = repair_torn_tail(self.path)
            self._file: IO[str] | None = None
        except OSError as e:
            raise ConfigError(f"{path}: cannot write the output ({e.strerror})") from None
        if self.torn_bytes:
            log.warning("%s: removed a torn last line (%d bytes) left by an interrupted run", path, self.torn_bytes)

    def append(self, records: list[dict[str, Any]]) -> list[int]:
        """Write `records` durably; the byte offset each line starts at (engines/batch/dedup.py reads them back)."""
        if not records:
            return []
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- open until close()
            lines = [_ledger_line(r) for r in records]
            offsets, end = [], os.fstat(self._file.fileno()).st_size  # nothing buffered: each append flushes
            for line in lines:
                offsets.append(end)
                end += len(line.encode("utf-8"))
            append_durably(self._file, "".join(lines))
            return offsets
        except OSError as e:  # a full disk, a file size limit: name the file in the one-line message (exit 74)
            if self._file is not None:  # what is left in its buffer must not fail a second time on close
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
            raise OSError(e.errno, e.strerror, str(self.path)) from e

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def compact(self) -> int:
        """Keep only the latest line per video; lines that are no caption record stay. Atomic.

        Streams the file twice (find the latest line of each video, then copy), so memory grows
        with the number of videos, not the file's size. Returns the number of lines dropped.

        A dropped line may have been the original of copies that stay (`--dedup`: the original
        changed and was captioned again): the first copy left becomes its content's original and
        the others name it, so every content keeps exactly one line without `duplicate_of`.
        """
        self.close()  # appends after this go to the compacted file
        latest: dict[str, int] = {}
        dropped: set[int] = set()
        hashed: dict[int, tuple[str, str, bool]] = {}  # ok lines with a hash: (sha256, video, is a copy)
        with open(self.path, "rb") as f:
            for i, record in ledger_records(f, LedgerLines()):
                key = real_path(record) or ""
                if key in latest:
                    dropped.add(latest[key])
                latest[key] = i
                if record["status"] == "ok" and isinstance(record.get("sha256"), str):
                    hashed[i] = (record["sha256"], record["video"], "duplicate_of" in record)
        if not dropped:
            return 0  # nothing superseded: leave the file as it is
        new_original = _orphaned_copies(set(latest.values()), hashed)
        with open(self.path, "rb") as src, atomic_file(self.path, "wb", before_replace=self._relock) as dst:
            for i, line in enumerate(src):
                if i in new_original:
                    record = caption_record(line)
                    del record["duplicate_of"]
                    if new_original[i] is not None:
                        record["duplicate_of"] = new_original[i]
                    dst.write(json_line(record).encode())
                elif i not in dropped:
                    dst.write(line)
        return len(dropped)

    def _relock(self, f: IO[bytes]) -> None:
        if self.before_replace is not None:
            self.before_replace(os.dup(f.fileno()))
