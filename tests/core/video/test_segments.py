"""Long videos: a caption per time segment (`vlmcap batch --segments`), streamed decode, sidecars."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt
import webvtt
from click.testing import CliRunner
from repo_paths import TESTS

from vlmcap.cli import cli
from vlmcap.training.synth import write_multiscene_video
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.pool import DecodePool
from vlmcap.video.scenes import detect_cuts
from vlmcap.video.segments import SegmentPlan, fixed_segments, scene_segments

SCENE_S = 5.0


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> dict[str, tuple[Path, list[float]]]:
    """Multi-scene videos (name -> path, true cut times) and one shorter than a 5 s window."""
    root = tmp_path_factory.mktemp("long-videos")
    rng = random.Random(7)
    videos = {}
    for name, scenes, scene_s in (("four", 4, SCENE_S), ("six", 6, SCENE_S), ("short", 1, 3.0)):
        timeline = write_multiscene_video(root / f"{name}.mp4", scenes, rng, scene_s=scene_s)
        videos[name] = (root / f"{name}.mp4", [t.start_s for t in timeline[1:]])
    return videos


# --- planning ---------------------------------------------------------------------------------


def test_fixed_windows_cover_the_file_and_a_short_tail_joins_the_last_window() -> None:
    assert [(s.start_s, s.end_s) for s in fixed_segments(65.0, 30.0, 2.0)] == [(0, 30), (30, 60), (60, 65)]
    assert [(s.start_s, s.end_s) for s in fixed_segments(61.0, 30.0, 2.0)] == [(0, 30), (30, 61)]
    assert [(s.start_s, s.end_s) for s in fixed_segments(12.0, 30.0, 2.0)] == [(0, 12)]  # shorter than a window


def test_scene_bounds_merge_flicker_and_split_a_static_hour() -> None:
    flicker = [i * 0.1 for i in range(1, 600)]  # a cut every 0.1 s for a minute
    segments = scene_segments(flicker, 60.0, min_s=2.0, max_s=60.0)
    assert all(s.length_s >= 2.0 for s in segments) and len(segments) <= 30
    static = scene_segments([], 3600.0, min_s=2.0, max_s=60.0)
    assert len(static) == 60 and all(abs(s.length_s - 60.0) < 1e-6 for s in static)
    assert static[0].start_s == 0.0 and static[-1].end_s == 3600.0


# --- scene detection ----------------------------------------------------------------------------


def test_scene_detection_finds_the_synthetic_cuts_within_half_a_second(long_videos) -> None:
    for name in ("four", "six"):
        path, truth = long_videos[name]
        found = detect_cuts(str(path), threshold=27.0, min_scene_s=2.0)
        assert len(found) == len(truth), (name, found, truth)
        assert all(abs(f - t) <= 0.5 for f, t in zip(found, truth, strict=True)), (name, found, truth)
    assert detect_cuts(str(long_videos["short"][0]), 27.0, 2.0) == []


# --- the decode pool streams segments -----------------------------------------------------------


def segment_results(paths, plan, decoders=("pyav",), timeout_s=30.0):
    with DecodePool(DecodeOptions(decoders=decoders), None, 1, timeout_s, segments=plan) as pool:
        results = list(pool.imap_unordered(paths))
        return results, dict(pool.stats)


def test_a_video_longer_than_the_timeout_is_not_a_hang_when_each_segment_is_quick(long_videos) -> None:
    # 6 segments x 0.6 s (SlowDecoder): more than the 2 s timeout in all
    path = str(long_videos["six"][0])
    plan = SegmentPlan("fixed", SCENE_S)
    results, stats = segment_results([path], plan, decoders=("fault_decoders:SlowDecoder",), timeout_s=2.0)
    assert [r.segment.index for r in results] == list(range(6)) and all(r.ok for r in results)
    assert stats["timeouts"] == 0
    assert all(r.video.frames.shape[0] == 8 for r in results)  # one segment's frames per message
    for r in results:  # the frames of a segment are sampled inside it
        assert all(r.segment.start_s <= t < r.segment.end_s for t in r.video.timestamps_s)


def test_a_decoder_that_hangs_mid_video_is_killed_and_the_retry_resumes_at_the_next_segment(long_videos) -> None:
    path = str(long_videos["four"][0])
    results, stats = segment_results(
        [path], SegmentPlan("fixed", SCENE_S), decoders=("fault_decoders:LateHangDecoder", "pyav"), timeout_s=2.0
    )
    assert [r.segment.index for r in results] == [0, 1, 2, 3]  # 0-1 before the hang, 2-3 by PyAV: none twice
    assert stats["timeouts"] == 1 and stats["retries"] == 1
    assert [r.video.meta.decoder for r in results] == ["late-hang", "late-hang", "pyav", "pyav"]


def test_a_stuck_scene_pass_is_still_killed(long_videos) -> None:
    """Without PyAV in the chain the hang has no rescue: the video becomes one timeout error."""
    path = str(long_videos["four"][0])
    start = time.monotonic()
    results, _stats = segment_results(
        [path], SegmentPlan("scenes"), decoders=("fault_decoders:LateHangDecoder",), timeout_s=2.0
    )
    assert time.monotonic() - start < 30
    assert [r.segment.index for r in results if r.ok] == [0, 1]
    assert results[-1].error_type == "DecodeTimeout" and "a segment took longer than 2 s" in results[-1].error_message


# --- vlmcap batch --segments --------------------------------------------------------------------


def base_args(bundle: Path, out: Path) -> list[str]:
    return ["--out", str(out), "--engine", str(bundle), "--llm-backend", "transformers", "--max-new-tokens", "8"]


def srt_time(seconds: float) -> str:
    """HH:MM:SS.mmm, as webvtt-py shows a cue's times."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batch_segments_give_one_line_per_video_with_timed_segments_and_sidecars(
    tiny_bundle, long_videos, tmp_path
) -> None:
    out, stats, srt_dir, vtt_dir = tmp_path / "c.jsonl", tmp_path / "s.json", tmp_path / "srt", tmp_path / "vtt"
    paths = [str(long_videos[n][0]) for n in ("four", "six", "short")]
    args = [*paths, *base_args(tiny_bundle, out), "--segments", "scenes", "--batch-size", "4"]
    args += ["--batch-wait", "30", "--srt", str(srt_dir), "--vtt", str(vtt_dir), "--stats", str(stats)]
    result = CliRunner().invoke(cli, ["batch", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = {Path(r["video"]).stem: r for r in lines(out)}
    assert sorted(records) == ["four", "short", "six"]
    for name, record in records.items():
        truth = long_videos[name][1]
        segments = record["segments"]
        assert len(segments) == len(truth) + 1
        assert segments[0]["start_s"] == 0.0 and abs(segments[-1]["end_s"] - record["duration_s"]) < 0.2
        for a, b in itertools.pairwise(segments):
            assert a["end_s"] == b["start_s"]  # contiguous, in time order
        for segment in segments:
            assert set(segment) == {"start_s", "end_s", "caption", "frames_s", "num_tokens", "finish_reason", "quality"}
            assert len(segment["frames_s"]) == 8
            assert all(segment["start_s"] <= t < segment["end_s"] for t in segment["frames_s"])
        assert record["caption"] == "\n".join(s["caption"] for s in segments)
        assert record["num_tokens"] == sum(s["num_tokens"] for s in segments)
        flags = {f for s in segments for f in s["quality"]["flags"]}
        assert set(record["quality"]["flags"]) == flags  # the line's quality is its segments' union

        sidecar = Path(record["file"]["path"]).relative_to("/")
        parsed = list(srt.parse((srt_dir / f"{sidecar}.srt").read_text()))
        assert [(c.start.total_seconds(), c.end.total_seconds()) for c in parsed] == [
            (round(s["start_s"], 3), round(s["end_s"], 3)) for s in segments
        ]
        assert [c.content for c in parsed] == [s["caption"].strip() or "…" for s in segments]
        vtt = webvtt.read(str(vtt_dir / f"{sidecar}.vtt"))
        assert [(c.start, c.end) for c in vtt] == [(srt_time(s["start_s"]), srt_time(s["end_s"])) for s in segments]
        assert [c.text for c in vtt] == [c.content for c in parsed]

    report = json.loads(stats.read_text())
    assert report["segments"] == 4 + 6 + 1
    # 11 segments in batches of 4: filled across videos (3 calls), not one partial batch per video (4+).
    assert report["llm_batches"] == {"schedule": "batch", "calls": 3, "items": 11}


def test_kill_9_during_a_long_video_resumes_to_one_line_per_video_with_every_segment(
    tiny_bundle, long_videos, tmp_path
) -> None:
    out = tmp_path / "c.jsonl"
    short, long = str(long_videos["short"][0]), str(long_videos["six"][0])
    args = [short, long, *base_args(tiny_bundle, out), "--segments", "fixed:5", "--workers", "1", "--batch-size", "1"]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    slow = ["--decoders", "fault_decoders:SlowDecoder"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmcap.cli", "batch", *args, *slow],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while (not out.exists() or out.stat().st_size == 0) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.5)  # the short video's line is written; the long one is a few of its 6 x 0.6 s segments in
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.kill()
    proc.wait()
    assert [r["video"] for r in lines(out)] == [short]  # no partial line for the long video

    result = CliRunner().invoke(cli, ["batch", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = lines(out)
    assert [r["video"] for r in records] == [short, long]
    assert [s["start_s"] for s in records[1]["segments"]] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    assert len(records[0]["segments"]) == 1  # shorter than one window: one segment


def test_a_video_that_fails_part_way_leaves_an_error_line_and_no_segments(tiny_bundle, long_videos, tmp_path) -> None:
    out = tmp_path / "c.jsonl"
    paths = [str(long_videos[n][0]) for n in ("four", "short")]
    args = [*paths, *base_args(tiny_bundle, out), "--segments", "fixed:5", "--decode-timeout", "2"]
    result = CliRunner().invoke(
        cli, ["batch", *args, "--decoders", "fault_decoders:LateHangDecoder"], catch_exceptions=False
    )
    assert result.exit_code == 1, result.output
    records = {Path(r["video"]).stem: r for r in lines(out)}
    assert records["four"]["status"] == "error" and records["four"]["error"]["type"] == "DecodeTimeout"
    assert "segments" not in records["four"]
    assert records["short"]["status"] == "ok" and len(records["short"]["segments"]) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--segments", "fixed:"], "--segments"),
        (["--segments", "shots"], "--segments"),
        (["--segment-min-s", "90"], "segment_min_s (90) is more than segment_max_s (60)"),
    ],
)
def test_bad_segment_settings_fail_before_any_work(tiny_bundle, long_videos, tmp_path, flags, message) -> None:
    out = tmp_path / "c.jsonl"
    args = [str(long_videos["short"][0]), *base_args(tiny_bundle, out), *flags]
    result = CliRunner().invoke(cli, ["batch", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()
