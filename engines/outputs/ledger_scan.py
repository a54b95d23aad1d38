"""The captions JSONL read as the ledger reads itself (engines/batch/ledger.py), for a snapshot of it.

Lines are read through the ledger's own reader (`ledger_records`), so a torn, blank or foreign
line is skipped and counted here exactly as `vlmcap batch` skips it, and the latest line of a
video is its record. The file is read twice through one open handle (find the latest line of each
video, then yield those), so memory grows with the number of videos, not the file's size, and a
run appending or compacting meanwhile cannot shift the lines under the second pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from vlmcap.engines.batch.ledger import LedgerLines, caption_record, ledger_records, real_path


@dataclass
class LedgerScan:
    seen: LedgerLines = field(default_factory=LedgerLines)
    latest: dict[str, int] = field(default_factory=dict)  # a video's real path -> its latest line's index

    @property
    def duplicates(self) -> int:
        """Older lines of a video that has a later one (--retry-errors, a changed file)."""
        return self.seen.records - len(self.latest)


def scan_ledger(f: IO[bytes]) -> LedgerScan:
    scan = LedgerScan()
    for index, record in ledger_records(f, scan.seen):
        scan.latest[real_path(record) or ""] = index  # the key compaction keeps a video's last line by
    return scan


def latest_records(f: IO[bytes], scan: LedgerScan) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(record, its line without the newline) for the latest line of each video, in file order."""
    keep = set(scan.latest.values())
    f.seek(0)
    for index, line in enumerate(itertools.islice(f, scan.seen.lines)):
        if index in keep:
            record = caption_record(line)
            if record is not None:
                yield record, line.rstrip(b"\r\n")
