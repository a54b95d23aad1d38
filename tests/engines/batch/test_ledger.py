"""engines/batch/ledger.py: every line is strict JSON; a record that cannot be is its video's error line."""

from __future__ import annotations

import json
from pathlib import Path

from vlmcap.engines.batch.ledger import CaptionWriter


def _strict(text: str) -> list[dict]:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_a_record_with_nan_becomes_that_videos_error_line_and_the_others_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    writer = CaptionWriter(out)
    good = {"video": "a.mp4", "status": "ok", "caption": "빨간 원", "file": {"path": "/v/a.mp4", "size": 1}}
    broken = {"video": "b.mp4", "status": "ok", "caption": "x", "duration_s": float("nan"), "bundle": "abc"}
    offsets = writer.append([good, broken])
    writer.close()
    lines = _strict(out.read_text(encoding="utf-8"))
    assert lines[0] == good and len(offsets) == 2
    assert lines[1]["video"] == "b.mp4" and lines[1]["status"] == "error" and lines[1]["bundle"] == "abc"
    assert lines[1]["error"]["type"] == "NonFiniteValue" and "caption" not in lines[1]
    assert out.read_bytes()[offsets[1] :].startswith(b'{"video": "b.mp4"')  # offsets point at the lines written
