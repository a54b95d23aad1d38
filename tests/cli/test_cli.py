"""The `vlmcap` command: version, help, info, presets, config; user mistakes are one line + exit 2."""

from __future__ import annotations

import importlib.metadata
import json

from click.testing import CliRunner

from vlmcap import __version__
from vlmcap.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help() -> None:
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output
    result = run("--help")
    assert result.exit_code == 0
    for command in ("info", "presets", "config", "summary"):
        assert command in result.output


def test_info_reports_this_machine_truthfully() -> None:
    import onnxruntime
    import torch

    result = run("info", "--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["libraries"]["torch"] == importlib.metadata.version("torch")
    assert report["libraries"]["transformers"] == importlib.metadata.version("transformers")
    assert report["libraries"]["decord"] == importlib.metadata.version("decord")
    assert report["cuda_available"] is torch.cuda.is_available()
    assert report["onnxruntime_providers"] == onnxruntime.get_available_providers()
    expected_vision = (
        "onnxruntime (CUDAExecutionProvider)"
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        else "onnxruntime (CPUExecutionProvider)"
    )
    assert report["engines"]["vision"] == expected_vision
    assert report["engines"]["decoder"].startswith("decord")
    text = run("info").output
    assert f"torch         {torch.__version__}" in text
    assert "engines that would be picked" in text


def test_presets_list_and_build(vlmcap_home) -> None:
    listing = run("presets", "list").output
    assert "preset:tiny-qwen3" in listing and "preset:qwen3-8b-random" in listing
    result = run("presets", "build", "tiny-clip")
    assert result.exit_code == 0
    assert result.stdout.strip().startswith(str(vlmcap_home))


def test_config_show_validates_and_prints_yaml() -> None:
    result = run("config", "show", "--preset", "tiny", "model.projector.kind=resampler")
    assert result.exit_code == 0
    assert "kind: resampler" in result.output


def test_user_mistakes_are_one_line_and_exit_2(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: -1\n")
    result = CliRunner().invoke(cli, ["config", "show", "--config", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlmcap: error: ") and "train.batch_size" in lines[0]
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["presets", "build", "giant"])
    assert result.exit_code == 2 and "unknown preset 'preset:giant'" in result.output


def test_summary_of_the_tiny_preset() -> None:
    result = run("summary", "--preset", "tiny", "model.projector.kind=pixel-shuffle")
    assert result.exit_code == 0
    assert "pixel-shuffle: 16 tokens/frame x 8 frames = 128 tokens/video" in result.output


def test_probe_prints_one_json_line_per_video_and_exits_1_on_failures(clips, broken_inputs) -> None:
    result = CliRunner().invoke(cli, ["probe", str(clips["h264_mp4"]), str(broken_inputs["text_file"])])
    assert result.exit_code == 1
    records = {r["video"]: r for r in map(json.loads, result.stdout.strip().splitlines())}
    ok = records[str(clips["h264_mp4"])]
    assert ok["status"] == "ok" and ok["decoder"] == "decord" and len(ok["frames_s"]) == 8
    bad = records[str(broken_inputs["text_file"])]
    assert bad["status"] == "error" and bad["error"]["type"] == "NotAVideo"
    result = CliRunner().invoke(cli, ["probe", str(clips["vp9_webm"]), "--frames", "4"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)["frames_s"]) == 4


def test_synth_writes_three_manifests(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--num-videos", "20", "--seed", "1"])
    assert result.exit_code == 0, result.output
    for split, count in (("train", 16), ("val", 2), ("val_heldout_pairs", 2)):
        assert f"{split}" in result.output
        assert len((tmp_path / "s" / f"{split}.jsonl").read_text().splitlines()) == count


def test_a_bug_exits_70_with_one_line_and_a_traceback_only_with_v(tmp_path, monkeypatch) -> None:
    """What a cron wrapper sees when vlmcap itself fails: its own code, never 1 ("some videos failed")."""
    import vlmcap.engines.batch.run_batch

    def bug(*args, **kwargs):
        raise KeyError("a bug")  # stands in for any defect below the CLI

    monkeypatch.setattr(vlmcap.engines.batch.run_batch, "run_batch", bug)
    args = ["batch", str(tmp_path), "--out", str(tmp_path / "c.jsonl")]
    quiet = CliRunner().invoke(cli, args)
    assert quiet.exit_code == 70
    assert quiet.output.strip().splitlines() == [
        "vlmcap: internal error: KeyError: 'a bug' (run with -v for the traceback)"
    ]
    verbose = CliRunner().invoke(cli, ["-v", *args])
    assert verbose.exit_code == 70 and "Traceback" in verbose.output and "raise KeyError" in verbose.output
