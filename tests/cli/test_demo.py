"""`vlmcap demo` (vlmcap/cli/demo.py): synth -> train -> export -> eval -> a video per scene, through each
stage's front door, leaving the default engine that `vlmcap batch` then runs on."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vlmcap.cli import cli


def test_demo_chains_to_the_default_engine(tmp_path, vlmcap_home, small_synth) -> None:
    """A short demo: afterwards `vlmcap batch VIDEOS --out FILE` needs no other flag."""
    args = ["demo", "--workdir", str(tmp_path / "demo"), "--num-videos", "100", "--steps", "8"]
    result = CliRunner().invoke(cli, [*args, "--llm-backend", "transformers"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "colour+shape+motion all right" in result.output and "generated caption" in result.output
    demo = tmp_path / "demo"
    for page in (demo / "eval" / "index.html", demo / "multiscene" / "report" / "index.html"):
        assert str(page) in result.output and page.is_file()  # the pages it points at are there
    assert list((demo / "eval" / "thumbs").rglob("*.jpg")) and list((demo / "multiscene" / "thumbs").rglob("*.jpg"))
    videos = Path(small_synth["val"]).parent / "videos"
    out = tmp_path / "captions.jsonl"
    after = CliRunner().invoke(
        cli, ["batch", str(videos / "00000.mp4"), "--out", str(out), "--llm-backend", "transformers"]
    )
    assert after.exit_code == 0, after.output
    assert json.loads(out.read_text().splitlines()[0])["status"] == "ok"
