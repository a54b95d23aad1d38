"""`vlmcap bench decode` (vlmcap/bench/decode.py): rows per decoder, worker count and contact sheets."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vlmcap.cli import cli


def test_bench_decode_reports_rows_per_decoder_and_worker_count(clips, tmp_path) -> None:
    args = ["bench", "decode", str(clips["h264_mp4"]), "--workers", "1", "--repeat", "2", "--json"]
    plot = tmp_path / "decode.png"
    result = CliRunner().invoke(cli, [*args, "--image-size", "64", "--thumbnails", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["machine"]["cores"] >= 1
    rows = report["rows"]
    assert [(r["decoder"], r["workers"], r["thumbnails"], r["videos"], r["failed"]) for r in rows] == [
        ("decord", 1, False, 2, 0),
        ("decord", 1, True, 2, 0),
        ("pyav", 1, False, 2, 0),
        ("pyav", 1, True, 2, 0),
    ]
    assert all(r["frames_per_s"] > 0 for r in rows)
    # 8 frames of 64x64 on a 4x2 sheet, as a JPEG: more than its headers, less than the raw pixels
    assert all(1000 < r["sheet_bytes_per_video"] < 8 * 64 * 64 * 3 for r in rows if r["thumbnails"])
    assert plot.read_bytes().startswith(b"\x89PNG")  # and the same numbers drawn (tests/core/bench/test_bench_plots.py)
