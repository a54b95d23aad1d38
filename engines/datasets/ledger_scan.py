"""The captions JSONL read as the ledger reads itself (engines/batch/ledger.py), for a snapshot of it.

A line is a caption record or it is skipped and counted (torn by a crash, hand-edited, foreign),
and the latest line of a video is its record. The file is read twice through one open handle
(find the latest line of each video, then yield those), so memory grows with the number of videos,
not the file's size, and a run appending or compacting meanwhile cannot shift the lines under the
second pass.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vlmcap.engines.batch.ledger import caption_record, real_path

log = logging.getLogger(__name__)

_FOREIGN_WARNINGS = 5


@dataclass
class LedgerScan:
    lines: int = 0
    torn_lines: int = 0  # a last line cut short by a crash
    foreign_lines: int = 0  # not a caption record: hand-edited, corrupt, another tool's
    duplicates: int = 0  # older lines of a video that has a later one (--retry-errors, a changed file)
    latest: dict[str, int] = field(default_factory=dict)  # a video's real path -> its latest line's index
    foreign_at: list[int] = field(default_factory=list)  # line numbers of the first few, for the warnings
    torn_at: int | None = None

    def warn(self, path: Path) -> None:
        for number in self.foreign_at:
            log.warning("%s:%d: not a vlmcap caption record; skipped", path, number)
        if self.foreign_lines > len(self.foreign_at):
            log.warning(
                "%s: %d more lines that are no caption record skipped", path, self.foreign_lines - len(self.foreign_at)
            )
        if self.torn_at is not None:
            log.warning("%s:%d: a torn last line (cut short by a crash); skipped", path, self.torn_at)


def scan_ledger(f: IO[bytes]) -> LedgerScan:
    scan = LedgerScan()
    records = 0
    for index, line in enumerate(f):
        scan.lines += 1
        if not line.strip():
            continue  # a blank line: nothing to report
        record = caption_record(line)
        if record is None:
            if not line.endswith(b"\n"):
                scan.torn_lines += 1  # only the last line can lack its newline
                scan.torn_at = index + 1
                continue
            scan.foreign_lines += 1
            if len(scan.foreign_at) < _FOREIGN_WARNINGS:
                scan.foreign_at.append(index + 1)
            continue
        records += 1
        scan.latest[real_path(record) or ""] = index  # the key compaction keeps a video's last line by
    scan.duplicates = records - len(scan.latest)
    return scan


def latest_records(f: IO[bytes], scan: LedgerScan) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(record, its line without the newline) for the latest line of each video, in file order."""
    keep = set(scan.latest.values())
    f.seek(0)
    for index, line in enumerate(itertools.islice(f, scan.lines)):
        if index in keep:
            record = caption_record(line)
            if record is not None:
                yield record, line.rstrip(b"\r\n")
