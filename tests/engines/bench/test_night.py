"""`vlmcap bench night` end to end on the tiny preset: a random run made and exported, realistic videos
made, the real `vlmcap batch` in a child process, each stage alone, the machine's limits; reused on a
second run (nothing made again)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vlmcap.cli import cli


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
