"""Flags generated from the config fields (vlmcap/cli/options.py): each sets its key, is typed, bounded
and checked by that field, and says what it does in the field's own words."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from vlmcap.cli.app import cli
from vlmcap.cli.batch import batch as batch_command
from vlmcap.cli.config_source import ConfigSource, config_options
from vlmcap.cli.options import ConfigOption


@click.command()
@config_options(file=False, overrides=False)
def settings_of(config: ConfigSource) -> None:
    """Prints the batch settings the flags given load to."""
    click.echo(config.load().batch.model_dump_json())


settings_of.params += [p for p in batch_command.params if isinstance(p, ConfigOption)]  # `vlmcap batch`'s flags, all


def loaded(*args: str) -> dict:
    result = CliRunner().invoke(settings_of, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def refused(*args: str) -> str:
    result = CliRunner().invoke(settings_of, list(args))
    assert result.exit_code == 2, result.output
    return result.output


def test_each_flag_sets_its_config_key() -> None:
    settings = loaded(
        *("--batch-size", "16", "--batch-wait", "0.5", "--llm-backend", "transformers", "--shard", "1/4"),
        *("--decoders", "pyav, decord", "--quality-checks", "none", "--expected-script", "Hangul+Latin"),
        *("--no-quality-retry", "--progress", "--ray", "--segments", "fixed:30", "--srt", "subs"),
        *("--max-new-tokens", "48", "--top-p", "0.9", "--remote-retries", "0", "--enforce-eager"),
    )
    assert (settings["batch_size"], settings["batch_wait_s"], settings["llm_backend"]) == (16, 0.5, "transformers")
    assert (settings["shard"], settings["decoders"], settings["segments"]) == ("1/4", ["pyav", "decord"], "fixed:30")
    assert settings["quality"]["checks"] == [] and settings["quality"]["script"] == "Hangul+Latin"
    assert settings["quality"]["retry"] is False and settings["progress"] is True
    assert settings["ray"]["address"] == "auto"  # --ray alone: a running cluster or a local one
    assert settings["generation"]["max_new_tokens"] == 48 and settings["generation"]["top_p"] == 0.9
    assert settings["remote"]["retries"] == 0 and settings["vllm"]["enforce_eager"] is True
    assert settings["srt_dir"] == "subs"
    assert loaded("--ray", "10.0.0.1:6379")["ray"]["address"] == "10.0.0.1:6379"


def test_an_absent_flag_leaves_the_default() -> None:
    settings = loaded()
    assert settings["batch_size"] == 8 and settings["quality"]["retry"] is True and settings["progress"] is None


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--batch-size", "0"], "--batch-size"),  # the field's ge=1
        (["--batch-size", "4097"], "1<=x<=4096"),  # and its le=4096
        (["--top-p", "0"], "0<x<=1"),  # gt=0, le=1
        (["--llm-schedule", "sometimes"], "'sometimes' is not one of 'auto', 'stream', 'batch'"),
        (["--shard", "4/4"], "need 0 <= I < N"),  # the field's own parser, before any work
        (["--segments", "fixed:soon"], "--segments"),
        (["--expected-script", "Klingon"], "unknown Unicode script 'Klingon'"),
        (["--decoders", "decord,ffmpeg"], "unknown decoder 'ffmpeg'"),
        (["--decoders", "none"], "--decoders"),  # none is no empty list here: at least one decoder
        (["--quality-checks", "repetition,loops"], "'loops'"),
    ],
)
def test_a_bad_flag_is_a_usage_error_naming_it(args: list[str], reason: str) -> None:
    output = refused(*args)
    assert args[0] in output and reason in output


def _commands(group: click.Group, prefix: str = "vlmcap") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
    return found


def test_every_flag_of_every_command_is_described_by_its_field() -> None:
    seen = 0
    for name, command in _commands(cli):
        for param in command.params:
            if isinstance(param, ConfigOption):
                described = param.help.split("[config:")[0].strip()
                assert described, f"{name} {param.opts[0]}: the field {param.key} has no description"
                assert f"[config: {param.key}" in param.help
                seen += 1
    assert seen > 60  # batch alone has more than sixty
