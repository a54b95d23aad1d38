"""Loading a config: a YAML file, a built-in preset, `section.key=value` overrides and flags, merged
and validated in full before any work starts (the schema itself: vlmcap/config/schema.py). An unknown key,
a wrong type or an out-of-range value fails with a message that names the file and the dotted
field; every YAML text is read by `vlmcap.config.yaml_reader`, which bounds what a hostile file can cost."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vlmcap.config.schema import VlmcapConfig
from vlmcap.config.yaml_reader import MAX_DEPTH, load_yaml, read_yaml_file
from vlmcap.errors import ConfigError


def _format_validation_error(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        got = f" (got {e['input']!r})" if e["type"] != "extra_forbidden" and "input" in e else ""
        problems.append(f"{field}: {msg}{got}")
    return f"{source}: invalid config: " + "; ".join(problems)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.projector.kind=resampler` -> (["model", "projector", "kind"], "resampler"); values are YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{_override_name(text)}: expected KEY=VALUE, e.g. model.projector.kind=resampler")
    keys = key.strip().split(".")
    if len(keys) > MAX_DEPTH:  # a.a.a...=1 builds nested sections as deep as a nested YAML value would
        raise ConfigError(f"{_override_name(text)}: key nested deeper than {MAX_DEPTH} levels")
    return keys, load_yaml(raw, _override_name(text)) if raw.strip() else None


def _override_name(text: str) -> str:
    """How errors name an override: its text, cut short (one can be as long as a command line)."""
    return f"override {text if len(text) <= 80 else text[:77] + '...'!r}"


def _apply_override(data: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{_override_name(text)}: {part} is not a section")
        node = child
    node[path[-1]] = value


CONFIG_PRESETS = ("tiny", "reference", "reference-random")


def config_preset(name: str) -> dict[str, Any]:
    """The YAML mapping of a built-in config preset (vlmcap/presets/config-NAME.yaml)."""
    if name not in CONFIG_PRESETS:
        raise ConfigError(f"unknown config preset {name!r}; choose one of: {', '.join(CONFIG_PRESETS)}")
    text = resources.files("vlmcap.presets").joinpath(f"config-{name}.yaml").read_text(encoding="utf-8")
    return load_yaml(text, f"config preset {name!r}") or {}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    flags: Mapping[str, Any] | None = None,
) -> VlmcapConfig:
    """Start from defaults (or a config preset), merge a YAML file, apply overrides, validate everything.

    `overrides` are `a.b=value` texts (values parsed as YAML); `flags` are dotted keys with values
    already typed (command-line flags), applied last, so they win over everything else.
    """
    data: dict[str, Any] = config_preset(preset) if preset else {}
    source = f"config preset {preset!r}" if preset else "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        loaded = read_yaml_file(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        data = _deep_merge(data, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, keys, value, text)
    for key, value in (flags or {}).items():
        _apply_override(data, key.split("."), value, key)
    try:
        return VlmcapConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_config(config: VlmcapConfig) -> str:
    """YAML text that `load_config` reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True, sort_keys=False)
