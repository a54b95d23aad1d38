"""`vlmcap bench stages` (engines/bench/stages.py): each stage measured, FLOPs counted."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vlmcap.cli import cli


def test_bench_stages_reports_each_stage() -> None:
    result = CliRunner().invoke(cli, ["bench", "stages", "--preset", "tiny", "--repeat", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["stages"]) == {"vision", "llm_prefill", "llm_decode"}
    assert report["tokens_per_video"] == 128 and report["stages"]["llm_prefill"]["tokens"] == 128 + 40
    assert all(row["rate"] > 0 for row in report["stages"].values())
    assert report["stages"]["vision"]["tflops_per_s"] > 0 and "fraction_of_peak_flops" not in report["stages"]["vision"]
