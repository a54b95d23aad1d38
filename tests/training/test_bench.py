"""`vlmcap bench train` (training/bench.py): decoding every step against the feature cache."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vlmcap.cli import cli


def test_bench_train_measures_both_modes(small_synth) -> None:
    args = ["bench", "train", str(small_synth["train"]), "--steps", "4", "--json", "train.batch_size=4"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["mode"] for r in rows] == ["decode every step", "feature cache"]
    assert all(r["steps"] == 4 and r["samples_per_s"] > 0 for r in rows)
