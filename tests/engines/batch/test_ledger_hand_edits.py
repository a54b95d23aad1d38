"""What a person (or another program) does to a ledger and the files beside it costs nothing: a last
record saved without its newline is kept, `--overwrite` leaves a hard-linked backup whole, and the
clean-up after a killed run deletes only the temporaries vlmcap named itself."""

from __future__ import annotations

import json
import os

from vlmcap.engines.batch.ledger import CaptionWriter, LedgerLines, ledger_records, repair_torn_tail
from vlmcap.storage.files import remove_stale_temporaries, temp_sibling

RECORD = {"video": "/v/a.mp4", "status": "ok", "caption": "초록색 원"}


def test_a_last_record_without_its_newline_is_kept_and_a_torn_one_cut(tmp_path) -> None:
    ledger = tmp_path / "captions.jsonl"
    whole = json.dumps(RECORD, ensure_ascii=False).encode()
    ledger.write_bytes(whole + b"\n" + whole)  # a hand edit saved without the final newline
    seen = LedgerLines()
    with open(ledger, "rb") as f:
        assert len(list(ledger_records(f, seen))) == 2 and seen.torn_at is None
    assert repair_torn_tail(ledger) == 0 and ledger.read_bytes() == whole + b"\n" + whole + b"\n"

    ledger.write_bytes(whole + b"\n" + whole[:20])  # a crash mid-write
    assert repair_torn_tail(ledger) == 20 and ledger.read_bytes() == whole + b"\n"


def test_overwrite_replaces_the_ledger_and_keeps_a_hard_linked_backup(tmp_path) -> None:
    ledger, backup = tmp_path / "captions.jsonl", tmp_path / "backup.jsonl"
    ledger.write_text(json.dumps(RECORD) + "\n")
    os.link(ledger, backup)  # what `cp -al` or rsnapshot leaves
    writer = CaptionWriter(ledger, overwrite=True)
    writer.close()
    assert ledger.read_text() == "" and json.loads(backup.read_text()) == RECORD


def test_the_clean_up_deletes_only_vlmcap_s_own_temporaries(tmp_path) -> None:
    out = tmp_path / "c.jsonl"
    mine = temp_sibling(out).with_name(temp_sibling(out).name.rsplit("-", 1)[0] + "-999999999")  # a dead pid
    mine.write_text("partial")
    lookalikes = [tmp_path / ".c.jsonl.cam-99999", tmp_path / ".c.jsonl.old-20240101"]
    lookalikes[0].write_bytes(b"someone's video")
    lookalikes[1].mkdir()
    (lookalikes[1] / "notes.txt").write_text("keep")
    remove_stale_temporaries(out)
    assert not mine.exists() and all(p.exists() for p in lookalikes)
