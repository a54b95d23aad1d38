"""vlmcap/storage/output_names.py and the name limits in vlmcap/storage/files.py: one output file per video, always
a legal name, written atomically even where the video's own name fills the file system's limit."""

from __future__ import annotations

from pathlib import Path

from vlmcap.storage.files import NAME_MAX_BYTES, TEMP_NAME_BYTES, atomic_write_text, short_name, temp_sibling
from vlmcap.storage.output_names import per_video_path

DIR = Path("/subs")


def test_videos_of_one_stem_or_one_name_in_two_folders_get_their_own_file() -> None:
    keys = ["/data/a.mp4", "/data/a.mkv", "/data/a", "/data/x/a.mp4", "/data/a.mp4.srt"]
    paths = [per_video_path(DIR, key, ".srt") for key in keys]
    assert paths[0] == Path("/subs/data/a.mp4.srt") and paths[1] == Path("/subs/data/a.mkv.srt")
    assert len(set(paths)) == len(keys)


def test_urls_stay_apart_from_local_paths_and_from_each_other() -> None:
    keys = [
        "s3://bucket/a.mp4",
        "/s3/bucket/a.mp4",  # a local tree that looks like the URL's mirror
        "https://h/v?id=1",
        "https://h/v?id=2",
        "https://h/v",
        "https://h/x/../v",
        "https://h//v",
        "https://h",
    ]
    paths = [per_video_path(DIR, key, ".srt") for key in keys]
    assert paths[0] == Path("/subs/s3:/bucket/a.mp4.srt") and paths[1] == Path("/subs/s3/bucket/a.mp4.srt")
    assert len(set(paths)) == len(keys)
    assert all(p.is_relative_to(DIR) and ".." not in p.parts for p in paths)  # `..` cannot climb out
    assert paths[2].name.startswith("v~") and paths[4].name == "v.srt"  # what the mirror loses is tagged


def test_long_names_are_cut_on_a_character_and_tagged_with_their_hash() -> None:
    stem = "가" * 100  # 300 bytes of UTF-8: a legal key (folders may hold it), too long with a suffix
    first, second = (per_video_path(DIR, f"/v/{stem}{tail}.mp4", ".srt") for tail in ("1", "2"))
    assert first != second  # they differ past the cut
    assert first == per_video_path(DIR, f"/v/{stem}1.mp4", ".srt")  # deterministic
    for path in (first, second):
        assert len(path.name.encode()) <= TEMP_NAME_BYTES and path.name.endswith(".srt")
        assert path.name.encode().decode() == path.name  # cut between characters, not inside one
    assert short_name("short.mp4", 40) == "short.mp4"
    undecodable = "\udcff" * 300  # a Latin-1 byte on a UTF-8 system, as Python keeps it
    assert len(short_name(undecodable, 100).encode("utf-8", "surrogateescape")) <= 100


def test_a_file_whose_name_fills_the_limit_is_still_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / ("n" * (NAME_MAX_BYTES - len(".jsonl")) + ".jsonl")
    assert len(temp_sibling(target).name.encode()) <= NAME_MAX_BYTES
    atomic_write_text(target, "ok\n")  # before: "File name too long" for the temporary sibling
    assert target.read_text() == "ok\n" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_sidecar_of_a_long_named_video_is_written(tmp_path: Path) -> None:
    target = per_video_path(tmp_path, "/videos/" + "영상" * 60 + ".mp4", ".vtt")
    target.parent.mkdir(parents=True)
    atomic_write_text(target, "WEBVTT\n")
    assert target.read_text() == "WEBVTT\n"
