"""The dataset columns of a caption record (docs/BATCH.md, "Dataset formats"), and one record as one row.

The columns are fixed and typed here (`COLUMNS`), never inferred from the data: a file of errors
only still has `caption` typed string. A value that does not fit its column (a field a newer
vlmcap added, a hand-edited line) is not dropped: it goes to the `extra` column as JSON.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vlmcap.storage.files import json_line

SCHEMA_VERSION = "2"  # in the Parquet file's metadata (`vlmcap.schema`); raised when a column changes

_STR, _F64, _I64, _BOOL = pa.string(), pa.float64(), pa.int64(), pa.bool_()
_TIMESTAMP = pa.timestamp("us", tz="UTC")
SEGMENT = pa.struct(
    [
        ("start_s", _F64),
        ("end_s", _F64),
        ("caption", _STR),
        ("frames_s", pa.list_(_F64)),
        ("num_tokens", _I64),
        ("finish_reason", _STR),
        ("quality", pa.struct([("flags", pa.list_(_STR)), ("retried", _BOOL)])),
    ]
)


@dataclass(frozen=True)
class Column:
    name: str
    path: tuple[str, ...]  # where the value sits in a JSONL record (engines/batch/records.py, `to_record`)
    type: pa.DataType


COLUMNS = (
    Column("video", ("video",), _STR),
    Column("status", ("status",), _STR),
    Column("caption", ("caption",), _STR),
    Column("duration_s", ("duration_s",), _F64),
    Column("num_tokens", ("num_tokens",), _I64),
    Column("finish_reason", ("finish_reason",), _STR),
    Column("frames_s", ("frames_s",), pa.list_(_F64)),
    Column("segments", ("segments",), pa.list_(SEGMENT)),
    Column("decoder", ("decoder",), _STR),
    Column("quality_flags", ("quality", "flags"), pa.list_(_STR)),
    Column("quality_retried", ("quality", "retried"), _BOOL),
    Column("bundle", ("bundle",), _STR),
    Column("prompt", ("prompt",), _STR),
    Column("vlmcap_version", ("provenance", "vlmcap"), _STR),
    Column("vision_precision", ("provenance", "vision", "precision"), _STR),
    Column("vision_engine", ("provenance", "vision", "engine"), _STR),
    Column("llm_dtype", ("provenance", "llm", "dtype"), _STR),
    Column("llm_quantization", ("provenance", "llm", "quantization"), _STR),
    Column("llm_engine", ("provenance", "llm", "engine"), _STR),
    Column("max_new_tokens", ("provenance", "generation", "max_new_tokens"), _I64),
    Column("temperature", ("provenance", "generation", "temperature"), _F64),
    Column("top_p", ("provenance", "generation", "top_p"), _F64),
    Column("repetition_penalty", ("provenance", "generation", "repetition_penalty"), _F64),
    Column("seed", ("provenance", "generation", "seed"), _I64),
    Column("stop_token_ids", ("provenance", "generation", "stop_token_ids"), pa.list_(_I64)),
    Column("error_type", ("error", "type"), _STR),
    Column("error_message", ("error", "message"), _STR),
    Column("file_path", ("file", "path"), _STR),
    Column("file_size", ("file", "size"), _I64),
    Column("file_mtime_ns", ("file", "mtime_ns"), _I64),
    Column("sha256", ("sha256",), _STR),
    Column("duplicate_of", ("duplicate_of",), _STR),
    Column("decode_ms", ("timings_ms", "decode"), _F64),
    Column("vision_ms", ("timings_ms", "vision"), _F64),
    Column("llm_ms", ("timings_ms", "llm"), _F64),
    Column("finished_at", ("finished_at",), _TIMESTAMP),
)
SCHEMA = pa.schema(
    [pa.field(c.name, c.type) for c in COLUMNS] + [pa.field("extra", _STR)],
    metadata={"vlmcap.schema": SCHEMA_VERSION},
)
_CONTAINERS = {c.path[:i] for c in COLUMNS for i in range(1, len(c.path))}  # error, provenance.llm, ...


# --- one record as one row ---------------------------------------------------------------------

_NOTHING = object()  # nothing left over for `extra`


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _utf8(value: Any) -> bool:
    try:
        value.encode("utf-8")  # a file name in another encoding reads back with lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def parse_timestamp(text: str) -> datetime.datetime | None:
    """`finished_at` ("2026-11-26T20:57:51.122Z") as an aware UTC datetime, or None when it is not one."""
    try:
        value = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        # OverflowError: a time at the edge of the calendar with an offset ("0001-01-01T00:00+01:00")
        return value.astimezone(datetime.timezone.utc) if value.tzinfo is not None else None
    except (ValueError, OverflowError):  # Python 3.10 reads no "Z": replaced above
        return None


def _fit(value: Any, kind: pa.DataType) -> tuple[Any, Any]:
    """(the value as a column of `kind` holds it, what is left over for `extra` or _NOTHING)."""
    if value is None:
        return None, _NOTHING
    if kind == _STR:
        return (value, _NOTHING) if isinstance(value, str) and _utf8(value) else (None, value)
    if kind == _F64:
        if _is_number(value):
            with contextlib.suppress(OverflowError):  # an int beyond float's range
                return float(value), _NOTHING
        return None, value
    if kind == _BOOL:
        return (value, _NOTHING) if isinstance(value, bool) else (None, value)
    if kind == _I64:
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        return (value, _NOTHING) if ok else (None, value)
    if kind == _TIMESTAMP:
        parsed = parse_timestamp(value) if isinstance(value, str) else None
        return (parsed, _NOTHING) if parsed is not None else (None, value)
    if pa.types.is_struct(kind):
        if not isinstance(value, dict):
            return None, value
        held, left = {}, dict(value)
        for member in kind:
            held[member.name], rest = _fit(value.get(member.name), member.type)
            if rest is _NOTHING:
                left.pop(member.name, None)
            else:
                left[member.name] = rest
        return held, left or _NOTHING
    if pa.types.is_list(kind) and isinstance(value, list):
        item = kind.value_type
        if pa.types.is_struct(item):
            if not all(isinstance(v, dict) for v in value):
                return None, value
            fitted = [_fit(v, item) for v in value]
            rests = [{} if rest is _NOTHING else rest for _, rest in fitted]
            return [held for held, _ in fitted], rests if any(rests) else _NOTHING
        fitted = [_fit(v, item) for v in value]
        if all(rest is _NOTHING and held is not None for held, rest in fitted):
            return [held for held, _ in fitted], _NOTHING
    return None, value


def as_json(value: Any) -> str:
    return json_line(value).rstrip("\n")  # as the JSONL spells it: UTF-8, or \udcxx escapes for lone surrogates


def to_row(record: dict[str, Any]) -> dict[str, Any]:
    """A caption record as a row of `SCHEMA`: each column's value or None, and `extra`, the JSON of
    whatever no column holds (None when nothing is left)."""
    left = copy.deepcopy(record)
    row: dict[str, Any] = {}
    for column in COLUMNS:
        *parents, name = column.path
        holder: Any = left
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            row[column.name] = None
            continue
        row[column.name], rest = _fit(holder.get(name), column.type)
        if rest is _NOTHING:
            holder.pop(name, None)
        else:
            holder[name] = rest
    # Emptied containers (or null: a video with no file identity) are all in the columns; the
    # deepest first, so a container left with only emptied ones goes too.
    for path in sorted(_CONTAINERS, key=len, reverse=True):
        *parents, name = path
        holder = left
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and name in holder and holder[name] in ({}, None):
            del holder[name]
    row["extra"] = as_json(left) if left else None
    return row


def format_timestamp(value: datetime.datetime) -> str:
    """As `finished_at` is written (engines/batch/records.py, `utc_now`): milliseconds unless finer, `Z`."""
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=spec).replace("+00:00", "Z")
