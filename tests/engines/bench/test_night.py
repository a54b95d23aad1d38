"""`vlmcap bench night` end to end on the tiny preset: a random run made and exported, realistic videos
made, the real `vlmcap batch` in a child process, each stage alone, the machine's limits; reused on a
second run (nothing made again)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vlmcap.cli import cli
from vlmcap.engines.bench.night import night_phases


def test_a_night_on_the_tiny_preset(tmp_path) -> None:
    work = tmp_path / "night"
    args = ["bench", "night", "--workdir", str(work), "--preset", "tiny", "--llm", "preset:tiny-qwen3"]
    args += ["--videos", "2", "--min-s", "2", "--max-s", "3", "--tokens", "4", "--json", "--", "--llm-backend"]
    plot = tmp_path / "night.png"
    result = CliRunner().invoke(
        cli, ["bench", "night", "--plot", str(plot), *args[2:], "transformers"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG")  # a night is plotted as a night, not as `bench stages`
    report = json.loads(result.stdout)
    night = report["night"]
    assert report["videos"] == 2 and 4 <= report["video_seconds"] <= 6 and night["failed"] == 0
    assert night["videos_per_hour"] > 0 and set(night["stage_busy_s"]) >= {"decode", "vision", "llm"}
    assert min(night["start_s"], night["fill_s"], night["close_s"]) >= 0
    assert set(night["spans_s"]) == {"vision", "llm"}
    assert night["videos_per_hour"] == night["ready_to_last_videos_per_hour"] > 0  # two videos: none left out
    assert report["engines"]["llm"].startswith("transformers") and report["tokens_per_caption"] == 4
    lines = [json.loads(line) for line in (work / "night.jsonl").read_text().splitlines()]
    assert [r["num_tokens"] for r in lines] == [4, 4]  # forced to length: no stop token ends a caption
    assert set(report["alone_s_per_video"]) == {"vision", "llm", "decode"}
    assert report["bottleneck"] in report["alone_s_per_video"] and report["efficiency"] > 0
    gemm = report["limits"]["gemm_tflops"]
    assert gemm["fp32"] > 0 and report["limits"]["memory_gb_per_s"] > 0
    assert report["stages"]["vision"]["tflops"] > 0 and report["stages"]["llm"]["of_gemm_peak"] > 0
    made = {p.name: p.stat().st_mtime_ns for p in (work / "videos").iterdir()}
    bundle_id = report["bundle"]

    again = CliRunner().invoke(cli, [*args, "transformers"], catch_exceptions=False)
    assert again.exit_code == 0 and json.loads(again.stdout)["bundle"] == bundle_id
    assert {p.name: p.stat().st_mtime_ns for p in (work / "videos").iterdir()} == made


def test_the_nights_rate_is_its_captions_pace_without_the_fill_and_the_drain() -> None:
    # Engines up at 10 s, the first caption at 16 s, the last at 56 s, shut down at 60 s. Eight
    # captions: one every 4 s from the 2nd to the 6th, then two at once as the LLM drains.
    stats = {"engines_ready_s": 10.0, "first_output_s": 16.0, "last_output_s": 56.0, "wall_s": 60.0}
    stats["spans_s"] = {"vision": [10.0, 46.0], "llm": [14.0, 56.0]}
    finished = [1016.0, 1030.0, 1034.0, 1038.0, 1042.0, 1046.0, 1056.0, 1056.0]
    phases = night_phases(stats, finished)
    assert (phases["start_s"], phases["fill_s"], phases["close_s"]) == (10, 6, 4)
    assert phases["steady_videos_per_hour"] == 3 / 12 * 3600  # the 3rd to the 6th caption: one per 4 s
    assert phases["stage_videos_per_hour"] == {"vision": 800.0, "llm": round(8 / 42 * 3600, 1)}
    assert phases["ready_to_last_videos_per_hour"] == round(8 / 46 * 3600, 1)
    assert night_phases(stats, finished[:3])["steady_videos_per_hour"] is None  # too few to leave any out
