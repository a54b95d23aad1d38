"""`vlmcap config show` and `vlmcap summary`: the validated config, and the model it builds."""

from __future__ import annotations

import click

from vlmcap.cli.config_source import ConfigSource, config_options


@click.group()
def config() -> None:
    """Inspect and validate configuration files."""


@config.command("show")
@config_options()
def config_show(config: ConfigSource) -> None:
    """Print the fully validated config (defaults filled in) as YAML.

    Example: vlmcap config show --preset tiny model.projector.kind=resampler train.batch_size=8
    """
    from vlmcap.config.loading import dump_config

    click.echo(dump_config(config.load()), nl=False)


@click.command()
@config_options()
def summary(config: ConfigSource) -> None:
    """Build the model of a config and print its shapes, token counts and trainable parameters.

    Example: vlmcap summary --preset tiny model.projector.kind=pixel-shuffle
    """
    from vlmcap.model.summary import model_summary

    for line in model_summary(config.load()):
        click.echo(line)
