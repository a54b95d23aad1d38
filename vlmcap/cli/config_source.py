"""Where a command's config comes from: --config FILE or --preset NAME, `section.key=value` settings
(after the command, or among its INPUTS), and the flags given (vlmcap/cli/options.py), joined into one
`ConfigSource` the command loads, so a flag always wins over the file and an absent flag leaves it alone."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from vlmcap.cli.options import ConfigOption
from vlmcap.config.loading import load_config
from vlmcap.config.schema import VlmcapConfig
from vlmcap.errors import ConfigError

_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


# `section.key=value` (README, "Configuration"): a dotted key, then `=`. Paths hold a `/` or no dot
# before their first `=` (a Hive-style `dt=2026-12-06/` folder), so they never read as one.
_SETTING = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)+=")
_SECTIONS = frozenset(name for name, f in VlmcapConfig.model_fields.items() if isinstance(f.default_factory, type))


def split_settings(inputs: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """INPUTS of a command that takes videos -> (the `section.key=value` settings among them, the inputs).

    An input written like a setting is one: applied when its first part is a config section, refused
    otherwise, with the way to name a file that is really called so (`./name`)."""
    settings = tuple(text for text in inputs if _SETTING.match(text))
    for text in settings:
        if os.path.lexists(text):  # a file dropped where a shell glob picks it up must not set anything
            raise ConfigError(
                f"INPUTS: {text!r} reads as a KEY=VALUE setting, but a file is named so; write ./{text} for "
                "the file, or rename it"
            )
        section = text.split(".", 1)[0]
        if section not in _SECTIONS:
            raise ConfigError(
                f"INPUTS: {text!r} reads as a KEY=VALUE setting, but {section!r} is no config section "
                f"({', '.join(sorted(_SECTIONS))}); write ./{text} for a file of that name"
            )
    return settings, tuple(text for text in inputs if not _SETTING.match(text))


@dataclass
class ConfigSource:
    """Where a command's config comes from: a file or a preset, `a.b=c` overrides, and the flags given."""

    path: Path | None = None
    preset: str | None = None
    overrides: tuple[str, ...] = ()
    flags: dict[str, Any] = field(default_factory=dict)
    from_inputs: bool = False  # the overrides were written among the command's INPUTS

    def load(self, path: Path | None = None) -> VlmcapConfig:
        """The validated config; `path` stands in when no --config was given."""
        try:
            return load_config(self.path or path, self.overrides, preset=self.preset, flags=self.flags)
        except ConfigError as e:
            if not (self.from_inputs and self.overrides):
                raise
            raise ConfigError(
                f"{e} (read from INPUTS as settings: {' '.join(self.overrides)}; write ./NAME for a file so named)"
            ) from None

    def section_flags(self, section: str) -> dict[str, Any]:
        """The flags given for one section, keyed by field name."""
        prefix = section + "."
        return {k.removeprefix(prefix): v for k, v in self.flags.items() if k.startswith(prefix)}


def config_options(
    file: bool = True, overrides: bool | str = True, default_preset: str | None = None
) -> Callable[[Callable], Callable]:
    """--config FILE and --preset NAME (with `file`), OVERRIDES (`a.b=c`, with `overrides`), and every
    ConfigOption of the command, handed to the command as `config: ConfigSource`.

    `overrides="inputs"`: the command's INPUTS argument holds the overrides too (`split_settings`), so
    `vlmcap batch ./videos --out c.jsonl batch.generation.max_new_tokens=48` applies the setting."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            given = {}
            for param in ctx.command.params:
                if isinstance(param, ConfigOption):
                    value = kwargs.pop(param.name)
                    if ctx.get_parameter_source(param.name) in _GIVEN:
                        given[param.key] = list(value) if isinstance(value, tuple) else value
            source = ConfigSource(
                kwargs.pop("config_path", None), kwargs.pop("preset", None), kwargs.pop("overrides", ()), given
            )
            if overrides == "inputs":
                source.overrides, kwargs["inputs"] = split_settings(kwargs["inputs"])
                source.from_inputs = True
                required = any(p.name == "inputs" and p.required for p in ctx.command.params)
                if required and not kwargs["inputs"]:  # settings alone: nothing to work on
                    raise click.UsageError("no INPUTS: only settings were given (a file named like one: ./NAME)")
            return command(*args, config=source, **kwargs)

        if overrides is True:
            wrapper = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(wrapper)
        if file:
            wrapper = click.option(
                "--preset",
                default=default_preset,
                show_default=default_preset is not None,
                help="Start from a built-in config preset (tiny, reference, reference-random).",
            )(wrapper)
            wrapper = click.option(
                "--config",
                "config_path",
                type=click.Path(dir_okay=False, path_type=Path),
                help="YAML config file; flags on the command line win over it.",
            )(wrapper)
        return wrapper

    return decorate
