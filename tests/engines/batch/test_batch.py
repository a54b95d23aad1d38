"""`vlmcap batch` end to end on a tiny bundle: real decoders, ONNX Runtime, transformers and vLLM's CPU engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from repo_paths import TESTS

from vlmcap.bundle import load_bundle
from vlmcap.cli import cli
from vlmcap.engines.batch.lock import EXIT_LOCKED, OutputLock
from vlmcap.video.decoders import DecodeOptions, decode_video
from vlmcap.video.preprocess import resize_and_crop
from vlmcap.video.thumbnails import contact_sheet, thumbnail_path

GOOD = 9
BROKEN_TYPES = {
    "zero.mp4": "NotAVideo",
    "truncated.mp4": "TruncatedVideo",
    "random.mp4": "NotAVideo",
    "notes.mp4": "NotAVideo",
    "audio.mp4": "NoVideoStream",
}
DOCUMENTED_OK_FIELDS = {"video", "status", "caption", "frames_s", "duration_s", "decoder", "bundle", "prompt"}
DOCUMENTED_OK_FIELDS |= {"timings_ms", "finished_at"}


@pytest.fixture(scope="session")
def batch_dir(small_synth, broken_inputs, real_clips, tmp_path_factory) -> Path:
    """8 synthetic videos + 1 real clip (good) and 5 broken files, all named like videos."""
    root = tmp_path_factory.mktemp("batch-videos")
    synthetic = sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))[:8]
    for src in synthetic:
        shutil.copy(src, root / f"synth-{src.name}")
    shutil.copy(real_clips["carphone_distorted"] if "carphone_distorted" in real_clips else real_clips["bikes"], root)
    for name, key in (
        ("zero.mp4", "zero_bytes"),
        ("truncated.mp4", "truncated_mp4"),
        ("random.mp4", "random_bytes"),
        ("notes.mp4", "text_file"),
        ("audio.mp4", "audio_only"),
    ):
        shutil.copy(broken_inputs[key], root / name)
    return root


def lines(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def batch(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["batch", *args], input=input, catch_exceptions=False)


def base_args(bundle: Path, out: Path) -> list[str]:
    return ["--out", str(out), "--engine", str(bundle), "--llm-backend", "transformers", "--max-new-tokens", "16"]


def batch_subprocess(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    # The console script, as users run it: vLLM's spawned engine process re-imports it (vlmcap/cli/app.py).
    script = Path(sys.executable).with_name("vlmcap")
    return subprocess.Popen([str(script), "batch", *args], env=full_env, **kwargs)


def test_mixed_folder_captions_the_good_and_records_each_failure(tiny_bundle, batch_dir, tmp_path) -> None:
    out = tmp_path / "captions.jsonl"
    stats = tmp_path / "stats.json"
    thumbs = tmp_path / "thumbs"
    args = ["--batch-size", "4", "--stats", str(stats), "--thumbnails", str(thumbs)]
    result = batch(str(batch_dir), *base_args(tiny_bundle, out), *args)
    assert result.exit_code == 1, result.output  # some failed, their lines written
    records = lines(out)
    assert len(records) == GOOD + len(BROKEN_TYPES)
    assert len({r["video"] for r in records}) == len(records)  # one line per video
    by_name = {Path(r["video"]).name: r for r in records}
    for name, kind in BROKEN_TYPES.items():
        assert by_name[name]["status"] == "error" and by_name[name]["error"]["type"] == kind, by_name[name]
        assert name in by_name[name]["error"]["message"]
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == GOOD
    bundle_id = json.loads((tiny_bundle / "bundle.json").read_text())["id"]
    for r in ok:
        assert set(r) >= DOCUMENTED_OK_FIELDS and r["caption"]
        # 16 new tokens at most: "length" exactly when the caption was cut there, not at the end of turn
        assert r["finish_reason"] in ("stop", "length") and (r["finish_reason"] == "length") <= (r["num_tokens"] == 16)
        assert len(r["frames_s"]) == 8 and r["frames_s"] == sorted(r["frames_s"])
        assert r["decoder"] in ("decord", "pyav") and r["bundle"] == bundle_id
        assert set(r["timings_ms"]) == {"decode", "vision", "llm"} and r["finished_at"].endswith("Z")
        assert r["thumbnail"] == str(thumbnail_path(thumbs, r["file"]["path"]))
    assert not any("thumbnail" in r for r in records if r["status"] == "error")  # nothing was decoded
    _check_sheets_show_the_frames_the_model_saw(tiny_bundle, ok)
    report = json.loads(stats.read_text())
    assert report["captioned"] == GOOD and report["failed"] == len(BROKEN_TYPES)
    assert report["truncated"] == sum(r["finish_reason"] == "length" for r in ok)
    assert report["decode_pool"]["workers_started"] >= 1 and report["decode_pool"]["timeouts"] == 0
    assert report["videos_per_s"] > 0 and report["tokens_per_s"] > 0
    assert "captioned 9, failed 5" in result.output

    again = batch(str(batch_dir), *base_args(tiny_bundle, out))
    assert again.exit_code == 0 and "skipped 9 already done + 5 failed before" in again.output
    assert lines(out) == records


def _check_sheets_show_the_frames_the_model_saw(bundle: Path, records: list[dict]) -> None:
    """Each sheet is the record's frames, decoded again and resized as the model's input is: within
    JPEG's error of that, and far from any other video's frames."""
    spec = load_bundle(bundle).manifest.image.spec()
    expected, shown = [], []
    for r in records:
        video = decode_video(r["video"], DecodeOptions(num_frames=8, decoders=(r["decoder"],)))
        assert [round(t, 3) for t in video.timestamps_s] == r["frames_s"]
        expected.append(np.asarray(contact_sheet(resize_and_crop(video.frames, spec)), np.int16))
        with Image.open(r["thumbnail"]) as image:
            shown.append(np.asarray(image.convert("RGB"), np.int16))
    for i, sheet in enumerate(shown):
        errors = [float(np.abs(sheet - other).mean()) if other.shape == sheet.shape else 255.0 for other in expected]
        assert errors[i] < 6 and errors[i] == min(errors), (records[i]["video"], errors)


def test_vllm_engine_writes_the_same_captions_as_transformers(tiny_bundle, batch_dir, tmp_path) -> None:
    """The real vLLM CPU engine fed prompt embeds, streamed (its default schedule) with at most 2
    requests in flight: greedy captions identical to transformers generate, failures still written.

    Every first attempt is cut at 3 tokens, so every caption is the caption guards' retry (greedy,
    16 tokens here): the streaming schedule's retry path gives what the batched one does."""
    retry = tmp_path / "retry.yaml"
    retry.write_text("batch:\n  quality:\n    retry_generation: {max_new_tokens: 16, temperature: 0.0}\n")
    cut = ["--max-new-tokens", "3", "--config", str(retry)]
    reference = tmp_path / "transformers.jsonl"
    batch(str(batch_dir), *base_args(tiny_bundle, reference), "--batch-size", "4", *cut)
    out, stats = tmp_path / "vllm.jsonl", tmp_path / "stats.json"
    args = [str(batch_dir), "--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "vllm", *cut]
    args += ["--vision-batch", "3", "--max-inflight", "2", "--stats", str(stats)]
    proc = batch_subprocess(*args, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr[-3000:]
    assert "llm vllm (float32)" in stderr
    # Library chatter stays out without -v (vlmcap/cli/app.py): torch's NUMA notice from vLLM's
    # engine process, vLLM's Triton notice there, its FutureWarnings and its weight-loading bar.
    for chatter in ("NUMA binding", "Triton is installed", "FutureWarning", "Loading safetensors checkpoint shards"):
        assert chatter not in stderr, stderr[-3000:]
    expected = {r["video"]: r.get("caption") or r["error"]["type"] for r in lines(reference)}
    got = {r["video"]: r.get("caption") or r["error"]["type"] for r in lines(out)}
    assert got == expected
    assert sum(1 for r in lines(out) if r["status"] == "ok") == GOOD
    quality = {r["video"]: r["quality"] for r in lines(out) if r["status"] == "ok"}
    assert quality == {r["video"]: r["quality"] for r in lines(reference) if r["status"] == "ok"}
    assert all(q["retried_for"] == ["truncated"] and q["used"] == "retry" for q in quality.values())
    report = json.loads(stats.read_text())
    assert report["quality"]["retried"] == GOOD
    assert report["engines"]["llm_schedule"] == "stream (at most 2 in flight)"
    streamed = report["llm_batches"]
    assert streamed["schedule"] == "stream" and streamed["items"] == GOOD
    assert streamed["peak_inflight"] == 2 and streamed["steps"] >= GOOD  # 2 at a time: no batch of 9 formed


def test_penalties_are_refused_with_vllm_before_it_starts(tiny_bundle, batch_dir, tmp_path) -> None:
    out = tmp_path / "c.jsonl"
    args = ["--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "vllm", "--repetition-penalty", "1.2"]
    result = batch(str(batch_dir), *args)
    assert result.exit_code == 2 and "vllm-project/vllm#57719" in result.output
    assert not out.exists()


def test_kill_9_mid_run_then_resume_gives_each_video_exactly_once(tiny_bundle, small_synth, tmp_path) -> None:
    videos = sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))
    out = tmp_path / "captions.jsonl"
    args = [*base_args(tiny_bundle, out), "--batch-size", "2", "--workers", "1"]
    proc = batch_subprocess(str(videos[0].parent), *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while (not out.exists() or out.stat().st_size == 0) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.kill()
    proc.wait()
    partial = out.read_bytes()
    assert 0 < partial.count(b"\n") < len(videos)
    with open(out, "ab") as f:  # and as if the kill had torn a line mid-write
        f.write(b'{"video": "/half/a/line", "sta')

    result = batch(str(videos[0].parent), *args)
    assert result.exit_code == 0, result.output
    records = lines(out)
    assert sorted(r["video"] for r in records) == sorted(map(str, videos))
    assert all(r["status"] == "ok" for r in records)
    assert out.read_bytes().startswith(partial)  # what was written before the kill is untouched


@pytest.mark.parametrize(
    "sig, code, group",
    [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, False), (signal.SIGINT, 130, True)],
    ids=["sigterm", "sigint", "ctrl-c-to-the-process-group"],
)
def test_signals_stop_cleanly_with_their_exit_code(tiny_bundle, small_synth, tmp_path, sig, code, group) -> None:
    videos = Path(small_synth["train"]).parent / "videos"
    out = tmp_path / "captions.jsonl"
    args = [*base_args(tiny_bundle, out), "--batch-size", "2", "--workers", "1"]
    proc = batch_subprocess(
        str(videos), *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while (not out.exists() or out.stat().st_size == 0) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if group:  # what a terminal does: every process of the job gets it, decode workers included
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert "re-run the same command to continue" in stderr
    done = lines(out)  # complete lines only: flushed, nothing torn
    assert 0 < len(done) < 60
    result = batch(str(videos), *args)
    assert result.exit_code == 0
    assert len(lines(out)) == 60 and len({r["video"] for r in lines(out)}) == 60


def test_a_nightly_job_is_one_config_file_and_flags_win(tiny_bundle, batch_dir, tmp_path) -> None:
    nightly = tmp_path / "nightly.yaml"
    out = tmp_path / "nightly.jsonl"
    nightly.write_text(
        "batch:\n"
        f"  inputs: [{json.dumps(str(batch_dir))}]\n"
        f"  out: {json.dumps(str(out))}\n"
        f"  engine: {json.dumps(str(tiny_bundle))}\n"
        "  llm_backend: transformers\n"
        "  batch_size: 4\n"
        "  limit: 2\n"
        "  decoders: [pyav]\n"
        "  generation: {max_new_tokens: 12}\n",
        encoding="utf-8",
    )
    result = batch("--config", str(nightly))
    assert result.exit_code in (0, 1), result.output
    records = lines(out)
    assert len(records) == 2 and all(r.get("decoder", "pyav") == "pyav" for r in records)
    assert all(r["num_tokens"] <= 12 for r in records if r["status"] == "ok")
    other = tmp_path / "other.jsonl"
    flags = batch("--config", str(nightly), "--limit", "3", "--out", str(other), "--decoders", "decord,pyav")
    assert flags.exit_code in (0, 1), flags.output
    assert len(lines(other)) == 3 and len(lines(out)) == 2  # the flags won over the file
    assert "decord" in {r.get("decoder") for r in lines(other)}
    nightly.write_text(nightly.read_text() + "  batchsize: 9\n", encoding="utf-8")
    bad = batch("--config", str(nightly))
    assert bad.exit_code == 2 and "batch.batchsize: unknown key" in bad.output
    assert len(lines(out)) == 2


def test_second_concurrent_run_exits_75_at_once_or_waits(tiny_bundle, batch_dir, tmp_path) -> None:
    out = tmp_path / "captions.jsonl"
    with OutputLock(out):
        start = time.monotonic()
        result = batch(str(batch_dir), *base_args(tiny_bundle, out))
        assert result.exit_code == EXIT_LOCKED and time.monotonic() - start < 15
        assert "another vlmcap batch" in result.output and str(os.getpid()) in result.output
        start = time.monotonic()
        waited = batch(str(batch_dir), *base_args(tiny_bundle, out), "--wait-lock", "1.5")
        assert waited.exit_code == EXIT_LOCKED and time.monotonic() - start >= 1.5
    assert out.read_bytes() == b""  # nothing was written by the runs that did not get the lock (the holder made it)
    assert batch(str(batch_dir), *base_args(tiny_bundle, out), "--limit", "2").exit_code in (0, 1)


def test_stdin_list_and_limit(tiny_bundle, batch_dir, tmp_path) -> None:
    good = sorted(str(p) for p in batch_dir.glob("synth-*.mp4"))
    out = tmp_path / "captions.jsonl"
    result = batch("-", *base_args(tiny_bundle, out), "--limit", "3", input="\n".join(good) + "\n")
    assert result.exit_code == 0, result.output
    assert [r["video"] for r in sorted(lines(out), key=lambda r: r["video"])] == good[:3]


def test_shards_cover_every_video_exactly_once(tiny_bundle, batch_dir, tmp_path) -> None:
    everything = batch(str(batch_dir), *base_args(tiny_bundle, tmp_path / "x.jsonl"), "--dry-run")
    assert everything.exit_code == 0
    listed = [line for line in everything.stdout.splitlines() if line]
    assert len(listed) == GOOD + len(BROKEN_TYPES)
    shards = []
    for i in range(3):
        dry = batch(str(batch_dir), *base_args(tiny_bundle, tmp_path / "x.jsonl"), "--dry-run", "--shard", f"{i}/3")
        shards.append([line for line in dry.stdout.splitlines() if line])
    assert sorted(v for shard in shards for v in shard) == sorted(listed)
    assert all(shards)  # 14 paths over 3 shards: none empty
    assert not (tmp_path / "x.jsonl").exists()  # a dry run writes nothing

    out = tmp_path / "sharded.jsonl"
    for i in range(3):
        batch(str(batch_dir), *base_args(tiny_bundle, out), "--shard", f"{i}/3")
    assert sorted(r["video"] for r in lines(out)) == sorted(listed)


def test_hung_and_crashing_decodes_cost_only_their_video(tiny_bundle, small_synth, tmp_path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    videos = sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))
    for i, src in enumerate(videos[:5]):
        shutil.copy(src, root / f"good-{i}.mp4")
    shutil.copy(videos[5], root / "hang.mp4")
    shutil.copy(videos[6], root / "crash.mp4")
    out = tmp_path / "captions.jsonl"
    args = [*base_args(tiny_bundle, out), "--decoders", "fault_decoders:TrapDecoder", "--decode-timeout", "3"]
    proc = batch_subprocess(str(root), *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-2000:]
    by_name = {Path(r["video"]).name: r for r in lines(out)}
    assert by_name["hang.mp4"]["error"]["type"] == "DecodeTimeout"
    assert by_name["crash.mp4"]["error"]["type"] == "DecoderCrashed"
    assert all(by_name[f"good-{i}.mp4"]["status"] == "ok" for i in range(5))


def test_retry_errors_recaptions_and_keeps_one_line_per_video(tiny_bundle, small_synth, tmp_path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    src = sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))
    shutil.copy(src[0], root / "hang-once.mp4")
    (root / "b.mp4").write_bytes(b"not yet uploaded")
    out = tmp_path / "captions.jsonl"
    # First night: the decoder hangs on hang-once.mp4 (DecodeTimeout); b.mp4 is no video yet.
    trap = ["--decoders", "fault_decoders:TrapDecoder", "--decode-timeout", "2"]
    assert batch(str(root), *base_args(tiny_bundle, out), *trap).exit_code == 1
    assert {Path(r["video"]).name: r["error"]["type"] for r in lines(out)} == {
        "hang-once.mp4": "DecodeTimeout",
        "b.mp4": "NotAVideo",
    }
    plain = batch(str(root), *base_args(tiny_bundle, out))  # same files: errors are kept, not retried
    assert plain.exit_code == 0 and "2 failed before (--retry-errors)" in plain.output
    assert batch(str(root), *base_args(tiny_bundle, out), "--retry-errors").exit_code == 1  # b.mp4 still bad
    records = lines(out)
    assert len(records) == 2  # compacted: one line per video, the latest
    assert {Path(r["video"]).name: r["status"] for r in records} == {"hang-once.mp4": "ok", "b.mp4": "error"}
    shutil.copy(src[1], root / "b.mp4")  # the upload finished: a new file identity, captioned next run
    assert batch(str(root), *base_args(tiny_bundle, out)).exit_code == 0
    records = lines(out)
    assert len(records) == 2 and {r["status"] for r in records} == {"ok"}


