"""Config loading cannot hang or explode (vlmcap/config/yaml_reader.py): every hostile YAML is a one-line
ConfigError naming the file (and line), exit 2, found before any work and within the size limit."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmcap.cli.app import cli
from vlmcap.config.loading import load_config
from vlmcap.config.yaml_reader import MAX_CONFIG_BYTES, MAX_DEPTH, load_yaml
from vlmcap.errors import ConfigError

SHOW = [sys.executable, "-m", "vlmcap", "config", "show", "--config"]


def _one_line_error(exit_code: int, stderr: str, *parts: str) -> None:
    lines = stderr.strip().splitlines()
    assert exit_code == 2 and len(lines) == 1 and lines[0].startswith("vlmcap: error: "), stderr
    for part in parts:
        assert part in lines[0], lines[0]


def _memory_limit() -> None:
    """Runs in the child: if the loader regressed, the child fails on 1 GiB, not the machine on 7 GB."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_billion_laughs_is_refused_at_its_first_anchor(tmp_path: Path) -> None:
    lines = ["  a0: &a0 [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "laughs.yaml"  # ~600 bytes that stand for 9**10 strings
    path.write_text("x:\n" + "\n".join(lines) + "\nmodel:\n  lora:\n    target_modules: *a9\n")
    done = subprocess.run([*SHOW, str(path)], capture_output=True, text=True, timeout=60, preexec_fn=_memory_limit)
    _one_line_error(done.returncode, done.stderr, "laughs.yaml: line 2: YAML anchors and aliases")


def test_a_fifo_as_config_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # a plain open for reading waits for a writer forever
    done = subprocess.run([*SHOW, str(fifo)], capture_output=True, text=True, timeout=60)
    _one_line_error(done.returncode, done.stderr, "fifo.yaml: cannot read the config: not a regular file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: " + "1" * 5000 + "\n", "my.yaml: line 1: integer of 5000 characters; at most 128"),
        ("seed: 1" + ":30" * 100 + "\n", "my.yaml: line 1: integer of 301 characters"),  # base 60: quadratic
        ("train:\n  x: " + "[" * 100_000 + "]" * 100_000 + "\n", f"my.yaml: line 2: nested deeper than {MAX_DEPTH}"),
        (
            "model:\n  projector:\n    kind: linear\n    tokens_per_frame: 576\n    kind: resampler\n",
            "my.yaml: model.projector.kind: repeated at line 5 (first at line 3)",
        ),
        ("train:\n  batch_size: 2\nmodel: {}\ntrain:\n  batch_size: 4\n", "my.yaml: train: repeated at line 4"),
        ("seed: 1\n0x1: a\n1: b\n", "my.yaml: 1: repeated at line 3 (first at line 2)"),  # equal as dict keys
        ("base: {seed: 1}\n<<: {seed: 2}\n", "my.yaml: line 2: merge keys (<<) are not allowed"),
        ("seed: 2024-13-01\n", "my.yaml: line 1: cannot read this value (month must be in 1..12)"),
        ("# " + "x" * MAX_CONFIG_BYTES + "\n", "my.yaml: larger than 256 KiB"),
        ("model:\n  vision: [unclosed\n", "my.yaml: not valid YAML at line 3"),
        ("model: {}\n\x00\n", "my.yaml: not valid YAML: a control character '\\x00' at position 10"),
        ("model:\n  lora:\n    r: " + "9" * 128 + "\n", "model.lora.r: at most 2147483647 in size"),
        ("model:\n  lora:\n    r: true\n", "model.lora.r: a number, not true or false"),
        ("batch:\n  batch_size: 100000\n", "batch.batch_size: Input should be less than or equal to 4096"),
    ],
    ids=[
        "5000-digits",
        "base-60",
        "100000-deep",
        "repeated-key",
        "repeated-section",
        "equal-keys",
        "merge",
        "date",
        "oversized",
        "syntax",
        "control-character",
        "past-int32",
        "bool-as-int",
        "allocation-size",
    ],
)
def test_hostile_config_files_exit_2_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "my.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["config", "show", "--config", str(path)])
    _one_line_error(result.exit_code, result.stderr, message)


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the config: not a regular file \(a directory"):
        load_config(tmp_path)  # the Python API: the CLI's --config refuses a directory itself


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lora.target_modules=[&a q_proj, *a]", "line 1: YAML anchors and aliases"),
        ("seed=" + "[" * 100_000, f"line 1: nested deeper than {MAX_DEPTH} levels"),
        ("seed=" + "9" * 5000, "line 1: integer of 5000 characters"),
        ("model.lora={r: 8, r: 16}", "r: repeated at line 1 (first at line 1)"),
        ("a." * 100_000 + "b=1", f"key nested deeper than {MAX_DEPTH} levels"),
        ("seed=" + "x" * (MAX_CONFIG_BYTES + 1), "larger than 256 KiB"),
    ],
    ids=["alias", "100000-deep", "5000-digits", "repeated-key", "deep-key", "oversized"],
)
def test_hostile_override_values_are_one_short_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    text = str(err.value)
    assert text.startswith("override '") and message in text and "\n" not in text and len(text) < 300, text


def test_within_the_limits_everything_still_loads() -> None:
    deepest = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)  # the top-level mapping is the first level
    assert load_yaml(f"x: {deepest}", "test")["x"] is not None
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH}"):
        load_yaml(f"x: [{deepest}]", "test")
    assert load_yaml("a: {k: 1}\nb: {k: 2}\nc: 0x" + "f" * 126, "test") == {
        "a": {"k": 1},
        "b": {"k": 2},
        "c": 16**126 - 1,
    }
    assert (
        load_config(overrides=["model.lora.target_modules=[q_proj, q_proj]", "seed=18446744073709551615"]).seed
        == 2**64 - 1
    )
