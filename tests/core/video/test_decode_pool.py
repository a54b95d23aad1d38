"""Decode workers: a hung or crashed decoder costs one video, never the run."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from vlmcap.presets import clip_preprocessor_config
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.pool import DecodePool

HANG = "fault_decoders:HangingDecoder"
CRASH = "fault_decoders:CrashingDecoder"


def run_pool(paths, **kwargs) -> tuple[dict, dict]:
    with DecodePool(**kwargs) as pool:
        results = {r.path: r for r in pool.imap_unordered(paths)}
        stats = dict(pool.stats)
    return results, stats


def test_mixed_folder_gives_one_result_per_input(clips, broken_inputs) -> None:
    good = [str(clips[n]) for n in ("h264_mp4", "vp9_webm", "av1_mp4", "rotated_90")]
    bad = [str(p) for p in broken_inputs.values()]
    spec = ImageSpec.from_dict(clip_preprocessor_config(112))
    results, stats = run_pool(good + bad, image_spec=spec, num_workers=2, timeout_s=30)
    assert set(results) == set(good + bad)
    for path in good:
        assert results[path].ok, results[path].error_message
        assert results[path].video.frames.shape == (8, 112, 112, 3)  # resized and cropped in the worker
    for path in bad:
        assert not results[path].ok and results[path].error_message.startswith(path)
    assert results[str(broken_inputs["audio_only"])].error_type == "NoVideoStream"
    assert stats["crashes"] == stats["timeouts"] == 0 and stats["workers_started"] == 2


def test_hung_decoder_is_killed_and_reported_as_timeout(clips) -> None:
    paths = [str(clips["h264_mp4"]), str(clips["vp9_webm"])]
    start = time.monotonic()
    results, stats = run_pool(paths, options=DecodeOptions(decoders=(HANG,)), num_workers=2, timeout_s=2)
    assert time.monotonic() - start < 20
    for path in paths:
        assert results[path].error_type == "DecodeTimeout"
        assert "longer than 2 s" in results[path].error_message
    assert stats["timeouts"] == 2


def test_hung_decoder_falls_back_to_pyav_in_a_fresh_worker(clips) -> None:
    path = str(clips["h264_mp4"])
    results, stats = run_pool([path], options=DecodeOptions(decoders=(HANG, "pyav")), num_workers=1, timeout_s=2)
    assert results[path].ok and results[path].video.meta.decoder == "pyav"
    assert stats == {"timeouts": 1, "crashes": 0, "retries": 1, "workers_started": 2}


def test_crashing_decoder_costs_only_its_video(clips) -> None:
    crash_paths = [str(clips["h264_mp4"]), str(clips["hevc_mkv"])]
    results, stats = run_pool(crash_paths, options=DecodeOptions(decoders=(CRASH,)), num_workers=1, timeout_s=30)
    for path in crash_paths:
        assert results[path].error_type == "DecoderCrashed"
        assert "signal SIGSEGV" in results[path].error_message
    assert stats["crashes"] == 2
    results, _ = run_pool(crash_paths, options=DecodeOptions(decoders=(CRASH, "pyav")), num_workers=1, timeout_s=30)
    assert all(r.ok and r.video.meta.decoder == "pyav" for r in results.values())


def test_workers_are_recycled_after_n_videos(clips) -> None:
    paths = [str(p) for p in clips.values()]
    results, stats = run_pool(paths, num_workers=1, max_tasks_per_worker=3, timeout_s=30)
    assert all(r.ok for r in results.values())
    assert stats["workers_started"] == -(-len(paths) // 3)


def test_no_worker_outlives_the_pool(clips) -> None:
    with DecodePool(num_workers=2) as pool:
        it = pool.imap_unordered([str(clips["h264_mp4"])] * 6)
        next(it)  # abandon the iteration with work in flight
    assert not [p for p in multiprocessing.active_children() if p.name == "vlmcap-decode"]


def test_results_are_streamed_with_bounded_work_in_flight(clips) -> None:
    consumed = []

    def paths():
        for i in range(6):
            consumed.append(i)
            yield str(clips["h264_mp4"]) if i % 2 else str(clips["mpeg4_avi"])

    with DecodePool(num_workers=2) as pool:
        it = pool.imap_unordered(paths())
        first = next(it)
        assert first.ok
        assert len(consumed) <= 3  # two in flight plus the one that just started
        rest = list(it)
    assert sorted(r.index for r in [first, *rest]) == list(range(6))


@pytest.mark.parametrize("method", ["spawn"])
def test_other_start_methods_work(clips, method: str) -> None:
    results, _ = run_pool([str(clips["h264_mp4"])], num_workers=1, start_method=method)
    assert next(iter(results.values())).ok


def test_a_decode_over_the_memory_limit_is_a_typed_error_and_the_pool_goes_on(clips, tmp_path) -> None:
    """The limit is real (RLIMIT_AS in the worker): a strip resized up to CLIP's 336 px needs ~3 GB."""
    from media import write_clip

    strip = write_clip(tmp_path / "strip.mp4", width=4096, height=16, num_frames=4)
    spec = ImageSpec.from_dict(clip_preprocessor_config(336))
    allowed = DecodeOptions(memory_limit_mb=2000, max_aspect_ratio=1000)  # only the OS limit stands in the way
    results, _ = run_pool([str(strip), str(clips["h264_mp4"])], options=allowed, image_spec=spec, num_workers=1)
    assert results[str(strip)].error_type == "DecodeOutOfMemory", results[str(strip)].error_message
    assert "2000 MB" in results[str(strip)].error_message
    assert results[str(clips["h264_mp4"])].ok
    refused, _ = run_pool([str(strip)], image_spec=spec, num_workers=1)  # the defaults refuse it up front
    assert refused[str(strip)].error_type == "UnsupportedFrameSize"
