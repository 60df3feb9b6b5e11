"""Streaming readers of metadata tables: CSV (any delimiter, quoted fields or not, header or not), TSV, JSON Lines
and Parquet. One row at a time (Parquet: one record batch), whatever the table's size; a row that cannot be
used is yielded as its reason, for the caller to count."""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_EXTENSIONS.update({".parquet": "parquet", ".pq": "parquet"})
PARQUET_BATCH_ROWS = 8192

SHORT_ROW = "short-row"
NO_JOIN_VALUE = "no-join-value"
BAD_JOIN_VALUE = "bad-join-value"
BAD_ROW = "bad-row"
BAD_JSON = "bad-json"


class TableError(Exception):
    """The whole table is unusable (a missing column, a file that is not what its format says)."""


@dataclass(frozen=True, slots=True)
class TableSpec:
    path: str
    format: str
    join: str
    select: tuple[str, ...]
    delimiter: str = ","
    quoting: bool = True
    header: bool = True
    columns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Row:
    join: str
    values: dict[str, Any]


def format_of(path: str, given: str | None) -> str:
    """`given` if set, else the format the extension names."""
    if given:
        return given
    fmt = _EXTENSIONS.get(posixpath.splitext(path)[1].lower())
    if fmt is None:
        raise TableError(f"table {path}: cannot tell its format from the name; set one of {', '.join(FORMATS)}")
    return fmt


def value_text(value: Any) -> str:
    """The text a column value becomes as a text member."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def json_member(values: dict[str, Any]) -> str:
    """Chosen columns as one JSON member."""
    return json.dumps(values, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _missing(spec: TableSpec, names: list[str] | tuple[str, ...]) -> None:
    for column in (spec.join, *spec.select):
        if column not in names:
            raise TableError(f"table {spec.path}: no column {column!r}; columns are: {', '.join(names)}")


def _join_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _csv_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    delimiter = "\t" if spec.format == "tsv" else spec.delimiter
    if spec.quoting:
        reader = csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, quotechar='"')
    else:
        reader = csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_NONE, quotechar=None)
    if spec.header:
        try:
            names = next(reader)
        except StopIteration:
            names = []
        except (csv.Error, UnicodeDecodeError) as e:
            raise TableError(f"table {spec.path}: its header cannot be read: {e}") from e
    else:
        if not spec.columns:
            raise TableError(f"table {spec.path}: without a header, the column names must be given")
        names = list(spec.columns)
    _missing(spec, names)
    position = {name: i for i, name in reversed(list(enumerate(names)))}  # the first column of a name wins
    join_at = position[spec.join]
    wanted = [(c, position[c]) for c in spec.select]
    needed = max([join_at, *(i for _, i in wanted)]) + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError):
            yield BAD_ROW
            continue
        if not fields:
            continue
        if len(fields) < needed:
            yield SHORT_ROW
            continue
        if not fields[join_at]:
            yield NO_JOIN_VALUE
            continue
        yield Row(fields[join_at], {c: fields[i] for c, i in wanted})


def _jsonl_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    for raw in stream:
        try:
            line = raw.decode("utf-8").strip()
            if not line:
                continue
            obj = json.loads(line)
        except (UnicodeDecodeError, ValueError):
            yield BAD_JSON
            continue
        if not isinstance(obj, dict):
            yield BAD_JSON
            continue
        yield _typed_row(obj, spec)


def _typed_row(obj: dict[str, Any], spec: TableSpec) -> Row | str:
    value = obj.get(spec.join)
    if value is None or value == "":
        return NO_JOIN_VALUE
    join = _join_text(value)
    if join is None:
        return BAD_JOIN_VALUE
    return Row(join, {c: obj.get(c) for c in spec.select})


def _plain(value: Any) -> Any:
    """A Parquet value as JSON-able Python: dates, times and decimals as text, bytes as UTF-8 text (or hex)."""
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta | decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _parquet_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as e:
        raise TableError(f"table {spec.path}: not a Parquet file: {e}") from e
    _missing(spec, list(table.schema_arrow.names))
    columns = list(dict.fromkeys([spec.join, *spec.select]))
    try:
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for obj in batch.to_pylist():
                yield _typed_row({k: _plain(v) for k, v in obj.items()}, spec)
    except pa.ArrowException as e:
        raise TableError(f"table {spec.path}: cannot be read: {e}") from e


def read_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    """Each data row as a Row, or a row that cannot be used as its reason."""
    if spec.format in ("csv", "tsv"):
        return _csv_rows(spec, stream)
    if spec.format == "jsonl":
        return _jsonl_rows(spec, stream)
    if spec.format == "parquet":
        return _parquet_rows(spec, stream)
    raise TableError(f"table {spec.path}: unknown format {spec.format!r} (one of {', '.join(FORMATS)})")
