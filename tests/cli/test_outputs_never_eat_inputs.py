"""No command deletes or overwrites what it reads (vlmcap/storage/output_guard.py): every output-writing command
pointed at each of its inputs exits 2 with one line before any work, and not one byte of the tree changed.
`--overwrite` replaces only a folder the same command wrote, holding nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmcap.cli import cli
from vlmcap.storage.output_guard import MARKER


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and link under `roots`: its content's hash, or where it points."""
    seen = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                seen[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                seen[str(path)] = "dir"
    return seen


@pytest.fixture
def night(tmp_path: Path, clips) -> Path:
    """A night's folder: videos (one with a name no video has), a list file, the ledger naming them with
    their contact sheets, the run's stats, a subtitles folder, a labelled manifest."""
    root = tmp_path / "night"
    videos, thumbs, subs = root / "videos", root / "thumbs", root / "subs"
    for folder in (videos, thumbs, subs):
        folder.mkdir(parents=True)
    records = []
    for name in ("a.mp4", "b.mp4", "clip.bin"):
        shutil.copy(clips["h264_mp4"], videos / name)
        (thumbs / f"{name}.jpg").write_bytes(b"\xff\xd8 sheet of " + name.encode())
        (subs / f"{name}.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n캡션\n", encoding="utf-8")
        video = videos / name
        records.append(
            {
                "video": str(video),
                "status": "ok",
                "caption": "초록색 원",
                "file": {"path": str(video.resolve()), "size": video.stat().st_size, "mtime_ns": 1},
                "thumbnail": str(thumbs / f"{name}.jpg"),
            }
        )
    (root / "captions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    (root / "list.txt").write_text(f"{videos / 'a.mp4'}\n{videos / 'b.mp4'}\n")
    (root / "stats.json").write_text(json.dumps({"captioned": 3}, indent=2) + "\n")
    (root / "manifest.jsonl").write_text(json.dumps({"video": "videos/a.mp4", "caption": "초록색 원"}) + "\n")
    (root / "nightly.yaml").write_text("batch:\n  llm_backend: transformers\n")
    (root / "engine").mkdir()
    (root / "engine" / "bundle.json").write_text('{"format_version": 1}\n')
    (root / "r.png").write_text(json.dumps({"rows": []}))  # a report named like a chart
    (root / "chart.png").symlink_to(root / "stats.json")
    (root / "lost").symlink_to("/proc/no-such-folder/x")
    return root


def cases(night: Path, run: Path) -> list[tuple[list[str], str]]:
    """(command line, what its one-line error says): each output pointed at an input of the command."""
    captions, videos = night / "captions.jsonl", night / "videos"
    batch = ["batch", str(videos), "--out", str(night / "new.jsonl")]
    report = ["captions", "report", str(captions), "--overwrite", "--out"]
    evaluate = ["eval", "--data", str(night / "manifest.jsonl")]
    convert = ["captions", "convert", str(captions), "--overwrite"]
    return [
        # captions report: the ledger, the folders it links, a folder it did not write
        ([*report, str(captions)], "is CAPTIONS"),
        ([*report, str(night)], "contains CAPTIONS"),
        ([*report, str(videos)], f"not a folder `vlmcap captions report` wrote (no {MARKER}"),
        ([*report, str(night / "thumbs")], "not a folder `vlmcap captions report` wrote"),
        ([*report, str(night / "subs"), "--srt-dir", str(night / "subs")], "is --srt-dir"),
        ([*report, str(night / "subs" / "site"), "--vtt-dir", str(night / "subs")], "lies inside --vtt-dir"),
        ([*report, str(night / "r"), "--stats", str(night / "r")], "is --stats"),
        # eval: the manifest, the folder holding it, the records file
        ([*evaluate, "--report", str(night), "--overwrite"], "contains --data"),
        ([*evaluate, "--report", str(videos), "--overwrite"], "not a folder `vlmcap eval --report` wrote"),
        ([*evaluate, "--records", str(night / "manifest.jsonl")], "is --data"),
        ([*evaluate, "--records", str(videos / "b.mp4")], "a video's or list file's name"),
        ([*evaluate, "--records", str(night / "stats.json")], "is not a JSONL of caption records"),
        # captions convert: the ledger, a video it names, shards named like videos
        ([*convert, "--to", "csv", "--out", str(captions)], "is CAPTIONS"),
        ([*convert, "--to", "csv", "--out", str(night / "manifest.jsonl")], "is not a captions CSV"),
        ([*convert, "--to", "parquet", "--out", str(night / "lost")], "cannot create its folder"),
        ([*convert, "--to", "csv", "--out", str(videos / "clip.bin")], "is not a captions CSV"),
        ([*convert, "--to", "csv", "--out", str(videos / "a.mp4")], "a video's or list file's name"),
        ([*convert, "--to", "webdataset", "--shard-size", "1", "--out", str(videos / "%d.mp4")], "a video's"),
        # batch: the list file, a video (named, listed or in a folder), a manifest, the config, the bundle
        (["batch", str(night / "list.txt"), "--out", str(night / "list.txt")], "a video's or list file's name"),
        (["batch", str(videos), "--out", str(videos / "a.mp4")], "a video's or list file's name"),
        (["batch", str(night / "list.txt"), "--out", str(night / "manifest.jsonl")], "is not a captions JSONL"),
        (["batch", str(night / "list.txt"), "--out", str(night / "stats.json")], "is not a captions JSONL"),
        (["batch", str(night / "list.txt"), "--out", "x.jsonl", "--stats", str(videos / "b.mp4")], "a video's"),
        ([*batch, "--stats", str(night / "new.jsonl")], "is --out"),
        ([*batch, "--stats", str(night / "nightly.yaml")], "is not the JSON `vlmcap batch --stats` writes"),
        ([*batch, "--stats", str(night / "captions.jsonl")], "is not the JSON `vlmcap batch --stats` writes"),
        ([*batch, "--engine", str(night / "engine"), "--stats", str(night / "engine" / "s.json")], "inside --engine"),
        ([*batch, "--stats", str(night / "lost")], "cannot create its folder"),
        ([*batch, "--thumbnails", str(night)], "contains INPUTS"),
        ([*batch, "--srt", str(videos)], "is INPUTS"),
        ([*batch, "--vtt", str(videos / "subs")], "lies inside INPUTS"),
        # export: the run, a folder holding it, a folder that is no bundle
        (["export", str(run), "--out", str(run)], "is RUN"),
        (["export", str(run), "--out", str(run.parent)], "contains RUN"),
        (["export", str(run), "--out", str(videos)], "is not an engine bundle"),
        # bench: a chart over the report it reads; a work folder holding a night
        (["bench", "plot", str(night / "stats.json"), "--out", str(night / "stats.json")], "name a .png file"),
        (["bench", "plot", str(night / "r.png"), "--out", str(night / "r.png")], "is not a PNG"),
        (["bench", "plot", str(night / "r.png"), "--out", str(night / "chart.png")], "name a .png file"),
        (["bench", "report", "--workdir", str(night), "--lines", "10"], "not a folder `vlmcap bench report` wrote"),
        # folders written file by file: never over someone's
        (["synth", str(night)], "not a folder `vlmcap synth` wrote"),
        (["demo", "--workdir", str(night)], "not a folder `vlmcap demo` wrote"),
    ]


def test_every_output_pointed_at_an_input_is_refused_and_nothing_changes(night, tiny_run) -> None:
    before = snapshot(night, tiny_run)
    for args, says in cases(night, tiny_run):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and says in result.output, (args, result.output)
        assert snapshot(night, tiny_run) == before, args


def test_a_copied_marker_lets_nothing_be_replaced(night, tmp_path) -> None:
    """The marker names each file with its size and time: copied into a folder of someone's videos (or
    kept in a report someone typed notes into), it covers none of them."""
    from vlmcap.storage.output_guard import write_marker

    made = tmp_path / "made"
    (made / "videos").mkdir(parents=True)
    (made / "videos" / "00000.mp4").write_bytes(b"synth's")
    write_marker(made, "synth")
    shutil.copy(made / MARKER, night / "videos" / MARKER)
    (night / "videos" / "00000.mp4").write_bytes(b"mine")
    before = snapshot(night)
    refused = CliRunner().invoke(cli, ["synth", str(night / "videos"), "--num-videos", "100"])
    assert refused.exit_code == 2 and "holds 00000.mp4, not written by `vlmcap synth`" in refused.output
    assert snapshot(night) == before


def test_overwrite_replaces_only_what_the_command_wrote(night) -> None:
    captions, site = night / "captions.jsonl", night / "site"

    def report(*more: str):
        return CliRunner().invoke(cli, ["captions", "report", str(captions), "--out", str(site), *more])

    assert report().exit_code == 0 and (site / MARKER).is_file()
    assert report("--overwrite").exit_code == 0  # its own folder, nothing else in it
    (site / "notes.txt").write_text("mine")
    refused = report("--overwrite")
    assert refused.exit_code == 2 and "holds notes.txt, not written by `vlmcap captions report`" in refused.output
    assert (site / "notes.txt").read_text() == "mine"
    (site / "notes.txt").unlink()
    with open(site / "index.html", "a") as page:  # a note typed into the page itself
        page.write("<!-- mine -->")
    edited = report("--overwrite")
    assert edited.exit_code == 2 and "holds index.html, changed since `vlmcap captions report`" in edited.output


def test_symlinked_and_dangling_output_folders(night, tmp_path) -> None:
    """A symlinked site is built where it points (the link stays); a dangling one is one clear line."""
    captions, real_site, link = night / "captions.jsonl", tmp_path / "www" / "report", tmp_path / "report"
    link.symlink_to(real_site)
    (night / "dangling").symlink_to(tmp_path / "gone")

    def report(out: Path, *more: str):
        return CliRunner().invoke(cli, ["captions", "report", str(captions), "--out", str(out), *more])

    dangling = report(night / "dangling")
    assert dangling.exit_code == 2 and "a symlink to" in dangling.output and "which does not exist" in dangling.output
    real_site.mkdir(parents=True)
    assert report(link).exit_code == 0
    assert link.is_symlink() and (real_site / "index.html").is_file() and (real_site / MARKER).is_file()
    again = report(link, "--overwrite")
    assert again.exit_code == 0, again.output
    assert link.is_symlink() and (real_site / "index.html").is_file()
