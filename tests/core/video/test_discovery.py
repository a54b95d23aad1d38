"""Input discovery: files, folders, globs, list files, stdin; ordered, deduplicated, loop-safe, streaming."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from vlmcap.video.discovery import iter_video_paths


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    for rel in ["b/clip2.MP4", "b/clip1.mkv", "a/x.webm", "a/deep/y.MOV", "top.avi", "notes.txt.bak", "a/z.jpg"]:
        path = tmp_path / "videos" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path / "videos"


def test_directories_are_walked_sorted_with_video_extensions_only(tree: Path) -> None:
    found = list(iter_video_paths([str(tree)]))
    rel = [os.path.relpath(p, tree) for p in found]
    assert rel == ["a/deep/y.MOV", "a/x.webm", "b/clip1.mkv", "b/clip2.MP4", "top.avi"]
    assert found[0].startswith(str(tree))  # paths are reported as given, not resolved


def test_order_is_deterministic(tree: Path) -> None:
    assert list(iter_video_paths([str(tree)])) == list(iter_video_paths([str(tree)]))


def test_symlink_loops_and_duplicate_links_are_visited_once(tree: Path) -> None:
    os.symlink(tree, tree / "a" / "loop")  # a cycle back to the root
    os.symlink(tree / "top.avi", tree / "b" / "alias.mp4")  # the same file under another name
    found = list(iter_video_paths([str(tree), str(tree / "top.avi")]))
    assert len(found) == 5
    assert len({os.path.realpath(p) for p in found}) == 5


def test_globs_list_files_and_stdin(tree: Path, tmp_path: Path) -> None:
    assert [Path(p).name for p in iter_video_paths([str(tree / "b" / "*")])] == ["clip1.mkv", "clip2.MP4"]
    assert [Path(p).name for p in iter_video_paths([str(tree / "**" / "*.webm")])] == ["x.webm"]
    listing = tree / "list.txt"
    listing.write_text("# nightly batch\nb/clip1.mkv\n\n" + str(tree / "top.avi") + "\nb/clip1.mkv\n")
    assert [Path(p).name for p in iter_video_paths([str(listing)])] == ["clip1.mkv", "top.avi"]
    stdin = io.StringIO(f"{tree}/a/x.webm\n{tree}/top.avi\n")
    assert [Path(p).name for p in iter_video_paths(["-"], stdin=stdin)] == ["x.webm", "top.avi"]


def test_explicit_files_and_missing_paths_pass_through(tree: Path) -> None:
    # A named file is taken whatever its extension; a missing one is reported later by the decoder.
    assert list(iter_video_paths([str(tree / "a" / "z.jpg"), "/nope/missing.mp4"])) == [
        str(tree / "a" / "z.jpg"),
        "/nope/missing.mp4",
    ]


def test_streaming_does_not_exhaust_the_input(tree: Path) -> None:
    def endless():
        i = 0
        while True:
            i += 1
            yield f"/virtual/{i}.mp4"

    it = iter_video_paths(endless())
    assert [next(it) for _ in range(3)] == ["/virtual/1.mp4", "/virtual/2.mp4", "/virtual/3.mp4"]


def test_a_list_file_with_a_byte_order_mark_and_crlf_loses_no_entry(tree: Path) -> None:
    listing = tree / "windows.txt"
    listing.write_bytes("\ufeffb/clip1.mkv\r\n# comment\r\n\r\n".encode() + str(tree / "top.avi").encode() + b"\r\n")
    assert [Path(p).name for p in iter_video_paths([str(listing)])] == ["clip1.mkv", "top.avi"]
