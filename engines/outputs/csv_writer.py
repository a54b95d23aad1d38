"""Caption records as one CSV file (RFC 4180) with `SCHEMA`'s columns as its header."""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterable
from typing import IO, Any

from vlmcap.engines.outputs import schema


def csv_cell(value: Any) -> str | int | float:
    """One CSV field: empty for null, JSON for lists, objects and booleans, the ledger's text for times."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON spells it, not Python's True
    if isinstance(value, (list, dict)):
        return schema.as_json(value)
    if isinstance(value, datetime.datetime):
        return schema.format_timestamp(value)
    return value


def write_csv(records: Iterable[dict[str, Any]], f: IO[str]) -> int:
    """Rows written (the header not counted)."""
    writer = csv.writer(f)  # fields holding a newline, comma or quote are quoted
    names = schema.SCHEMA.names
    writer.writerow(names)
    written = 0
    for record in records:
        row = schema.to_row(record)
        writer.writerow([csv_cell(row[name]) for name in names])
        written += 1
    return written
