"""The captions JSONL (docs/BATCH.md): resume state, crash-safe appends, compaction.

- One JSON object per line. Lines are appended a batch at a time with one write, then flushed
  and fsynced, so `kill -9` loses at most the batch being written and can only tear the last line.
- On open, a torn last line (no trailing newline) is cut off before anything is appended.
- Resume key: the path as given + the file's identity (size, mtime in ns). A video that changed
  since it was captioned is captioned again.
- When a run re-captions a video that already has a line (`--retry-errors`, a changed file), the
  file is compacted at the end of the run (written beside it, fsynced, renamed over it) so every
  video keeps exactly one line: its latest.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmcap.errors import ConfigError
from vlmcap.files import append_durably, atomic_file, json_line

log = logging.getLogger(__name__)

Key = tuple[str, int, int]


def record_key(record: dict[str, Any]) -> Key | None:
    file = record.get("file") or {}
    if not isinstance(record.get("video"), str) or "size" not in file or "mtime_ns" not in file:
        return None
    return record["video"], int(file["size"]), int(file["mtime_ns"])


@dataclass
class ResumeState:
    ok: set[Key] = field(default_factory=set)
    failed: set[Key] = field(default_factory=set)
    videos: set[str] = field(default_factory=set)  # every video with a line: re-captioning one supersedes it

    def status(self, key: Key) -> str | None:
        if key in self.ok:
            return "ok"
        return "error" if key in self.failed else None


def read_resume_state(path: Path) -> ResumeState:
    """What an existing output already holds; the latest line for a key wins."""
    state = ResumeState()
    if not path.exists():
        return state
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                break  # torn tail: repaired by CaptionWriter before it appends
            try:
                record = json.loads(line)
                key = record_key(record)
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                record, key = None, None
            is_record = isinstance(record, dict) and isinstance(record.get("video"), str) and "status" in record
            if is_record:
                state.videos.add(record["video"])
            if key is None:
                if not is_record:
                    log.warning("%s:%d: not a vlmcap caption record; left as it is", path, number)
                continue  # a record for a file that had vanished: nothing to resume from
            if record.get("status") == "ok":
                state.ok.add(key)
                state.failed.discard(key)
            else:
                state.failed.add(key)
                state.ok.discard(key)
    return state


def repair_torn_tail(path: Path) -> int:
    """Cut an incomplete last line (a crash mid-write); returns the number of bytes removed."""
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            if start + len(chunk) == size and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                f.truncate(keep)
                os.fsync(f.fileno())
                return size - keep
            pos = start
        f.truncate(0)
        os.fsync(f.fileno())
        return size


class CaptionWriter:
    """Appends records to the output; call under the output's lock."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if overwrite:
                path.unlink(missing_ok=True)
            self.torn_bytes = repair_torn_tail(path)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 -- lives as long as the run
        except OSError as e:
            raise ConfigError(f"{path}: cannot write the output ({e.strerror})") from None
        if self.torn_bytes:
            log.warning("%s: removed a torn last line (%d bytes) left by an interrupted run", path, self.torn_bytes)

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        append_durably(self._file, "".join(json_line(r) for r in records))

    def close(self) -> None:
        self._file.close()

    def compact(self) -> int:
        """Keep only the latest line per video; lines that are no caption record stay. Atomic.

        Streams the file twice (find the latest line of each video, then copy), so memory grows
        with the number of videos, not the file's size.
        """
        latest: dict[str, int] = {}
        records = 0
        with open(self.path, "rb") as f:
            for i, line in enumerate(f):
                video = _video_of(line)
                if video is not None:
                    latest[video] = i
                    records += 1
        if records == len(latest):
            return 0  # nothing superseded: leave the file as it is
        keep = set(latest.values())
        with open(self.path, "rb") as src, atomic_file(self.path, "wb") as dst:
            for i, line in enumerate(src):
                if i in keep or _video_of(line) is None:
                    dst.write(line)
        return records - len(latest)


def _video_of(line: bytes) -> str | None:
    """The "video" of a caption record line (ok or error, with or without file identity), else None."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(record, dict) and isinstance(record.get("video"), str) and "status" in record:
        return record["video"]
    return None
