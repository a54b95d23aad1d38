"""Caption records as one Parquet file of `SCHEMA`, in row groups of `ROWS_PER_GROUP`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlmcap.engines.outputs import schema

ROWS_PER_GROUP = 10_000


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def write_parquet(records: Iterable[dict[str, Any]], f: IO[bytes]) -> int:
    """Rows written; no rows still make a valid file with the schema."""
    written = 0
    with pq.ParquetWriter(f, schema.SCHEMA) as writer:
        for chunk in _chunks(records, ROWS_PER_GROUP):
            writer.write_table(pa.Table.from_pylist([schema.to_row(r) for r in chunk], schema=schema.SCHEMA))
            written += len(chunk)
    return written
