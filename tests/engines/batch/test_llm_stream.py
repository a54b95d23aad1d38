"""The streaming LLM stage against the per-batch one, on vLLM's CPU build, through `vlmcap bench batch`.

One engine start serves the naive loop's reference (transformers), the per-batch schedule and the
streaming schedule, so the greedy captions of all three are compared in one run.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vlmcap.cli import cli


def test_streaming_writes_the_per_batch_captions_and_reports_where_time_goes(tiny_bundle, six_videos) -> None:
    args = ["bench", "batch", str(six_videos), "--engine", str(tiny_bundle), "--llm-backend", "vllm", "--json"]
    args += ["--max-new-tokens", "12", "--batch-size", "4", "--vision-batch", "2", "--max-inflight", "3"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["vision_batch"] == 2 and report["batch_size"] == 4
    assert report["same_captions"] == "6/6"  # streamed vLLM vs the naive loop's transformers, greedy
    assert report["same_captions_stream_batch"] == "6/6"
    batch, stream = report["schedules"]["batch"], report["schedules"]["stream"]
    assert report["pipeline"] == stream  # what `vlmcap batch` runs on vLLM
    assert batch["llm_batches"]["schedule"] == "batch" and batch["llm_batches"]["items"] == 6
    assert batch["llm_batches"]["calls"] >= 2  # batches of at most 4
    assert stream["llm_batches"]["schedule"] == "stream" and stream["llm_batches"]["items"] == 6
    assert 1 <= stream["llm_batches"]["peak_inflight"] <= 3
    for row in (batch, stream):
        assert row["videos"] == 6 and row["videos_per_s"] > 0
        assert row["bound"] in ("decode", "engine") and row["recommended_workers"] >= 1
        assert set(row["waits_s"]) == {"decode_blocked_s", "vision_idle_s", "llm_idle_s"}
        assert row["caption_tokens"]["max"] <= 12


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--llm-backend", "transformers", "--llm-schedule", "stream"], "needs the vLLM engine"),
        (["--llm-backend", "transformers", "--max-inflight", "4"], "max_inflight bounds the streaming schedule"),
        (["--llm-schedule", "batch", "--max-inflight", "4"], "max_inflight bounds the streaming schedule"),
        (["--max-inflight", "0"], "--max-inflight"),
        (["--vision-batch", "0"], "--vision-batch"),
    ],
)
def test_schedule_flags_that_cannot_work_fail_before_work(tiny_bundle, six_videos, tmp_path, flags, message) -> None:
    out = tmp_path / "c.jsonl"
    args = ["batch", str(six_videos), "--out", str(out), "--engine", str(tiny_bundle)]
    result = CliRunner().invoke(cli, [*args, *flags])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_bound_report_names_the_slower_side_and_the_workers_that_would_feed_the_engines() -> None:
    from vlmcap.engines.bench.batch_schedules import bound_report
    from vlmcap.environment import usable_cpus

    waits = {"decode_blocked_s": 0.0, "vision_idle_s": 3.0, "llm_idle_s": 2.0}
    # 10 videos, 1 s of decode each on 2 workers (2 videos/s) vs engines at 0.2 s per video (5 videos/s)
    stage_s = {"decode": 10.0, "vision": 1.0, "llm": 2.0}
    decode_bound = {"captioned": 10, "failed": 0, "waits": waits, "stage_s": stage_s}
    report = bound_report(decode_bound, workers=2)
    assert report["bound"] == "decode" and report["waits_s"] == waits
    assert report["decode_capacity_videos_per_s"] == 2.0 and report["engine_capacity_videos_per_s"] == 5.0
    assert report["recommended_workers"] == min(5, usable_cpus())
    # the same decode against engines at 2 s per video: one worker is already more than they take
    engine_bound = {**decode_bound, "stage_s": {"decode": 10.0, "vision": 5.0, "llm": 20.0}}
    report = bound_report(engine_bound, workers=2)
    assert report["bound"] == "engine" and report["recommended_workers"] == 1
