"""Content dedup (`--dedup sha256`): identical bytes are captioned once (docs/BATCH.md, "Content dedup").

    selected tasks -> hash each file -> first of its content: to the driver
                                     -> later ones: held, then a `duplicate_of` line copied from the first's

`DedupDriver` wraps either driver (local pipeline or Ray), so both dedup alike. Each selected
file is hashed (SHA-256, streamed) in the thread that feeds the driver its tasks, after the resume
filter: a file already done is never read. A content's first task goes to the driver; later
tasks of the same content wait for its outcome and become outcomes of their own, with its
caption (or its error) and `duplicate_of` naming it. Across runs, `ContentIndex` finds earlier
lines of the same content in the output: a renamed or copied file gets its line without decoding.

Memory: the index keeps 16 bytes per ok line of the output (8 bytes of the hash, the line's byte
offset), in two sorted numpy arrays, and reads a matching line back from the file; only this
run's failed originals and the duplicates waiting for their original are kept whole.

One module past 300 lines: hashing, the content index, the copies' outcomes and the driver that
holds later copies until their first is done are one mechanism; split, each part would need the others'
invariants restated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vlmcap.engines.batch.ledger import caption_record, real_path
from vlmcap.engines.batch.records import Outcome, SegmentCaption
from vlmcap.engines.batch.run import Driver, Interrupt
from vlmcap.engines.batch.selection import Selection, VideoTask
from vlmcap.engines.runtime.caption_quality import Quality
from vlmcap.storage.files import FileIdentity, open_regular

log = logging.getLogger(__name__)

# How the JSONL writer spells an ok line's hash (json.dumps' default separators). Only a pre-filter:
# every candidate line is parsed and checked before it is used, so a look-alike costs a read.
_SHA256_FIELD = re.compile(rb'"sha256": "([0-9a-f]{64})"')
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _key(digest: str) -> int:
    return int(digest[:16], 16)


@dataclasses.dataclass(frozen=True)
class Hashed:
    digest: str  # hex SHA-256 of the file's bytes
    identity: FileIdentity  # the size and mtime those bytes had
    seconds: float


def hash_file(path: str) -> Hashed | None:
    """SHA-256 of a regular file, streamed; None when it cannot be read or changed while it was read."""
    t0 = time.perf_counter()
    try:
        with open_regular(path) as f:  # a FIFO named like a video must not block the feed
            before = os.fstat(f.fileno())
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            after = os.fstat(f.fileno())
    except OSError:
        return None  # the decoder reports the reason on the video's own line
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None
    return Hashed(digest, FileIdentity(after.st_size, after.st_mtime_ns), time.perf_counter() - t0)


class ContentIndex:
    """SHA-256 -> the output's ok lines of those bytes: what is captioned already, whoever's name it has."""

    def __init__(self, path: Path, keys: np.ndarray | None = None, offsets: np.ndarray | None = None) -> None:
        self.path = path
        self._keys = keys if keys is not None else np.empty(0, np.uint64)  # sorted; equal keys in file order
        self._offsets = offsets if offsets is not None else np.empty(0, np.int64)
        self._added: dict[int, int] = {}  # lines written by this run
        self._fd: int | None = None

    @classmethod
    def read(cls, path: Path) -> ContentIndex:
        """One streaming pass over the output (bytes, not parsed JSON): the ok lines that carry a hash."""
        keys, offsets = array("Q"), array("q")
        if path.exists():
            offset = 0
            with open(path, "rb") as f:
                for line in f:
                    if line.endswith(b"\n") and b'"status": "ok"' in line:
                        found = _SHA256_FIELD.search(line)
                        if found is not None:
                            keys.append(_key(found.group(1).decode()))
                            offsets.append(offset)
                    offset += len(line)
        key_array = np.frombuffer(keys, np.uint64) if keys else np.empty(0, np.uint64)
        order = np.argsort(key_array, kind="stable")
        offset_array = np.frombuffer(offsets, np.int64) if offsets else np.empty(0, np.int64)
        return cls(path, key_array[order], offset_array[order])

    def __len__(self) -> int:
        return len(self._keys) + len(self._added)

    def add(self, digest: str, offset: int) -> None:
        """A line this run wrote at `offset`."""
        self._added[_key(digest)] = offset

    def records(self, digest: str) -> Iterator[dict[str, Any]]:
        """The ok records of these bytes, the latest line first."""
        key = _key(digest)
        offsets = [self._added[key]] if key in self._added else []
        exact = np.uint64(key)  # a Python int would be compared as a float64: 2**63 - 1 == 2**63 + 5
        lo, hi = np.searchsorted(self._keys, exact, "left"), np.searchsorted(self._keys, exact, "right")
        offsets += self._offsets[lo:hi][::-1].tolist()
        for offset in offsets:
            record = caption_record(self._line_at(offset))
            if record is not None and record["status"] == "ok" and record.get("sha256") == digest:
                yield record

    def _line_at(self, offset: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        chunks = []
        while True:
            chunk = os.pread(self._fd, 1 << 16, offset)
            end = chunk.find(b"\n")
            if end >= 0 or not chunk:
                chunks.append(chunk if end < 0 else chunk[: end + 1])
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def duplicate(task: VideoTask, original: Outcome) -> Outcome:
    """`task`'s outcome when its bytes are `original`'s: the same caption (or error), nothing decoded."""
    return dataclasses.replace(
        original, task=task, decode_ms=0.0, vision_ms=0.0, llm_ms=0.0, duplicate_of=original.task.video, copied=True
    )


def from_record(task: VideoTask, record: dict[str, Any]) -> Outcome | None:
    """`task`'s outcome from an earlier ok line of the same bytes; None when the line lacks a field."""
    try:
        segments = record.get("segments")
        return Outcome(
            task,
            0.0,
            frames_s=[float(t) for t in record["frames_s"]],
            duration_s=float(record["duration_s"]),
            decoder=str(record["decoder"]),
            caption=str(record["caption"]),
            num_tokens=int(record["num_tokens"]),
            finish_reason=str(record["finish_reason"]),
            segments=None
            if segments is None
            else [
                SegmentCaption(
                    float(s["start_s"]),
                    float(s["end_s"]),
                    str(s["caption"]),
                    [float(t) for t in s["frames_s"]],
                    int(s["num_tokens"]),
                    str(s["finish_reason"]),
                    _quality(s),
                    _thumbnail(s),
                )
                for s in segments
            ],
            quality=_quality(record),
            duplicate_of=str(record.get("duplicate_of") or record["video"]),
            thumbnail=_thumbnail(record),
            copied=True,  # even when it stays its content's original (`_from_index`): no engine ran
        )
    except (KeyError, TypeError, ValueError):
        return None


