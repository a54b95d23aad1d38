"""`vlmcap batch --ray` on a local Ray cluster the test starts (CPU only, 2 CPUs, tiny bundle)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from repo_paths import TESTS

RAY_ARGS = ["--ray", "--ray-num-cpus", "2", "--batch-size", "4", "--llm-backend", "transformers"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    names = ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard")
    return [line for line in out.splitlines() if any(n in line for n in names) and "ps -eo" not in line]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "vlmcap.cli", "batch", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def ray_inputs(small_synth, broken_inputs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-videos")
    sources = sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))[:6]
    for src in sources:
        shutil.copy(src, root / src.name)
    shutil.copy(sources[0], root / "zz-copy.mp4")  # --dedup: the same bytes as the first, under another name
    shutil.copy(broken_inputs["truncated_mp4"], root / "truncated.mp4")
    shutil.copy(broken_inputs["random_bytes"], root / "random.mp4")
    return root


def test_ray_run_equals_the_local_run_and_leaves_no_processes(tiny_bundle, ray_inputs, tmp_path) -> None:
    """With segments (two per 2 s video): decode rows per segment, gathered back into one line per video."""
    local = tmp_path / "local.jsonl"
    common = [str(ray_inputs), "--engine", str(tiny_bundle), "--max-new-tokens", "16"]
    common += ["--segments", "fixed:1", "--segment-min-s", "0.5"]
    # A guard's retry samples, and the two drivers batch differently: keep the flags, not the retry.
    common += ["--no-quality-retry", "--dedup", "sha256", "--thumbnails", str(tmp_path / "thumbs")]
    local_run = run(*common, "--out", str(local), "--llm-backend", "transformers", "--batch-size", "4")
    assert local_run.returncode == 1, local_run.stderr[-2000:]
    shutil.rmtree(tmp_path / "thumbs")  # written again by the Ray run's decode actors, to the same names
    before = ray_processes()
    out = tmp_path / "ray.jsonl"
    result = run(*common, "--out", str(out), *RAY_ARGS)
    assert result.returncode == 1, result.stderr[-3000:]

    def summary(r: dict) -> tuple:
        return r["status"], r.get("caption"), (r.get("error") or {}).get("type"), r.get("segments"), r["sha256"]

    expected = {r["video"]: summary(r) for r in lines(local)}
    got = {r["video"]: summary(r) for r in lines(out)}
    assert got == expected
    assert {Path(v).name: s[2] for v, s in got.items() if s[0] == "error"} == {
        "truncated.mp4": "TruncatedVideo",
        "random.mp4": "NotAVideo",
    }
    copies = {Path(r["video"]).name: Path(r["duplicate_of"]).name for r in lines(out) if "duplicate_of" in r}
    assert copies == {"zz-copy.mp4": sorted(ray_inputs.glob("0*.mp4"))[0].name}  # captioned once, on Ray too
    ok = [r for r in lines(out) if r["status"] == "ok"]
    assert all(len(r["segments"]) == 2 and len(r["frames_s"]) == 16 and r["file"]["size"] > 0 for r in ok)
    assert all(Path(s["thumbnail"]).is_file() for r in ok for s in r["segments"])
    # The local cluster this run started is gone when the run is: what ray.shutdown() leaves (its agents
    # poll for their raylet, half a minute on a loaded box) is killed before the driver exits.
    deadline = time.monotonic() + 3  # a killed process leaves the process table a moment later
    while not set(ray_processes()) <= set(before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(ray_processes()) <= set(before)

    again = run(*common, "--out", str(out), *RAY_ARGS)  # resume: nothing left, Ray is not even started
    assert again.returncode == 0 and "skipped 7 already done + 2 failed before" in again.stderr
    assert len(lines(out)) == 9


def test_ray_driver_killed_then_resumed_captions_each_video_once(tiny_bundle, small_synth, tmp_path) -> None:
    videos = Path(small_synth["train"]).parent / "videos"
    out = tmp_path / "ray.jsonl"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "vlmcap.cli", "batch", str(videos), "--out", str(out), "--engine", str(tiny_bundle)]
    cmd += ["--max-new-tokens", "16", *RAY_ARGS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while (not out.exists() or out.stat().st_size == 0) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.kill()  # the driver only: its Ray cluster must notice and go away on its own
    proc.wait()
    written = len(lines(out))
    assert 0 < written < 60
    result = run(str(videos), "--out", str(out), "--engine", str(tiny_bundle), "--max-new-tokens", "16", *RAY_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    records = lines(out)
    assert sorted(r["video"] for r in records) == sorted(str(p) for p in videos.glob("*.mp4"))
    assert all(r["status"] == "ok" for r in records)


def test_what_outlives_ray_shutdown_is_killed_before_the_run_ends() -> None:
    """A local cluster's agents poll for their raylet and outlived the run by half a minute on a loaded
    box: what is still below the driver CLUSTER_EXIT_S after ray.shutdown() (here a child that would
    wait a minute; Ray itself is not up, so its shutdown has nothing to stop) is killed, and what was
    there before Ray started is left alone."""
    from vlmcap.engines.batch.ray_pipeline import CLUSTER_EXIT_S, _shut_down
    from vlmcap.engines.runtime.watchdog import descendants

    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # there before Ray
    not_ray = descendants(os.getpid())
    lingering = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = time.monotonic()
        _shut_down(not_ray)
        assert lingering.wait(timeout=5) == -signal.SIGKILL
        assert CLUSTER_EXIT_S <= time.monotonic() - started < CLUSTER_EXIT_S + 5
        assert ours.poll() is None
    finally:
        for process in (ours, lingering):
            process.kill()
            process.wait()
