"""Command-line flags generated from the config fields they set, and the flags several commands share.

A flag names its config key and nothing more (`flag("--batch-size", "batch.batch_size")`): its click
type, choices, bounds, path kind and help are read from that field of vlmcap/config/schema.py, as
vLLM derives its engine flags from its config classes. A bad value is a usage error naming the flag,
checked by the field's own type and validators; the whole config is checked again when it loads
(vlmcap/cli/config_source.py joins the flags given with the file, the preset and the settings).
"""

from __future__ import annotations

from collections.abc import Callable
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import click
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from vlmcap.config.schema import VlmcapConfig


def _field(key: str) -> FieldInfo:
    """The pydantic field behind a dotted config key."""
    model: type[BaseModel] = VlmcapConfig
    *sections, name = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation  # type: ignore[assignment]
    return model.model_fields[name]


def _value_type(annotation: Any) -> tuple[Any, bool]:
    """(the type one value has, whether the field is a list): Optional and Annotated taken off."""
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not NoneType)
    is_list = get_origin(annotation) is list
    if is_list:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation, is_list


def _number_type(kind: type, metadata: list[Any]) -> click.ParamType:
    """click's INT/FLOAT, or its range type with the field's ge/gt/le/lt (shown in the help)."""
    bounds: dict[str, Any] = {}
    for limit in metadata:
        for name, side, is_open in (
            ("ge", "min", False),
            ("gt", "min", True),
            ("le", "max", False),
            ("lt", "max", True),
        ):
            if hasattr(limit, name):
                bounds.update({side: getattr(limit, name), f"{side}_open": is_open})
    if not bounds:
        return click.INT if kind is int else click.FLOAT
    return (click.IntRange if kind is int else click.FloatRange)(**bounds)


def _click_type(value_type: Any, model_field: FieldInfo) -> click.ParamType | None:
    if get_origin(value_type) is Literal:
        return click.Choice([str(v) for v in get_args(value_type)])
    if value_type in (int, float):
        return _number_type(value_type, model_field.metadata)
    path = (model_field.json_schema_extra or {}).get("path")  # type: ignore[union-attr]
    return click.Path(file_okay=path != "folder", dir_okay=path != "file") if path else None


def _comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise click.BadParameter("give at least one name, comma-separated")
    return items


def _checked_by_field(model_field: FieldInfo, is_list: bool, empty: str | None) -> Callable:
    """A click callback that validates the flag's value by the field's own type and validators (a
    decoder name, a shard, a segments plan, a script name): the reason names the flag."""
    metadata = tuple(model_field.metadata)
    adapter = TypeAdapter(Annotated[(model_field.annotation, *metadata)] if metadata else model_field.annotation)

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or value == ():
            return value
        if is_list:
            value = [] if value == empty else list(value) if isinstance(value, tuple) else _comma_list(value)
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            error = e.errors()[0]
            reason = error["msg"].removeprefix("Value error, ")
            if error["loc"] and repr(error["input"]) not in reason:  # one item of a list: say which
                reason = f"{error['input']!r}: {reason}"
            raise click.BadParameter(reason) from None
        return value

    return check


class ConfigOption(click.Option):
    """A flag that sets the config key `key`; its help is the field's description, the key and the
    config's default."""

    def __init__(self, *args: Any, key: str, **kwargs: Any) -> None:
        self.key = key
        kwargs.setdefault("default", None)
        model_field = _field(key)
        default = model_field.get_default(call_default_factory=True)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        extra = f"[config: {key}" + (f"; default: {shown}" if shown not in (None, "") else "") + "]"
        kwargs["help"] = f"{model_field.description or ''} {extra}".strip()
        super().__init__(*args, **kwargs)


def flag(decl: str, key: str, empty: str | None = None, **click_kwargs: Any) -> Callable:
    """The flag `decl` that sets config key `key`, typed, bounded and described by that field; a bool
    field gives `--x/--no-x`, a list field a comma-separated value (`empty`: the word for none).
    `click_kwargs` add what the field cannot say (`multiple=True`, an optional value)."""
    model_field = _field(key)
    value_type, is_list = _value_type(model_field.annotation)
    if value_type is bool:
        return click.option(f"{decl}/--no-{decl.removeprefix('--')}", cls=ConfigOption, key=key, **click_kwargs)
    one_value = not is_list or click_kwargs.get("multiple")  # else one text holds the list: A,B,...
    kwargs = {
        "type": _click_type(value_type, model_field) if one_value else None,
        "callback": _checked_by_field(model_field, is_list, empty),
    }
    if not one_value:
        names = "|".join(get_args(value_type)) if get_origin(value_type) is Literal else "A"
        kwargs["metavar"] = f"{names},..." + (f" or {empty}" if empty else "")
    return click.option(decl, cls=ConfigOption, key=key, **{**kwargs, **click_kwargs})


def flags(*entries: tuple[str, str] | tuple[str, str, dict[str, Any]]) -> Callable[[Callable], Callable]:
    """A decorator adding one `flag` per (decl, key[, flag's keywords]), in the order given."""

    def decorate(command: Callable) -> Callable:
        for decl, key, *keywords in reversed(entries):
            command = flag(decl, key, **(keywords[0] if keywords else {}))(command)
        return command

    return decorate


def json_option(command: Callable) -> Callable:
    """--json: print the result as JSON on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(command)


# The flags several commands share, by what they set; a command's own flags are declared beside it
# (vlmcap/cli/batch.py, export.py, train.py).
SEGMENT_PLAN = (  # how videos are cut into time segments (batch, eval)
    ("--segments", "batch.segments"),
    ("--segment-min-s", "batch.segment_min_s"),
    ("--segment-max-s", "batch.segment_max_s"),
    ("--scene-threshold", "batch.scene_threshold"),
)
segment_plan_options = flags(*SEGMENT_PLAN)
engine_options = flags(  # the bundle and the engines that run it (batch, eval, bench batch)
    ("--engine", "batch.engine"),
    ("--llm-backend", "batch.llm_backend"),
    ("--vision-backend", "batch.vision_backend"),
    ("--vision-precision", "batch.vision_precision"),
    ("--providers", "batch.providers"),
    ("--device", "batch.device"),
    ("--cpu-threads", "batch.cpu_threads"),
    ("--batch-size", "batch.batch_size"),
    ("--batch-wait", "batch.batch_wait_s"),
    ("--vision-batch", "batch.vision_batch"),
    ("--llm-schedule", "batch.llm_schedule"),
    ("--max-inflight", "batch.max_inflight"),
    ("--max-new-tokens", "batch.generation.max_new_tokens"),
)
decode_options = flags(  # decode worker processes and the decoder chain
    ("--workers", "batch.workers"),
    ("--decode-timeout", "batch.decode_timeout_s"),
    ("--decoders", "batch.decoders"),
)
sampling_options = flags(  # how captions are generated beyond their length
    ("--prompt", "batch.prompt"),
    ("--allow-control-tokens", "batch.allow_control_tokens"),
    ("--temperature", "batch.generation.temperature"),
    ("--top-p", "batch.generation.top_p"),
    ("--repetition-penalty", "batch.generation.repetition_penalty"),
    ("--seed", "batch.generation.seed"),
)