def _quality(record: dict[str, Any]) -> Quality:
    found = record.get("quality")
    return Quality.from_dict(found) if isinstance(found, dict) else Quality()


def _thumbnail(record: dict[str, Any]) -> str | None:
    """The copy shows the same frames: the original's contact sheet (--thumbnails), when it has one."""
    found = record.get("thumbnail")
    return found if isinstance(found, str) else None


def hashable(task: VideoTask) -> bool:
    """A local file that resume knows; remote objects (URLs) are not read twice to hash them."""
    return task.problem is None and task.identity is not None and not _URL.match(task.video)


@dataclasses.dataclass
class MadeBy:
    """What an earlier line must share to lend its caption: the bundle, the prompt, whether it was
    segmented, and the decoding parameters (`provenance.generation`) where both lines have them."""

    bundle_id: str
    prompt: str
    segmented: bool
    generation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.generation is not None:  # as a line reads back (tuples are lists there)
            self.generation = json.loads(json.dumps(self.generation))

    def matches(self, record: dict[str, Any]) -> bool:
        if record.get("bundle") != self.bundle_id or record.get("prompt") != self.prompt:
            return False
        provenance = record.get("provenance")
        generation = provenance.get("generation") if isinstance(provenance, dict) else None
        if self.generation is not None and generation is not None and generation != self.generation:
            return False
        return ("segments" in record) == self.segmented


class Hasher:
    """Hashes the tasks' files; counts bytes and seconds."""

    def __init__(self) -> None:
        self.bytes = 0
        self.seconds = 0.0

    def __call__(self, task: VideoTask) -> str | None:
        if not hashable(task):
            return None
        hashed = hash_file(task.video)
        if hashed is None or hashed.identity != task.identity:
            log.info("%s: changed or unreadable while hashed; captioned without dedup", task.video)
            return None
        self.bytes += hashed.identity.size
        self.seconds += hashed.seconds
        return hashed.digest


