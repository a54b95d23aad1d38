"""The Python API (engines/api.py): `Captioner` gives the records `vlmcap batch` writes, in input order,
with its engines opened once and closed by `with`; `caption_videos` is the CLI's run, resume and lock
included; settings are checked before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import vlmcap.engines
from vlmcap.cli import cli
from vlmcap.engines import Captioner, caption_videos, selected_videos
from vlmcap.engines.batch.lock import EXIT_LOCKED, LockHeld, OutputLock
from vlmcap.errors import ConfigError

# What differs between two runs of the same videos: when and how fast.
VOLATILE = {"timings_ms", "finished_at"}


def _stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def test_the_engines_export_the_api_without_importing_torch() -> None:
    assert vlmcap.engines.Captioner is Captioner and vlmcap.engines.caption_videos is caption_videos
    code = "import sys, vlmcap, vlmcap.engines; print('torch' in sys.modules, vlmcap.__version__)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", vlmcap.__version__]
    with pytest.raises(AttributeError, match="no attribute 'Captionr'"):
        vlmcap.engines.Captionr  # noqa: B018
    with pytest.raises(AttributeError, match=r"vlmcap.Captioner is vlmcap.engines.Captioner"):
        vlmcap.Captioner  # noqa: B018  -- the core names no stage: it says where the API is


def test_captioner_returns_the_cli_records_in_input_order(tiny_bundle, six_videos, broken_inputs, tmp_path) -> None:
    videos = sorted(str(p) for p in six_videos.glob("*.mp4"))[:3]
    broken = str(broken_inputs["truncated_mp4"])
    asked = [videos[2], broken, videos[0], videos[1], videos[0]]  # a repeated video is captioned once

    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(
        cli,
        ["batch", *videos, broken, "--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "transformers"],
    )
    assert result.exit_code == 1, result.output  # the broken file is an error line
    written = {r["video"]: _stable(r) for r in map(json.loads, out.read_text().splitlines())}

    first = Path(videos[0])
    (tmp_path / "link.mp4").symlink_to(first)
    spellings = [
        videos[0],
        f"{first.parent}//{first.name}",
        f"{first.parent}/./{first.name}",
        str(tmp_path / "link.mp4"),
    ]
    with Captioner.from_bundle(tiny_bundle, llm_backend="transformers") as captioner:
        assert captioner.engines["llm"].startswith("transformers (cpu, float32")
        records = captioner.caption(asked)
        again = captioner.caption([videos[1]])  # the same engines, a second call
        one = captioner.caption(spellings)  # one file, as the CLI finds it: one record, named as first reached
        walked = captioner.caption([six_videos])  # a folder is walked, as `vlmcap batch` walks it
        with pytest.raises(TypeError, match="not one str"):
            captioner.caption(videos[0])  # one string is no list of inputs (its characters are not videos)
        engines = captioner._engines
    assert [r["video"] for r in one] == [videos[0]] and _stable(one[0]) == written[videos[0]]
    assert [r["video"] for r in walked] == sorted(str(p) for p in six_videos.glob("*.mp4"))
    assert [_stable(r) for r in walked[:3]] == [written[v] for v in videos]
    with pytest.raises(TypeError, match="not one PosixPath"):
        caption_videos(six_videos, out=tmp_path / "c.jsonl")
    assert [r["video"] for r in records] == [videos[2], broken, videos[0], videos[1]]
    assert [_stable(r) for r in records] == [written[v] for v in (videos[2], broken, videos[0], videos[1])]
    assert records[1]["status"] == "error" and records[1]["error"]["type"] == "TruncatedVideo"
    assert _stable(again[0]) == written[videos[1]]
    assert engines is not None and captioner._engines is None  # closed on leaving `with`
    with pytest.raises(RuntimeError, match="closed"):
        captioner.caption(videos)


def test_bad_settings_fail_before_any_engine_starts(tiny_bundle, tmp_path) -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        Captioner.from_bundle(tiny_bundle, no_such_key=1)
    with pytest.raises(ConfigError, match=r"batch\.llm_backend"):
        Captioner.from_bundle(tiny_bundle, llm_backend="tensorrt")
    with pytest.raises(ConfigError, match="no output"):
        caption_videos([str(tmp_path)], engine=str(tiny_bundle))


def test_caption_videos_resumes_and_respects_the_lock_and_selected_videos_says_what_it_would_take(
    tiny_bundle, six_videos, tmp_path: Path
) -> None:
    out = tmp_path / "captions.jsonl"
    common = {"engine": str(tiny_bundle), "llm_backend": "transformers"}
    videos, counts = selected_videos([six_videos], out=out, **common)  # --dry-run: what a run would caption
    assert len(videos) == 6 == counts.new and not out.exists()
    first = caption_videos([six_videos], out=out, **common)
    assert first.exit_code == 0 and first.captioned == 6
    assert len(out.read_text().splitlines()) == 6
    videos, counts = selected_videos([six_videos], out=out, limit=2, **common)
    assert videos == [] and counts.skipped_ok == 6  # all captioned: nothing left to select
    second = caption_videos([six_videos], out=out, **common)
    assert second.captioned == 0 and second.skipped_ok == 6 and second.exit_code == 0
    # Another run holds the output: this one stops as the CLI does (exit 75).
    with OutputLock(out, wait_s=0), pytest.raises(LockHeld) as held:
        caption_videos([six_videos], out=out, **common)
    assert held.value.exit_code == EXIT_LOCKED


@pytest.mark.parametrize("way", ["file", "stdin", "-c"])
def test_the_readme_example_runs_as_written(tiny_bundle, six_videos, tmp_path: Path, way: str) -> None:
    """As people run Python: saved as a file (no main guard: the decode workers must not run it again),
    piped to `python -`, and through `python -c`."""
    from repo_paths import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = readme.split("### Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    home, work = tmp_path / "home", tmp_path / "work"
    shutil.copytree(tiny_bundle, home / "engines" / "default")  # where `scripts/demo` publishes
    (work / "videos").mkdir(parents=True)
    videos = sorted(six_videos.glob("*.mp4"))
    shutil.copy(videos[0], work / "a.mp4")
    shutil.copy(videos[1], work / "b.mp4")
    for video in videos[2:5]:
        shutil.copy(video, work / "videos" / video.name)
    (work / "example.py").write_text(example, encoding="utf-8")
    command = {"file": ["example.py"], "stdin": ["-"], "-c": ["-c", example]}[way]
    env = {**os.environ, "VLMCAP_HOME": str(home)}
    shown = subprocess.run(
        [sys.executable, *command],
        cwd=work,
        env=env,
        input=example if way == "stdin" else None,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    lines = shown.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["a.mp4", "ok"], ["b.mp4", "ok"]]
    assert lines[2] == "captioned 3, skipped 0 already done, exit code 0"
    assert lines[3] == "would caption 0, 3 done"
    written = [json.loads(line) for line in (work / "captions.jsonl").read_text().splitlines()]
    assert [r["status"] for r in written] == ["ok"] * 3


def test_vllm_from_an_unguarded_script_is_refused_before_any_work(tiny_bundle, tmp_path: Path) -> None:
    """vLLM's CPU build spawns its engine, which would run an unguarded script again from the top; `auto`
    takes transformers then (engines/runtime/engines.py), an explicit request is one clear error."""
    script = tmp_path / "night.py"
    script.write_text(
        "from vlmcap.engines import Captioner\n"
        "from vlmcap.errors import ConfigError\n"
        "try:\n"
        f"    Captioner.from_bundle({str(tiny_bundle)!r}, llm_backend='vllm')\n"
        "except ConfigError as e:\n"
        "    print(e)\n",
        encoding="utf-8",
    )
    shown = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith(f"{script}: vLLM starts its engine in a spawned process")
    assert "llm_backend='transformers'" in shown.stdout
