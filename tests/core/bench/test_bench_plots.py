"""Bar charts of bench reports (vlmcap/bench/plots.py): every kind kept under docs/bench/ plots as it
is, several reports share their panels, and what is no bench report is refused with its name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from repo_paths import REPO

from vlmcap.bench.plots import KINDS, merged_panels, report_panels, write_plot
from vlmcap.cli import cli
from vlmcap.errors import ConfigError

SAVED = sorted((REPO / "docs" / "bench").rglob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_saved_report_has_panels_with_a_bar_per_row() -> None:
    kinds = set()
    for path in SAVED:
        report = _load(path)
        if "rows" not in report and not any(key in report for key in ("naive", "stages", "decode_tokens_per_s")):
            continue  # the GPU check's own report, not a bench command's
        panels = report_panels(report, path.name)
        assert panels and all(panel.bars for panel in panels), path
        kinds.add(next(kind for kind, (recognises, _) in KINDS.items() if recognises(report)))
        if "rows" in report:
            assert max(len(panel.bars) for panel in panels) == len(report["rows"]), path
    assert {"decode", "vision", "batch", "stages", "long"} <= kinds


def test_reports_compared_share_panels_and_keep_their_numbers(tmp_path) -> None:
    folder = REPO / "docs" / "bench" / "thumbnails"
    plain, sheets = (_load(folder / f"batch-tiny-{name}-1.json") for name in ("plain", "sheets"))
    panels = merged_panels([("plain", plain), ("sheets", sheets)])
    assert len(panels) == 1 and panels[0].reports == [0, 0, 1, 1]
    assert dict(panels[0].bars) == {
        "plain: naive": plain["naive"]["videos_per_s"],
        "plain: pipeline": plain["pipeline"]["videos_per_s"],
        "sheets: naive": sheets["naive"]["videos_per_s"],
        "sheets: pipeline": sheets["pipeline"]["videos_per_s"],
    }
    target = tmp_path / "compare.png"
    write_plot(target, [("plain", plain), ("sheets", sheets)], "plain vs sheets")
    with Image.open(target) as image:
        assert image.format == "PNG" and image.size[0] == 800
    assert [p.name for p in tmp_path.iterdir()] == ["compare.png"]


def test_what_is_no_bench_report_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match=r"x\.json: not a vlmcap bench report"):
        report_panels({"captioned": 3}, "x.json")
    with pytest.raises(ConfigError, match=r"y\.json: a bench report without its field 'videos_per_s'"):
        report_panels({"rows": [{"decoder": "pyav", "workers": 1}]}, "y.json")


def test_bench_plot_command_and_its_bad_input(tmp_path) -> None:
    runner = CliRunner()
    saved = REPO / "docs" / "bench" / "long-videos-tiny.json"
    done = runner.invoke(cli, ["bench", "plot", str(saved), "--out", str(tmp_path / "long.png")])
    assert done.exit_code == 0 and "2 panels, 8 bars" in done.output, done.output
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    failed = runner.invoke(cli, ["bench", "plot", str(broken), "--out", str(tmp_path / "b.png")])
    assert failed.exit_code == 2 and "broken.json: cannot read it as JSON" in failed.output
    (tmp_path / "file").write_text("")
    refused = runner.invoke(cli, ["bench", "decode", "nowhere.mp4", "--plot", str(tmp_path / "file" / "p.png")])
    assert refused.exit_code == 2 and "--plot" in refused.output and "no videos found" not in refused.output