class DedupDriver:
    """A driver that hands `driver` the first task of each content and answers the others itself.

    The consumer reports where each batch's lines landed (`written`), so later copies in this run
    are answered from the file like those of earlier runs, and only failures are kept in memory.
    Duplicates still waiting for their original when the run stops are dropped (the next run
    does them).
    """

    def __init__(self, driver: Driver, index: ContentIndex, made_by: MadeBy) -> None:
        self.driver = driver
        self.index = index
        self.made_by = made_by
        self.hasher = Hasher()
        self._lock = threading.Lock()  # the feed runs in the driver's intake thread, outcomes in the consumer's
        self._pending: dict[str, tuple[VideoTask, list[VideoTask]]] = {}  # in the driver: its task, held copies
        self._delivered: dict[str, Outcome] = {}  # yielded ok, its line not written yet
        self._failed: dict[str, Outcome] = {}  # failed originals of this run: their copies fail alike
        self._ready: list[Outcome] = []  # answered duplicates, yielded with the next batch

    @classmethod
    def open(cls, driver: Driver, output: Path, made_by: MadeBy) -> DedupDriver:
        """Dedup against `output` (the real path the writer appends to, read after any compaction)."""
        index = ContentIndex.read(output)
        log.info("%s: %d captioned lines with a content hash", output, len(index))
        return cls(driver, index, made_by)

    @property
    def decode_pool(self) -> dict[str, int]:
        return getattr(self.driver, "decode_pool", {})

    @property
    def llm_batches(self) -> dict[str, Any]:
        return getattr(self.driver, "llm_batches", {})

    @property
    def waits(self) -> dict[str, float]:
        return getattr(self.driver, "waits", {})

    def outcomes(
        self, tasks: Iterable[VideoTask], interrupt: Interrupt, ready: Callable[[dict[str, str]], None]
    ) -> Iterator[list[Outcome]]:
        # closing: an early exit stops the driver's threads and engines now, as BatchRun expects
        with contextlib.closing(self.driver.outcomes(self._originals(tasks), interrupt, ready)) as batches:
            for batch in batches:
                yield batch + self._answers(batch)
        rest = self._answers([])
        if rest:
            yield rest

    def written(self, records: list[dict[str, Any]], offsets: list[int]) -> None:
        """The lines of `records` are in the output at `offsets`: later copies are answered from there."""
        with self._lock:
            for record, offset in zip(records, offsets, strict=True):
                digest = record.get("sha256")
                if isinstance(digest, str) and record["status"] == "ok" and "duplicate_of" not in record:
                    self.index.add(digest, offset)
                    self._delivered.pop(digest, None)

    def _originals(self, tasks: Iterable[VideoTask]) -> Iterator[VideoTask]:
        for task in tasks:
            digest = self.hasher(task)
            if digest is None:
                yield task
                continue
            task.sha256 = digest
            with self._lock:
                pending = self._pending.get(digest)
                if pending is not None:
                    if pending[0].real_path != task.real_path:  # the same file named twice is read once
                        pending[1].append(task)
                    continue
                original = self._delivered.get(digest) or self._failed.get(digest)
                if original is not None:
                    self._ready.append(duplicate(task, original))
                    continue
            answer = self._from_index(task, digest)  # reads the file: outside the lock
            with self._lock:
                if answer is not None:
                    self._ready.append(answer)
                    continue
                self._pending[digest] = (task, [])
            yield task

    def _from_index(self, task: VideoTask, digest: str) -> Outcome | None:
        """An earlier line's answer for these bytes, its content's original first. The task's own
        line (the file touched, or downloaded again byte for byte) keeps it the original; where only
        copies are left (their original changed since), the task becomes the original itself: a
        video is never a copy of itself, and a content never has two originals."""
        found = [r for r in self.index.records(digest) if self.made_by.matches(r)]
        for record in sorted(found, key=lambda r: "duplicate_of" in r):  # stable: the latest original first
            outcome = from_record(task, record)
            if outcome is None:
                continue
            own_line = "duplicate_of" not in record and real_path(record) == task.real_path
            if own_line or "duplicate_of" in record:
                outcome.duplicate_of = None
            return outcome
        return None

    def _answers(self, batch: list[Outcome]) -> list[Outcome]:
        answers: list[Outcome] = []
        with self._lock:
            for outcome in batch:
                digest = outcome.task.sha256
                entry = self._pending.pop(digest, None) if digest is not None else None
                if entry is None:
                    continue
                (self._delivered if outcome.ok else self._failed)[digest] = outcome
                answers += [duplicate(task, outcome) for task in entry[1]]
            answers += self._ready
            self._ready = []
        return answers


def drop_known_duplicates(
    tasks: Iterable[VideoTask], index: ContentIndex, made_by: MadeBy, counts: Selection, hasher: Hasher
) -> Iterator[VideoTask]:
    """`--dry-run`: the tasks a run would caption, counting in `counts.duplicates` those it would copy."""
    seen: set[int] = set()
    try:
        for task in tasks:
            digest = hasher(task)
            if digest is not None:
                known = _key(digest) in seen or any(made_by.matches(r) for r in index.records(digest))
                if known:
                    counts.duplicates += 1
                    continue
                seen.add(_key(digest))
            yield task
    finally:
        index.close()
