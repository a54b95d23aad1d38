"""`vlmcap train`: exact resume, QLoRA, skipped videos, kill -9, DDP on gloo, and that it learns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmcap.cli import cli
from vlmcap.config.loading import load_config
from vlmcap.storage.run_dir import latest_checkpoint
from vlmcap.training.trainer import run_training

TINY_STEPS = [
    "train.batch_size=4",
    "train.max_steps=6",
    "train.save_every=3",
    "train.eval_every=100",
    "train.lr_projector=2e-3",
    "train.lr_lora=2e-3",
]


def losses(run_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def tiny(small_synth, *overrides: str):
    return load_config(preset="tiny", overrides=[f"train.data={small_synth['train']}", *TINY_STEPS, *overrides])


@pytest.mark.parametrize("cache", [False, True])
def test_stopped_and_resumed_run_logs_the_same_losses(small_synth, tmp_path, cache: bool) -> None:
    config = tiny(small_synth, "train.stage=lora", "model.lora.dropout=0.1", f"train.feature_cache={cache}")
    straight = run_training(config, tmp_path / "straight")
    assert straight.step == 6 and (straight.final_dir / "projector.safetensors").exists()
    assert (straight.final_dir / "adapter" / "adapter_model.safetensors").exists()

    first = run_training(config, tmp_path / "split", stop_after_steps=3)
    assert first.step == 3 and first.final_dir is None
    assert latest_checkpoint(tmp_path / "split").name == "checkpoint-3"
    resumed = run_training(config, tmp_path / "split", resume=True)
    assert resumed.step == 6
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")
    assert len(set(losses(tmp_path / "straight"))) > 1
    # The curves (training/plots.py) of the resumed run are the uninterrupted run's.
    csv_of = lambda run: (tmp_path / run / "plots" / "metrics.csv").read_text()  # noqa: E731
    assert csv_of("split") == csv_of("straight") and len(csv_of("straight").splitlines()) == 7
    assert (tmp_path / "split" / "plots" / "loss.png").stat().st_size > 0


def test_qlora_trains_on_a_4bit_base_and_resumes(small_synth, tmp_path) -> None:
    config = tiny(small_synth, "train.stage=lora", "model.llm.quantize=4bit", "train.max_steps=4", "train.save_every=2")
    run_training(config, tmp_path / "a")
    run_training(config, tmp_path / "b", stop_after_steps=2)
    run_training(config, tmp_path / "b", resume=True)
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 4


def test_new_run_refuses_a_directory_with_checkpoints(small_synth, tmp_path) -> None:
    from vlmcap.errors import ConfigError

    config = tiny(small_synth, "train.max_steps=1", "train.save_every=1")
    run_training(config, tmp_path / "run")
    with pytest.raises(ConfigError, match="already has checkpoints; pass --resume"):
        run_training(config, tmp_path / "run")


def test_broken_videos_are_skipped_counted_and_limited(small_synth, tmp_path, broken_inputs) -> None:
    manifest = tmp_path / "train.jsonl"
    lines = small_synth["train"].read_text().splitlines()[:11]
    base = small_synth["train"].parent
    records = [json.loads(line) for line in lines]
    for r in records:
        r["video"] = str(base / r["video"])
    records.insert(2, {"video": str(broken_inputs["random_bytes"]), "caption": "깨진 영상"})
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    config = load_config(preset="tiny", overrides=[f"train.data={manifest}", "train.batch_size=4", "train.max_steps=3"])
    result = run_training(config, tmp_path / "run")
    assert result.step == 3
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["skipped_videos"] == 1
    from vlmcap.errors import VlmcapError

    strict = load_config(
        preset="tiny",
        overrides=[f"train.data={manifest}", "train.batch_size=4", "train.max_steps=3", "train.max_decode_failures=0"],
    )
    with pytest.raises(VlmcapError, match=r"1 training videos failed to decode \(train.max_decode_failures=0\)"):
        run_training(strict, tmp_path / "strict")


def test_bad_manifest_fails_before_training_with_file_and_line(tmp_path) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"video": "a.mp4"}\n')
    result = CliRunner().invoke(
        cli, ["train", "--preset", "tiny", "--data", str(manifest), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"vlmcap: error: {manifest}:1: missing or empty field 'caption'"
    assert not (tmp_path / "r").exists()


def _train_cmd(small_synth, out: Path, *extra: str, launcher: tuple[str, ...] = ()) -> list[str]:
    """`python [-m launcher ...] -m vlmcap.cli train` on the small synthetic set with the tiny preset."""
    data = str(small_synth["train"])
    return [
        sys.executable,
        *launcher,
        "-m",
        "vlmcap.cli",
        "train",
        "--preset",
        "tiny",
        "--data",
        data,
        "--out",
        str(out),
        *TINY_STEPS,
        *extra,
    ]


def test_kill_9_during_training_leaves_only_trustworthy_checkpoints(small_synth, tmp_path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _train_cmd(small_synth, out, "train.save_every=1", "train.max_steps=40"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("checkpoint-*"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    trusted = latest_checkpoint(out)
    assert trusted is not None
    assert {p.name for p in trusted.iterdir()} >= {
        "projector.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    }
    resumed = subprocess.run(
        _train_cmd(small_synth, out, "train.save_every=1", "train.max_steps=40", "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "final" / "projector.safetensors").exists()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # nothing lost, nothing logged twice


def test_ddp_with_two_cpu_processes_on_gloo(small_synth, tmp_path) -> None:
    out = tmp_path / "ddp"
    torchrun = ("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533")
    cmd = _train_cmd(
        small_synth, out, "train.batch_size=2", "train.max_steps=3", "train.save_every=3", launcher=torchrun
    )
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((latest_checkpoint(out) / "trainer_state.json").read_text())
    assert len(state["positions"]) == 2  # each rank's place in its shard of the data
    assert [json.loads(line)["samples_per_s"] > 0 for line in (out / "metrics.jsonl").read_text().splitlines()] == [
        True
    ] * 3


def test_tiny_vlm_learns_to_caption_synthetic_videos(tmp_path_factory) -> None:
    """The whole path on real decoded videos: >= 95% colour+shape+motion accuracy on held-out videos."""
    from vlmcap.training.synth import SynthSpec, write_synthetic_dataset

    data = write_synthetic_dataset(
        tmp_path_factory.mktemp("synth-learn"), SynthSpec(num_videos=900, seed=11, heldout_fraction=0.0)
    )
    config = load_config(
        preset="tiny",
        overrides=[
            f"train.data={data['train']}",
            f"train.val=[{data['val']}]",
            "train.stage=lora",
            "train.feature_cache=true",
            "train.batch_size=16",
            "train.max_steps=600",
            "train.save_every=1000",
            "train.eval_every=1000",
            "train.lr_projector=2e-3",
            "train.lr_lora=2e-3",
        ],
    )
    result = run_training(config, tmp_path_factory.mktemp("learn-run"))
    accuracy = result.eval["val"]["attribute_accuracy"]
    assert accuracy["all"] >= 0.95, accuracy


def test_batch_larger_than_the_data_fails_before_training(small_synth, tmp_path) -> None:
    from vlmcap.errors import ConfigError

    config = tiny(small_synth, "train.batch_size=64")
    with pytest.raises(ConfigError, match=r"train.batch_size=64: larger than the 48 samples"):
        run_training(config, tmp_path / "r")


def test_tensorboard_without_the_package_is_a_config_error_before_any_step(small_synth, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not installed, whatever this machine has
    args = ["train", "--preset", "tiny", "--data", str(small_synth["train"]), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, [*args, "train.tensorboard=true", "train.max_steps=1"])
    assert result.exit_code == 2 and "pip install tensorboard" in result.output
    assert latest_checkpoint(tmp_path / "r") is None  # refused before training started
