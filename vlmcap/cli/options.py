"""Options shared by several commands, declared once.

Most flags set one key of the typed config (`--batch-size` is `batch.batch_size`): they are
`ConfigOption`s, and `config_options` turns the ones given on the command line into a
`ConfigSource` the command loads, so a flag always wins over the config file and an absent flag
leaves the file's value (or the default) alone. Flag values are checked by their click types, so a
bad flag is a usage error naming the flag; the config model checks everything again.

Over 400 lines on purpose: it is the one declaration of every shared flag (a flag's help, type and
config key in one place), grouped by the decorators the commands apply.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import click
from click.core import ParameterSource
from pydantic import BaseModel

from vlmcap.config.loading import load_config
from vlmcap.config.schema import DECODER_NAME, QUALITY_CHECKS, VlmcapConfig, parse_shard
from vlmcap.errors import ConfigError
from vlmcap.text_script import script_pattern
from vlmcap.video.segments import parse_segments

_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _field(key: str):
    """The pydantic field behind a dotted config key."""
    model: type[BaseModel] = VlmcapConfig
    *sections, name = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation  # type: ignore[assignment]
    return model.model_fields[name]


def choices(key: str) -> click.Choice:
    """The allowed values of a Literal config field, as a click choice (one source of truth)."""
    annotation = _field(key).annotation
    values = [v for v in get_args(annotation) if isinstance(v, str)]
    if not values:  # Optional[Literal[...]]
        values = [v for arg in get_args(annotation) for v in get_args(arg) if isinstance(v, str)]
    return click.Choice(values)


class ConfigOption(click.Option):
    """A flag that sets the config key `key`; its help (the field's description unless given) shows the
    key and the config's default."""

    def __init__(self, *args: Any, key: str, **kwargs: Any) -> None:
        self.key = key
        kwargs.setdefault("default", None)
        model_field = _field(key)
        default = model_field.get_default(call_default_factory=True)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        extra = f"[config: {key}" + (f"; default: {shown}" if shown not in (None, "") else "") + "]"
        kwargs["help"] = f"{kwargs.get('help') or model_field.description or ''} {extra}".strip()
        super().__init__(*args, **kwargs)


def config_option(*decls: str, key: str, **kwargs: Any) -> Callable:
    return click.option(*decls, cls=ConfigOption, key=key, **kwargs)


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
            flags = {}
            for param in ctx.command.params:
                if isinstance(param, ConfigOption):
                    value = kwargs.pop(param.name)
                    if ctx.get_parameter_source(param.name) in _GIVEN:
                        flags[param.key] = list(value) if isinstance(value, tuple) else value
            source = ConfigSource(
                kwargs.pop("config_path", None), kwargs.pop("preset", None), kwargs.pop("overrides", ()), flags
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


def _apply(options: list[Callable], command: Callable) -> Callable:
    for option in reversed(options):
        command = option(command)
    return command


def json_option(command: Callable) -> Callable:
    """--json: print the result as JSON on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(command)


def _comma_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise click.BadParameter("give at least one name, comma-separated")
    return items


def _decoder_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    items = _comma_list(ctx, param, value)
    for name in items or []:
        if not re.match(DECODER_NAME, name):
            raise click.BadParameter(f"unknown decoder {name!r}; use decord, pyav or module:Class")
    return items


def _checked_by(parse: Callable[[str], object]) -> Callable:
    """A click callback that runs the config's own parser on a flag's text: a bad value is a usage
    error naming the flag, with the parser's reason."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except ValueError as e:
                raise click.BadParameter(str(e)) from None
        return value

    return check


_shard = _checked_by(parse_shard)
_segments = _checked_by(parse_segments)
_script_names = _checked_by(lambda names: names in ("auto", "none") or script_pattern(names))


def _segment_plan_options() -> list[Callable]:
    positive = click.FloatRange(min=0, min_open=True)
    return [
        config_option(
            "--segments",
            key="batch.segments",
            callback=_segments,
            help="none: one caption per file; fixed:SECONDS: windows (e.g. fixed:30); scenes: detected shots.",
        ),
        config_option("--segment-min-s", key="batch.segment_min_s", type=positive),
        config_option("--segment-max-s", key="batch.segment_max_s", type=positive),
        config_option("--scene-threshold", key="batch.scene_threshold", type=positive),
    ]


def segment_plan_options(command: Callable) -> Callable:
    """How videos are cut into time segments (eval: no sidecars, it writes no captions file)."""
    return _apply(_segment_plan_options(), command)


def segment_options(command: Callable) -> Callable:
    """Captions per time segment of long videos, and the files written per video: subtitles, thumbnails (batch)."""
    return _apply(
        [
            *_segment_plan_options(),
            config_option("--srt", key="batch.srt_dir", type=click.Path(file_okay=False), help="SRT file per video."),
            config_option("--vtt", key="batch.vtt_dir", type=click.Path(file_okay=False), help="WebVTT per video."),
            config_option(
                "--thumbnails",
                key="batch.thumbnails",
                type=click.Path(file_okay=False),
                help="Contact-sheet JPEG of the frames the model saw, per video and segment.",
            ),
        ],
        command,
    )


def engine_options(command: Callable) -> Callable:
    """The bundle and the engines that run it (batch, eval, bench batch)."""
    return _apply(
        [
            config_option(
                "--engine",
                key="batch.engine",
                type=click.Path(file_okay=False),
                help="Engine bundle (default: VLMCAP_HOME/engines/default, what `vlmcap export` writes).",
            ),
            config_option("--llm-backend", key="batch.llm_backend", type=choices("batch.llm_backend")),
            config_option("--vision-backend", key="batch.vision_backend", type=choices("batch.vision_backend")),
            config_option("--vision-precision", key="batch.vision_precision", type=choices("batch.vision_precision")),
            config_option(
                "--providers",
                key="batch.providers",
                callback=_comma_list,
                help="ONNX Runtime providers, comma-separated (tensorrt,cuda,cpu); default: best installed.",
            ),
            config_option("--device", key="batch.device", help="Device for the torch engines."),
            config_option(
                "--cpu-threads", key="batch.cpu_threads", type=click.IntRange(1), help="Threads per model engine."
            ),
            config_option(
                "--batch-size",
                key="batch.batch_size",
                type=click.IntRange(1),
                help="Videos (or segments) per LLM call (batched schedule).",
            ),
            config_option("--batch-wait", key="batch.batch_wait_s", type=click.FloatRange(min=0)),
            config_option("--vision-batch", key="batch.vision_batch", type=click.IntRange(1)),
            config_option("--llm-schedule", key="batch.llm_schedule", type=choices("batch.llm_schedule")),
            config_option("--max-inflight", key="batch.max_inflight", type=click.IntRange(1)),
            config_option(
                "--max-new-tokens",
                key="batch.generation.max_new_tokens",
                type=click.IntRange(1),
                help="Caption length.",
            ),
        ],
        command,
    )


def decode_options(command: Callable) -> Callable:
    """Decode worker processes and the decoder chain."""
    return _apply(
        [
            config_option("--workers", key="batch.workers", type=click.IntRange(1), help="Decode worker processes."),
            config_option(
                "--decode-timeout",
                key="batch.decode_timeout_s",
                type=click.FloatRange(min=0, min_open=True),
                help="Seconds before a hung decode is killed.",
            ),
            config_option(
                "--decoders",
                key="batch.decoders",
                callback=_decoder_list,
                help="Decoder chain, comma-separated; the first that works wins.",
            ),
        ],
        command,
    )


def sampling_options(command: Callable) -> Callable:
    """How captions are generated beyond the length (batch only)."""
    return _apply(
        [
            config_option("--prompt", key="batch.prompt", help="Instruction for every video (default: the bundle's)."),
            config_option("--allow-control-tokens/--no-allow-control-tokens", key="batch.allow_control_tokens"),
            config_option(
                "--temperature", key="batch.generation.temperature", type=click.FloatRange(min=0), help="0 = greedy."
            ),
            config_option(
                "--top-p",
                key="batch.generation.top_p",
                type=click.FloatRange(min=0, max=1, min_open=True),
                help="Nucleus sampling.",
            ),
            config_option(
                "--repetition-penalty",
                key="batch.generation.repetition_penalty",
                type=click.FloatRange(min=0, min_open=True),
                help="transformers engine only.",
            ),
            config_option("--seed", key="batch.generation.seed", type=int, help="Sampling seed."),
        ],
        command,
    )


def _quality_checks(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """`--quality-checks repetition,empty`, or `none` for no guards."""
    if value is None or value.strip() == "none":
        return None if value is None else []
    items = _comma_list(ctx, param, value)
    for name in items or []:
        if name not in QUALITY_CHECKS:
            raise click.BadParameter(f"unknown check {name!r}; use {', '.join(QUALITY_CHECKS)} or none")
    return items


def quality_options(command: Callable) -> Callable:
    """The caption guards (docs/BATCH.md, "Caption quality")."""
    return _apply(
        [
            config_option(
                "--quality-checks",
                key="batch.quality.checks",
                callback=_quality_checks,
                help=f"Comma-separated: {','.join(QUALITY_CHECKS)} (default: all), or none.",
            ),
            config_option("--expected-script", key="batch.quality.script", callback=_script_names),
            config_option("--quality-retry/--no-quality-retry", key="batch.quality.retry"),
            config_option("--strict-quality/--no-strict-quality", key="batch.quality.strict"),
        ],
        command,
    )


def vllm_options(command: Callable) -> Callable:
    return _apply(
        [
            config_option("--tensor-parallel-size", key="batch.vllm.tensor_parallel_size", type=click.IntRange(1)),
            config_option(
                "--gpu-memory-utilization",
                key="batch.vllm.gpu_memory_utilization",
                type=click.FloatRange(0, 1, min_open=True),
                help="Memory fraction.",
            ),
            config_option("--max-model-len", key="batch.vllm.max_model_len", type=click.IntRange(1), help="Context."),
            config_option("--dtype", key="batch.vllm.dtype", type=choices("batch.vllm.dtype"), help="LLM dtype."),
            config_option("--quantization", key="batch.vllm.quantization", help="Load-time quantization, e.g. fp8."),
            config_option("--max-num-seqs", key="batch.vllm.max_num_seqs", type=click.IntRange(1), help="Sequences."),
            config_option("--enforce-eager/--no-enforce-eager", key="batch.vllm.enforce_eager", help="No CUDA graphs."),
            config_option("--kv-cache-gib", key="batch.vllm.kv_cache_gib", type=click.FloatRange(min=0, min_open=True)),
        ],
        command,
    )


def ray_options(command: Callable) -> Callable:
    return _apply(
        [
            config_option(
                "--ray",
                key="batch.ray.address",
                is_flag=False,
                flag_value="auto",
                help="Run on Ray Data: --ray (a running cluster or a local one) or --ray ADDRESS (docs/RAY.md).",
            ),
            config_option("--ray-decode-actors", key="batch.ray.decode_actors", type=click.IntRange(1)),
            config_option("--ray-vision-actors", key="batch.ray.vision_actors", type=click.IntRange(1)),
            config_option("--ray-llm-actors", key="batch.ray.llm_actors", type=click.IntRange(1)),
            config_option(
                "--ray-gpus-per-vision-actor", key="batch.ray.gpus_per_vision_actor", type=click.FloatRange(min=0)
            ),
            config_option("--ray-gpus-per-llm-actor", key="batch.ray.gpus_per_llm_actor", type=click.FloatRange(min=0)),
            config_option("--ray-num-cpus", key="batch.ray.num_cpus", type=click.IntRange(1), help="Local cluster."),
        ],
        command,
    )


def output_options(command: Callable) -> Callable:
    """What a batch run writes and which videos it takes."""
    return _apply(
        [
            config_option("--out", key="batch.out", type=click.Path(dir_okay=False), help="Captions JSONL."),
            config_option("--limit", key="batch.limit", type=click.IntRange(1), help="At most this many videos."),
            config_option("--shard", key="batch.shard", callback=_shard, help="I/N: shard I of N (job arrays)."),
            config_option(
                "--retry-errors/--no-retry-errors", key="batch.retry_errors", help="Try failed videos again."
            ),
            config_option("--recaption", key="batch.recaption", type=choices("batch.recaption")),
            config_option("--overwrite/--no-overwrite", key="batch.overwrite", help="Start the output over."),
            config_option(
                "--dedup",
                key="batch.dedup",
                type=choices("batch.dedup"),
                help="sha256: caption identical files once; the copies' lines say duplicate_of.",
            ),
            config_option(
                "--wait-lock", key="batch.wait_lock_s", type=click.FloatRange(min=0), help="Wait for another run."
            ),
            config_option("--stats", key="batch.stats", type=click.Path(dir_okay=False), help="Write run stats JSON."),
            config_option("--progress/--no-progress", key="batch.progress", help="Progress bar (default: on a TTY)."),
        ],
        command,
    )


def remote_options(command: Callable) -> Callable:
    """s3://, gs://, http(s):// inputs: the local spool and how long a server may take (batch, probe)."""
    return _apply(
        [
            config_option(
                "--spool-dir",
                key="batch.remote.spool_dir",
                type=click.Path(file_okay=False),
                help="Remote videos are downloaded here, one per decode worker, and deleted once decoded.",
            ),
            config_option("--remote-max-mb", key="batch.remote.max_object_mb", type=click.IntRange(1)),
            config_option(
                "--remote-timeout", key="batch.remote.timeout_s", type=click.FloatRange(min=0, min_open=True)
            ),
            config_option("--remote-retries", key="batch.remote.retries", type=click.IntRange(0)),
            config_option("--remote-backoff", key="batch.remote.backoff_s", type=click.FloatRange(min=0)),
            config_option("--remote-anonymous/--no-remote-anonymous", key="batch.remote.anonymous"),
        ],
        command,
    )
