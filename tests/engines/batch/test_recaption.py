"""Model-aware incremental runs: `--recaption stale` and what `--dry-run` counts (docs/BATCH.md,
"Resume, crash safety, retries")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from forced_models import forced_token_bundle

from vlmcap.cli import cli

OTHER_PROMPT = "이 영상을 한 문장으로 설명하세요."


def batch(*args: str):
    return CliRunner().invoke(cli, ["batch", *args], catch_exceptions=False)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def counts_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("new "))


def test_stale_lines_are_kept_by_default_and_recaptioned_on_request(
    tiny_bundle, small_synth, broken_inputs, tmp_path
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    synthetic = sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))
    for src in synthetic[:3]:
        shutil.copy(src, videos)
    shutil.copy(broken_inputs["zero_bytes"], videos / "zero.mp4")
    out, stats = tmp_path / "captions.jsonl", tmp_path / "stats.json"
    args = [str(videos), "--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "transformers"]
    args += ["--max-new-tokens", "16", "--stats", str(stats)]
    first = batch(*args)
    assert first.exit_code == 1, first.output  # zero.mp4 is an error line
    default_prompt = lines(out)[0]["prompt"]
    shutil.copy(synthetic[3], videos)  # a new video since

    same = batch(*args, "--dry-run")
    assert same.exit_code == 0 and same.stdout.splitlines() == [str(videos / synthetic[3].name)]
    assert counts_line(same) == "new 1, stale 0, failed 1, done 3"

    # Another prompt: the three captions are stale. By default they stay (and only the new one is listed).
    other = [*args, "--prompt", OTHER_PROMPT]
    dry = batch(*other, "--dry-run")
    assert counts_line(dry) == "new 1, stale 3, failed 1, done 0"
    assert "would caption 1; would skip 3 stale (--recaption stale captions them again), 1 failed" in dry.stderr
    dry = batch(*other, "--dry-run", "--recaption", "stale", "--retry-errors")
    assert len(dry.stdout.splitlines()) == 5 and "would caption 5" in dry.stderr

    # Another bundle: stale too (a copy whose LLM differs has another id).
    changed = forced_token_bundle(tiny_bundle, tmp_path / "changed-bundle", token_id=70)
    dry = batch(*args[:3], "--engine", str(changed), "--dry-run")
    assert counts_line(dry) == "new 1, stale 3, failed 1, done 0"

    kept = batch(*other)
    assert kept.exit_code == 0, kept.output
    assert "skipped 3 already done (3 by another bundle or prompt)" in kept.stderr
    assert {r["prompt"] for r in lines(out) if r["status"] == "ok"} == {default_prompt, OTHER_PROMPT}

    again = batch(*other, "--recaption", "stale")
    assert again.exit_code == 0, again.output
    report = json.loads(stats.read_text())
    assert (report["captioned"], report["recaptioned_stale"], report["skipped_failed"]) == (3, 3, 1)
    assert "3 stale re-captioned" in again.stderr
    records = lines(out)
    assert len(records) == 5 and len({r["video"] for r in records}) == 5  # compacted: one line per video
    assert {r["prompt"] for r in records if r["status"] == "ok"} == {OTHER_PROMPT}
    assert counts_line(batch(*other, "--dry-run", "--recaption", "stale")) == "new 0, stale 0, failed 1, done 4"
