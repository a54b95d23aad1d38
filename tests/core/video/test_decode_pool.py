"""Decode workers: a hung or crashed decoder costs one video, never the run."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
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


UNGUARDED = """
import sys
from vlmcap.video.pool import DecodePool
with DecodePool(num_workers=1) as pool:  # no main guard: a worker that ran this file again would die
    (result,) = pool.imap_unordered([sys.argv[1]])
print(result.ok, result.error_type)
"""

IN_CHILDREN = """
import multiprocessing, sys
from vlmcap.video.pool import DecodePool

def decode(path):
    with DecodePool(num_workers=1) as pool:
        (result,) = pool.imap_unordered([path])
    print("child", result.ok, flush=True)

if __name__ == "__main__":
    spawn = multiprocessing.get_context("spawn")
    child = spawn.Process(target=decode, args=(sys.argv[1],))
    child.start(); child.join()
    with spawn.Pool(1) as daemonic:  # a Pool's workers may start no processes: one clear error
        try:
            daemonic.apply(decode, (sys.argv[1],))
        except Exception as e:
            print(type(e).__name__, e)
"""


@pytest.mark.parametrize("script", [UNGUARDED, IN_CHILDREN], ids=["unguarded-script", "multiprocessing-children"])
def test_workers_start_from_any_main_module(clips, tmp_path, script: str) -> None:
    """Workers never run the parent's main script (vlmcap/video/pool.py): a script with no main guard
    decodes, and so does a multiprocessing child; a daemonic one is told why it cannot."""
    path = tmp_path / "decode_here.py"
    path.write_text(script, encoding="utf-8")
    shown = subprocess.run(
        [sys.executable, str(path), str(clips["h264_mp4"])], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    lines = shown.stdout.splitlines()
    if script is UNGUARDED:
        assert lines == ["True None"]
    else:
        assert lines[0] == "child True"
        assert lines[1].startswith("ConfigError vlmcap cannot start its decode workers inside the daemonic process")


def test_which_main_scripts_a_spawned_process_runs_again(tmp_path) -> None:
    probe = "from vlmcap.environment import unguarded_main_script; print(unguarded_main_script())"
    plain, guarded = tmp_path / "plain.py", tmp_path / "guarded.py"
    plain.write_text(probe + "\n", encoding="utf-8")
    guarded.write_text(f"if '__main__' == __name__:\n    {probe}\n", encoding="utf-8")

    def shown(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    assert shown(str(plain)) == str(plain)
    assert shown(str(guarded)) == "None"
    assert shown("-c", probe) == "None"
    assert shown("-", stdin=probe) == "<stdin>"  # a child cannot run it again either