def test_overwrite_starts_over(tiny_bundle, small_synth, tmp_path) -> None:
    root = Path(small_synth["train"]).parent / "videos"
    out = tmp_path / "captions.jsonl"
    assert batch(str(root / "00000.mp4"), *base_args(tiny_bundle, out)).exit_code == 0
    first = lines(out)
    assert batch(str(root / "00000.mp4"), *base_args(tiny_bundle, out), "--overwrite").exit_code == 0
    second = lines(out)
    assert len(second) == 1 and second[0]["finished_at"] > first[0]["finished_at"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "{tmp}/no-bundle"], "no engine bundle there"),
        (["--out", "{tmp}"], "is a directory"),
        (["--shard", "3/3"], "'--shard': '3/3': need 0 <= I < N"),
        (["--batch-size", "0"], "--batch-size"),
        (["--decoders", "ffmpeg"], "unknown decoder 'ffmpeg'"),
        (["--decoders", " , "], "'--decoders': give at least one name"),
        (["--prompt", "<video> <video>"], "2 <video> placeholders"),
    ],
)
def test_bad_usage_fails_before_any_work(tiny_bundle, batch_dir, tmp_path, args, message) -> None:
    out = tmp_path / "c.jsonl"
    full = ["--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "transformers"]
    full += [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = batch(str(batch_dir), *full)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_unwritable_output_exits_2(tiny_bundle, batch_dir, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = batch(str(batch_dir), *base_args(tiny_bundle, blocker / "sub" / "c.jsonl"))
    assert result.exit_code == 2 and "cannot create" in result.output, result.output


def test_tampered_bundle_is_refused(tiny_bundle, batch_dir, tmp_path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    with open(bundle / "vision.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    result = batch(str(batch_dir), *base_args(bundle, tmp_path / "c.jsonl"))
    assert result.exit_code == 2 and "vision.onnx: sha256 does not match" in result.output


def test_undecodable_names_and_vanished_files_keep_one_line_each(tiny_bundle, small_synth, tmp_path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    src = sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))
    latin1 = os.fsdecode(b"caf\xe9.mp4")  # a Latin-1 name: not valid UTF-8, a surrogate escape in Python
    shutil.copy(src[0], root / latin1)
    gone = str(tmp_path / "gone.mp4")
    out = tmp_path / "captions.jsonl"
    assert batch(str(root), gone, *base_args(tiny_bundle, out)).exit_code == 1
    first = lines(out)
    assert {r["video"]: r["status"] for r in first} == {str(root / latin1): "ok", gone: "error"}
    again = batch(str(root), gone, *base_args(tiny_bundle, out))  # the vanished file is tried again...
    assert again.exit_code == 1 and "skipped 1 already done" in again.output
    records = lines(out)  # ... and its new error line replaces the old one
    assert len(records) == 2
    assert [r for r in records if r["status"] == "ok"] == [r for r in first if r["status"] == "ok"]
    assert [r for r in records if r["status"] == "error"] != [r for r in first if r["status"] == "error"]
