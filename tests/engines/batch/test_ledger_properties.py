"""Properties of the one ledger reader (engines/batch/ledger.py, `ledger_records`) over ledgers
hypothesis makes up from records, blank lines, foreign lines and a torn or NUL tail: every reader
(resume, compaction, `captions convert`) sees the same records and counts the same skipped lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmcap.engines.batch.ledger import LedgerLines, ledger_records, read_resume_state
from vlmcap.engines.outputs.ledger_scan import scan_ledger

names = st.sampled_from(["a.mp4", "b.mp4", "c.mp4", "가.mp4"])
records = st.builds(
    lambda name, ok, size: {
        "video": f"/v/{name}",
        "status": "ok" if ok else "error",
        "file": {"path": f"/v/{name}", "size": size, "mtime_ns": 1},
    },
    names,
    st.booleans(),
    st.integers(1, 3),
)
foreign = st.sampled_from([b"not json", b'{"other": "tool"}', b"[1, 2]", b"\x00\x00\x00", b'{"video": 3}', b"\xff\xfe"])
blank = st.sampled_from([b"", b"   ", b"\t"])
lines = st.lists(
    st.one_of(
        records.map(lambda r: ("record", r)), foreign.map(lambda b: ("foreign", b)), blank.map(lambda b: ("blank", b))
    )
)
tails = st.sampled_from([b"", b'{"video": "/v/a.mp4", "sta', b"\x00" * 4096])


def _ledger(kinds: list[tuple[str, object]], tail: bytes) -> bytes:
    body = b"".join((json.dumps(v).encode() if k == "record" else v) + b"\n" for k, v in kinds)
    return body + tail


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=lines, tail=tails)
def test_every_reader_counts_the_same_lines(kinds: list[tuple[str, object]], tail: bytes, tmp_path: Path) -> None:
    data = _ledger(kinds, tail)
    seen = LedgerLines()
    found = list(ledger_records(io.BytesIO(data), seen))
    assert [r for _, r in found] == [v for k, v in kinds if k == "record"]
    assert seen.records == len(found)
    assert seen.foreign_lines == sum(k == "foreign" for k, _ in kinds)
    assert seen.blank == sum(k == "blank" for k, _ in kinds)
    assert seen.torn_lines == (tail != b"")
    assert seen.lines == len(kinds) + (tail != b"")

    scan = scan_ledger(io.BytesIO(data))  # captions convert
    assert (scan.seen.records, scan.seen.foreign_lines, scan.seen.torn_lines) == (
        seen.records,
        seen.foreign_lines,
        seen.torn_lines,
    )
    path = tmp_path / "captions.jsonl"
    path.write_bytes(data)
    state = read_resume_state(path)  # vlmcap batch
    assert state.foreign_lines == seen.foreign_lines
    assert state.videos == {r["file"]["path"] for _, r in found}
    latest = {r["file"]["path"]: r for _, r in found}
    assert state.duplicated == len(found) - len(latest) == scan.duplicates
    by_identity = {(r["file"]["path"], r["file"]["size"], 1): r["status"] for _, r in found}  # the latest wins
    assert state.ok == {key for key, status in by_identity.items() if status == "ok"}
    assert state.failed == {key for key, status in by_identity.items() if status == "error"}
