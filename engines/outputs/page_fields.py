"""A record's fields as the pages show them (the captions report and the eval page), whatever JSON
type a line gives them (docs/BATCH.md, "Looking at a night").

A line is a caption record when its `video` is a string and its `status` is ok or error
(engines/batch/ledger.py, `caption_record`); every other field can hold any JSON value (a hand-edited
line, another version's). The pages show each as text instead of failing: this module is the one
place that turns a field into what a cell shows, for both pages. It also makes any text printable:
a non-UTF-8 file name is carried as surrogate escapes (vlmcap/storage/files.py, `json_line`), which no
UTF-8 file can hold, so each lone surrogate is shown as a visible escape.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

UNKNOWN_ERROR = "unknown"  # the type of an error that names none

# U+DC80-U+DCFF is how Python carries an undecodable byte 0x80-0xFF of a file name (PEP 383): shown
# as that byte, `\xff`. Any other lone surrogate (written as `\ud800` in the JSON) as `\ud800`.
_LONE_SURROGATE = re.compile("[\\ud800-\\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def visible_text(text: str) -> str:
    """`text` with each lone surrogate as a visible escape (`\\xff` for a file name's byte 0xff)."""
    return text if _is_utf8(text) else _LONE_SURROGATE.sub(_escape, text)


def visible(value: Any) -> Any:
    """A JSON value with `visible_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return visible_text(value)
    if isinstance(value, dict):
        return {visible_text(str(k)): visible(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [visible(v) for v in value]
    return value


def json_text(value: Any, separators: tuple[str, str] | None = None) -> str:
    """`value` as JSON text that UTF-8 can hold: lone surrogates in its strings as visible escapes.
    NaN and infinities (JSON's 1e400 reads as one) are written as JavaScript spells them."""
    text = json.dumps(value, ensure_ascii=False, separators=separators)
    # Most data has no lone surrogate: checking the text once is cheaper than walking the value.
    return text if _is_utf8(text) else json.dumps(visible(value), ensure_ascii=False, separators=separators)


def field_text(value: Any) -> str | None:
    """A field as a cell's text: None when null or absent (the cell shows nothing), a string as it
    is, any other value (number, bool, list, object) as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return json_text(value)


def finite_number(value: Any) -> float | None:
    """A JSON number as a float; None for any other value, and for numbers no float holds (1e400)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of 400 digits
        return None
    return number if math.isfinite(number) else None


def shown_number(value: Any) -> float | str | None:
    """A number cell (seconds): the number, or any other value as its text."""
    number = finite_number(value)
    return number if number is not None else field_text(value)


def shown_error(value: Any) -> dict[str, str]:
    """A record's `error` as the page shows it and the report counts it: `type` and `message` as text.
    An object missing either, or with an empty `type`, gets `unknown` and an empty message; any
    other value (a string, a number, a list) is the message, of type `unknown`."""
    if not isinstance(value, dict):
        return {"type": UNKNOWN_ERROR, "message": field_text(value) or ""}
    return {"type": field_text(value.get("type")) or UNKNOWN_ERROR, "message": field_text(value.get("message")) or ""}


def shown_flags(item: Any) -> list[str]:
    """The guard flags of a record or a segment (`quality.flags`), each once and as text; none when
    `quality` is no object or `flags` no list, and an item that is null or empty is no flag."""
    quality = item.get("quality") if isinstance(item, dict) else None
    flags = quality.get("flags") if isinstance(quality, dict) else None
    if not isinstance(flags, list):
        return []
    return list(dict.fromkeys(text for flag in flags if (text := field_text(flag))))


def segment_list(value: Any) -> list[dict[str, Any]] | None:
    """A record's `segments` when it holds segments: a list of objects, as `captions convert`'s
    `segments` column takes it ([] for null or absent). None for any other value."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(s, dict) for s in value):
        return value
    return None
