"""Streaming readers of metadata tables: CSV (any delimiter, quoted fields or not, header or not), TSV, JSON Lines
and Parquet. One row at a time (Parquet: one record batch), whatever the table's size; a row that cannot be
used is yielded as its reason, for the caller to count.

Values: CSV/TSV give text. JSON Lines and Parquet give JSON-able Python values (str, int, float, bool, None, list,
dict); NaN and infinities become None. Parquet values with no JSON type become text: dates, times and timestamps
in ISO 8601, decimals and durations as `str()` gives them, binary as UTF-8 text (or lowercase hex when it is not
UTF-8); map columns become lists of [key, value] pairs.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from sharded_dataset_operator.core.compactjson import compact_sorted

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PARQUET_BATCH_ROWS = 8192

# the reasons a row is not used (counted by the caller)
SHORT_ROW = "short-row"  # CSV/TSV: fewer fields than the join column and the selected columns need
NO_JOIN_VALUE = "no-join-value"  # the join value is empty, null or missing
BAD_JOIN_VALUE = "bad-join-value"  # JSON Lines/Parquet: the join value is neither text nor an integer
BAD_ROW = "bad-row"  # CSV/TSV: the csv module rejects the row (e.g. a NUL byte, a field over its size limit), or a
# field it uses is not UTF-8
BAD_JSON = "bad-json"  # JSON Lines: the line is not UTF-8, not JSON, or not an object

_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as the surrogateescape handler gives them


class TableError(Exception):
    """The whole table is unusable (a missing column, a file that is not what its format says)."""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """Where a table is, how to parse it, and which of its columns are wanted."""

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
    """One data row: the join column's value as text, and the selected columns' values."""

    join: str
    values: dict[str, Any]


def format_of(path: str, given: str | None) -> str:
    """`given` if set, else the format the extension names (TableError when it names none)."""
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
    return compact_sorted(value)


def json_member(values: dict[str, Any]) -> str:
    """Chosen columns as the text of one JSON member."""
    return compact_sorted(values)


def read_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    """Each data row as a Row, or a row that cannot be used as its reason. TableError (before any row) when the
    table lacks the join column or a selected column, or cannot be parsed as its format at all."""
    if spec.format in ("csv", "tsv"):
        return _csv_rows(spec, stream)
    if spec.format == "jsonl":
        return _jsonl_rows(spec, stream)
    if spec.format == "parquet":
        return _parquet_rows(spec, stream)
    raise TableError(f"table {spec.path}: unknown format {spec.format!r} (one of {', '.join(FORMATS)})")


def _check_columns(spec: TableSpec, names: list[str]) -> None:
    for column in (spec.join, *spec.select):
        if column not in names:
            raise TableError(f"table {spec.path}: no column {column!r}; columns are: {', '.join(names)}")


def _join_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _csv_reader(spec: TableSpec, text: io.TextIOWrapper) -> Iterator[list[str]]:
    delimiter = "\t" if spec.format == "tsv" else spec.delimiter
    try:
        if spec.quoting:
            return csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True, quoting=csv.QUOTE_MINIMAL)
        return csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_NONE, escapechar=None)
    except (TypeError, ValueError) as e:
        raise TableError(f"table {spec.path}: delimiter {delimiter!r}: {e}") from e


def _csv_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    # surrogateescape: bytes that are not UTF-8 reach the row (as lone surrogates) instead of failing a whole
    # chunk of the stream, so the row they are in is the only one lost
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_table(spec, _csv_reader(spec, text))
    finally:
        with contextlib.suppress(ValueError):
            text.detach()  # the caller's stream is the caller's to close


def _csv_table(spec: TableSpec, reader: Iterator[list[str]]) -> Iterator[Row | str]:
    if spec.header:
        try:
            names = next(reader, [])
        except csv.Error as e:
            raise TableError(f"table {spec.path}: its header cannot be read: {e}") from e
        if any(_UNDECODED.search(name) for name in names):
            raise TableError(f"table {spec.path}: its header is not UTF-8 text")
    elif spec.columns:
        names = list(spec.columns)
    else:
        raise TableError(f"table {spec.path}: without a header, the column names must be given")
    _check_columns(spec, names)
    position = {name: i for i, name in reversed(list(enumerate(names)))}  # the first column of a name wins
    join_at = position[spec.join]
    wanted = [(c, position[c]) for c in spec.select]
    needed = max([join_at, *(i for _, i in wanted)]) + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield BAD_ROW  # the reader starts again at the next line
            continue
        if not fields:
            continue  # a blank line
        if len(fields) < needed:
            yield SHORT_ROW
            continue
        join = fields[join_at]
        if not join:
            yield NO_JOIN_VALUE
            continue
        values = {c: fields[i] for c, i in wanted}
        if _UNDECODED.search(join) or any(_UNDECODED.search(v) for v in values.values()):
            yield BAD_ROW
            continue
        yield Row(join, values)


def _no_constant(_: str) -> None:
    return None  # NaN, Infinity and -Infinity (not JSON, though Python writes them) read as null


def _jsonl_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    encoding = "utf-8-sig"  # the first line may start with a byte order mark
    for raw in stream:
        try:
            line = raw.decode(encoding).strip()
            encoding = "utf-8"
            if not line:
                continue
            obj = decoder.decode(line)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            encoding = "utf-8"
            yield BAD_JSON
            continue
        yield _typed_row(spec, obj) if isinstance(obj, dict) else BAD_JSON


def _typed_row(spec: TableSpec, obj: dict[str, Any]) -> Row | str:
    value = obj.get(spec.join)
    if value is None or value == "":
        return NO_JOIN_VALUE
    join = _join_text(value)
    if join is None:
        return BAD_JOIN_VALUE
    return Row(join, {c: obj.get(c) for c in spec.select})


def _plain(value: Any) -> Any:
    """A value from pyarrow's `to_pylist` as a JSON-able Python value (see the module's docstring)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, datetime.date | datetime.time):  # datetime.datetime is a date
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    return str(value)  # decimal.Decimal, datetime.timedelta, ...


def _parquet_rows(spec: TableSpec, stream: BinaryIO) -> Iterator[Row | str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
        names = list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise TableError(f"table {spec.path}: not a Parquet file: {e}") from e
    _check_columns(spec, names)
    columns = list(dict.fromkeys([spec.join, *spec.select]))
    batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            rows = batch.to_pylist()
        except (pa.ArrowException, OSError, ValueError) as e:
            raise TableError(f"table {spec.path}: cannot be read as Parquet: {e}") from e
        for obj in rows:
            yield _typed_row(spec, {k: _plain(v) for k, v in obj.items()})
