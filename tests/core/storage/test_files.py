"""The shared file helpers: atomic replacement, symlinked targets, JSONL lines, file identity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vlmcap.storage.files import (
    append_jsonl,
    atomic_file,
    atomic_write_text,
    file_identity,
    json_line,
    replace_dir,
    write_jsonl,
)


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(path, "w", encoding="utf-8") as f:
        f.write("half of the new")
        raise RuntimeError("disk trouble")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_writing_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real" / "captions.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "captions.jsonl"
    link.symlink_to(target)
    write_jsonl(link, [{"video": "a.mp4"}])
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == {"video": "a.mp4"}


def test_jsonl_lines_round_trip_undecodable_names(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.mp4")  # a Latin-1 file name: a lone surrogate in Python
    line = json_line({"video": name})
    assert line.endswith("\n") and line.isascii() and json.loads(line)["video"] == name
    assert json_line({"video": "영상.mp4"}) == '{"video": "영상.mp4"}\n'  # UTF-8 stays readable
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [{"n": 1}])
    append_jsonl(path, [{"n": 2}, {"n": 3}])
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_replace_dir_swaps_in_the_new_contents(tmp_path: Path) -> None:
    final, tmp = tmp_path / "final", tmp_path / ".final.tmp"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    replace_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"] and not tmp.exists()


def test_file_identity_changes_with_the_content_and_is_none_for_non_files(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"1234")
    first = file_identity(path)
    assert first is not None and first.size == 4
    path.write_bytes(b"12345")
    assert file_identity(path) != first
    assert file_identity(tmp_path) is None and file_identity(tmp_path / "missing.mp4") is None


def test_json_lines_are_strict_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_line({"video": "a.mp4", "start_s": float("nan")})
    with pytest.raises(ValueError):
        json_line({"duration_s": float("inf")})
