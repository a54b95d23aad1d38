"""One nightly-style run over a mix of hostile inputs (issue classes of docs/BATCH.md, "What one
input can do"): each input costs bounded time and ends as its own line, every sidecar is there,
and a first SIGTERM stops a run stuck on a trickling server at once.

The inputs, each one a class a hostile user found: a list file with a byte-order mark, CRLF,
blanks, comments and garbage; a URL spelled two ways; servers that trickle headers or a body, fail
with 500, loop redirects, 404, refuse the connection; `a.mp4` and `a.mkv` with the same bytes
(sidecars, thumbnails, dedup); a name that fills NAME_MAX; a symlink to a video; random bytes, an
empty file, a FIFO named like a video; a 1-second clip whose last frame is stamped a week later; a
sidecar and a thumbnail that cannot be written; a symlinked output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import srt
from hostile_http import hostile_server
from media import write_clip
from PIL import Image
from repo_paths import TESTS

from vlmcap.storage.output_names import per_video_path
from vlmcap.video.remote_urls import normalize_url
from vlmcap.video.thumbnails import thumbnail_path

WEEK_S = 7 * 86_400.0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vlmcap.cli", "batch", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TESTS)}


def _refused_url() -> str:
    with socket.socket() as s:  # a port nothing listens on once this is closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/gone.mp4"


def _strict(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def _night(root: Path, videos: list[Path]) -> Path:
    night = root / "night"
    night.mkdir()
    shutil.copy(videos[0], night / "a.mp4")
    shutil.copy(videos[0], night / "a.mkv")  # the same stem and the same bytes
    shutil.copy(videos[1], night / "b.mp4")
    shutil.copy(videos[2], night / ("가" * 83 + ".mp4"))  # 253 bytes: legal, its sidecar's name is not
    (night / "link.mp4").symlink_to(night / "b.mp4")  # b again, by another name
    (night / "random.mp4").write_bytes(os.urandom(4096))
    (night / "zero.mp4").write_bytes(b"")
    os.mkfifo(night / "pipe.mp4")
    write_clip(night / "week.mkv", num_frames=9, frame_times_s=[i / 8 for i in range(8)] + [WEEK_S])
    return night


def test_a_hostile_night_gives_one_line_per_input_in_bounded_time(tiny_bundle, six_videos, tmp_path) -> None:
    videos = sorted(six_videos.glob("*.mp4"))
    night = _night(tmp_path, videos)
    subs, thumbs = tmp_path / "subs", tmp_path / "thumbs"
    blocked = per_video_path(subs, str(night / "b.mp4"), ".srt")
    blocked.mkdir(parents=True)  # a folder where b's sidecar goes: that write fails
    (tmp_path / "real").mkdir()
    out = tmp_path / "captions.jsonl"
    out.symlink_to(tmp_path / "real" / "captions.jsonl")

    with hostile_server(videos[3].read_bytes()) as (base, _):
        refused = _refused_url()
        no_sheet = thumbnail_path(thumbs, normalize_url(f"{base}/video.mp4"), 0)
        no_sheet.mkdir(parents=True)  # a folder where the first segment's contact sheet goes
        urls = [f"{base}/{name}" for name in ("video.mp4", "slow-headers.mp4", "slow-body.mp4", "broken.mp4")]
        urls += [f"{base}/loop.mp4", f"{base}/missing.mp4", refused]
        lines = ["# tonight's remote videos", "", f"{base}/a%20b.mp4", *urls, f"{base}/a b.mp4", "::::"]
        listing = tmp_path / "night.txt"
        listing.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
        args = ["--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "transformers"]
        args += ["--max-new-tokens", "8", "--batch-size", "4", "--workers", "2", "--decode-timeout", "60"]
        args += ["--segments", "fixed:2", "--segment-min-s", "1", "--srt", str(subs), "--dedup", "sha256"]
        args += ["--thumbnails", str(thumbs)]
        args += ["--remote-timeout", "1", "--remote-retries", "1", "--remote-backoff", "0.05"]
        t0 = time.monotonic()
        command = _cli(str(night), str(listing), *args)
        done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
        wall_s = time.monotonic() - t0

    assert done.returncode == 1, done.stderr[-3000:]  # some inputs failed, each on its own line
    assert out.is_symlink() and (tmp_path / "real" / "captions.jsonl").stat().st_size > 0
    records = [_strict(line) for line in out.read_text(encoding="utf-8").splitlines()]
    by_video = {r["video"]: r for r in records}
    assert len(by_video) == len(records)  # one line per input
    kinds = {video: r["error"]["type"] if r["status"] == "error" else "ok" for video, r in by_video.items()}
    long_name = str(night / ("가" * 83 + ".mp4"))
    assert kinds == {
        str(night / "a.mkv"): "ok",
        str(night / "a.mp4"): "ok",
        str(night / "b.mp4"): "SidecarWriteError",
        str(night / "pipe.mp4"): "NotAVideo",
        str(night / "random.mp4"): kinds[str(night / "random.mp4")],  # whichever way random bytes fail
        str(night / "week.mkv"): "ok",
        str(night / "zero.mp4"): "NotAVideo",
        long_name: "ok",
        f"{base}/a%20b.mp4": "ok",  # and `a b.mp4`, the same object, no second line
        f"{base}/video.mp4": "ThumbnailWriteError",
        f"{base}/slow-headers.mp4": "RemoteTimeout",
        f"{base}/slow-body.mp4": "RemoteTimeout",
        f"{base}/broken.mp4": "RemoteConnectionError",
        f"{base}/loop.mp4": "RemoteRedirectLoop",
        f"{base}/missing.mp4": "RemoteNotFound",
        refused: "RemoteConnectionError",
        f"{listing}:{len(lines)}": "BadInputLine",
    }, kinds
    assert kinds[str(night / "random.mp4")] != "ok"
    assert "not a regular file" in by_video[str(night / "pipe.mp4")]["error"]["message"]
    assert by_video[str(night / "a.mp4")]["duplicate_of"] == str(night / "a.mkv")  # first in path order
    week = by_video[str(night / "week.mkv")]
    assert 1 <= len(week["segments"]) <= 9 and week["segments"][-1]["end_s"] >= WEEK_S  # planned by its frames

    for record in records:  # every captioned video's sidecar, its own, with a cue per segment
        if record["status"] == "ok":
            sidecar = per_video_path(subs, record["file"]["path"], ".srt")
            cues = list(srt.parse(sidecar.read_text(encoding="utf-8")))
            assert len(cues) == len(record.get("segments") or [record]), sidecar
    assert per_video_path(subs, str(night / "a.mp4"), ".srt") != per_video_path(subs, str(night / "a.mkv"), ".srt")
    assert blocked.is_dir() and no_sheet.is_dir()  # left as they were
    assert str(no_sheet) in by_video[f"{base}/video.mp4"]["error"]["message"]

    for record in records:  # a contact sheet per segment, named like the sidecars, whole JPEGs
        if record["status"] == "ok":
            key = record["file"]["path"] if record["file"] else normalize_url(record["video"])
            original = by_video.get(record.get("duplicate_of"), record)  # a copy shows its original's frames
            okey = original["file"]["path"] if original["file"] else normalize_url(original["video"])
            sheets = [s["thumbnail"] for s in record["segments"]]
            assert sheets == [str(thumbnail_path(thumbs, okey, i)) for i in range(len(sheets))], key
            assert record["thumbnail"] == sheets[0]
            for sheet in sheets:
                with Image.open(sheet) as image:
                    image.load()  # a torn file fails here
                    assert image.format == "JPEG"
    assert not list(thumbs.rglob("*.tmp*"))  # no temporary file left behind
    assert wall_s < 300, wall_s


def test_the_first_sigterm_stops_a_run_stuck_on_a_trickling_server(tiny_bundle, six_videos, tmp_path) -> None:
    out = tmp_path / "captions.jsonl"
    with hostile_server() as (base, handler):
        listing = tmp_path / "urls.txt"
        listing.write_text(f"{base}/slow-headers.mp4\n{base}/slow-headers.mp4?again\n", encoding="utf-8")
        args = ["--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "transformers"]
        args += ["--remote-timeout", "600", "--remote-retries", "5"]  # nothing but the signal ends it soon
        proc = subprocess.Popen(
            _cli(str(listing), *args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 120
            while not handler.hits and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert handler.hits, "the run never asked the server"
            time.sleep(0.5)  # well inside the request
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            _, stderr = proc.communicate(timeout=60)
            stopped_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 143, stderr[-2000:]
    assert stopped_s < 10, stopped_s  # the request was abandoned, not waited out
    assert "re-run the same command to continue" in stderr
    assert not out.exists() or out.read_text(encoding="utf-8") == ""  # no line for an input never looked at
