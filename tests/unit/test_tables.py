"""Metadata tables: CSV/TSV (quoting or not, header or not), JSON Lines and Parquet read one row at a time."""

from __future__ import annotations

import datetime
import decimal
import gc
import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharded_dataset_operator.core.tables import (
    FORMATS,
    Row,
    TableError,
    TableSpec,
    format_of,
    json_member,
    read_rows,
    value_text,
)

from .streams import LazyStream


def rows(data: bytes, fmt: str = "csv", join: str = "file_name", select: tuple[str, ...] = (), **kw: Any) -> list[Any]:
    spec = TableSpec(path="meta/table", format=fmt, join=join, select=select, **kw)
    return list(read_rows(spec, io.BytesIO(data)))


# format_of


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a/metadata.csv", "csv"),
        ("A.CSV", "csv"),
        ("x.tsv", "tsv"),
        ("x.tab", "tsv"),
        ("x.jsonl", "jsonl"),
        ("x.ndjson", "jsonl"),
        ("x.parquet", "parquet"),
        ("x.pq", "parquet"),
    ],
)
def test_format_from_extension(path: str, fmt: str) -> None:
    assert format_of(path, None) == fmt


def test_format_given_wins_and_unknown_extension_is_an_error() -> None:
    assert format_of("metadata.txt", "csv") == "csv"
    assert format_of("annotations.json", "coco") == "coco"  # passed through for the caller to check
    with pytest.raises(TableError) as e:
        format_of("meta/labels.txt", None)
    assert "meta/labels.txt" in str(e.value)
    assert all(f in str(e.value) for f in FORMATS)


# CSV


def test_csv_header_and_quoted_field_come_back_exactly() -> None:
    data = b'file_name,text,label\r\na.jpg,"one, two\nthree ""quoted"", four",cat\r\nb.jpg,plain,dog\r\n'
    assert rows(data, select=("text", "label")) == [
        Row("a.jpg", {"text": 'one, two\nthree "quoted", four', "label": "cat"}),
        Row("b.jpg", {"text": "plain", "label": "dog"}),
    ]


@pytest.mark.parametrize("delimiter", ["|", ";", ":"])
def test_csv_any_delimiter(delimiter: str) -> None:
    d = delimiter.encode()
    data = b"id" + d + b"text\nk1" + d + b'"x' + d + b'y, z"\nk2' + d + b"w,v\n"
    assert rows(data, join="id", select=("text",), delimiter=delimiter) == [
        Row("k1", {"text": f"x{delimiter}y, z"}),
        Row("k2", {"text": "w,v"}),
    ]


def test_csv_without_quoting_keeps_quotes_literal() -> None:
    data = (
        b"LJ001-0001|Printing, in the only sense|Printing, in the only sense\n"
        b'LJ001-0002|in being comparatively modern.|in "being" comparatively modern.\n'
        b'LJ001-0003|"the earliest book|"the earliest book\n'  # an unbalanced quote swallows nothing
        b"LJ001-0004|last|last\n"
    )
    got = rows(data, join="id", select=("normalized",), delimiter="|", quoting=False, header=False,
               columns=("id", "text", "normalized"))  # fmt: skip
    assert got == [
        Row("LJ001-0001", {"normalized": "Printing, in the only sense"}),
        Row("LJ001-0002", {"normalized": 'in "being" comparatively modern.'}),
        Row("LJ001-0003", {"normalized": '"the earliest book'}),
        Row("LJ001-0004", {"normalized": "last"}),
    ]


def test_csv_without_header_needs_columns() -> None:
    data = b"a.jpg,cat\n"
    assert rows(data, select=("label",), header=False, columns=("file_name", "label")) == [
        Row("a.jpg", {"label": "cat"})
    ]
    with pytest.raises(TableError, match="column names"):
        rows(data, header=False)


def test_csv_missing_column_is_a_table_error_before_any_row() -> None:
    spec = TableSpec(path="meta/metadata.csv", format="csv", join="file_name", select=("text", "caption"))
    stream = io.BytesIO(b"file_name,text,label\na.jpg,x,y\n")
    with pytest.raises(TableError) as e:
        next(read_rows(spec, stream))
    assert str(e.value) == "table meta/metadata.csv: no column 'caption'; columns are: file_name, text, label"
    with pytest.raises(TableError, match="no column 'name'"):
        rows(b"a.jpg,x\n", join="name", header=False, columns=("file_name", "text"))
    with pytest.raises(TableError, match="no column 'file_name'"):
        rows(b"")  # no header at all


def test_csv_short_rows_empty_join_blank_lines_and_extra_fields() -> None:
    data = b"file_name,label,text\n\na.jpg,cat\nb.jpg,dog,x,extra,fields\n,cow,y\n\r\nc.jpg,,\n"
    assert rows(data, select=("text",)) == [
        "short-row",
        Row("b.jpg", {"text": "x"}),
        "no-join-value",
        Row("c.jpg", {"text": ""}),
    ]
    # only the columns used count: a row reaching the join column and the selected ones is not short
    assert rows(b"file_name,label,text\na.jpg,cat\n", select=("label",)) == [Row("a.jpg", {"label": "cat"})]


def test_csv_bom_is_dropped_and_select_may_be_empty() -> None:
    assert rows(b"\xef\xbb\xbffile_name,x\na.jpg,1\n") == [Row("a.jpg", {})]


def test_csv_duplicate_column_names_first_wins() -> None:
    assert rows(b"file_name,v,v\na,1,2\n", select=("v",)) == [Row("a", {"v": "1"})]


def test_csv_bad_rows_are_counted_and_reading_goes_on() -> None:
    huge = b"x" * (1 << 18)  # over the csv module's field size limit
    data = b"file_name,text\na,1\nb," + huge + b"\nc,3\n"
    assert rows(data, select=("text",)) == [Row("a", {"text": "1"}), "bad-row", Row("c", {"text": "3"})]


@pytest.mark.timeout(60)  # a strict decoder fails again and again on a character cut at the end
def test_csv_bytes_that_are_not_utf8_lose_only_their_row() -> None:
    data = b"file_name,text\na,caf\xc3\xa9\nb,caf\xe9\nc,ok\n\xff,z\nd,\xe2\x82"
    assert rows(data, select=("text",)) == [Row("a", {"text": "café"}), "bad-row", Row("c", {"text": "ok"}), "bad-row",
                                            "bad-row"]  # fmt: skip
    with pytest.raises(TableError, match="header"):
        rows(b"file_name,t\xe9xt\na,1\n")


def test_csv_bad_delimiter_is_a_table_error() -> None:
    with pytest.raises(TableError, match="delimiter"):
        rows(b"file_name\na\n", delimiter="||")


def test_csv_leaves_the_callers_stream_open() -> None:
    stream = io.BytesIO(b"file_name\na\n")
    spec = TableSpec(path="t.csv", format="csv", join="file_name", select=())
    assert list(read_rows(spec, stream)) == [Row("a", {})]
    gc.collect()
    assert not stream.closed


def test_tsv_always_splits_on_tabs() -> None:
    data = b'file_name\ttext\tlabel\na.jpg\t"x\ty, ""z"""\tcat,dog\n'
    assert rows(data, fmt="tsv", select=("text", "label"), delimiter=",") == [
        Row("a.jpg", {"text": 'x\ty, "z"', "label": "cat,dog"})
    ]
    assert rows(b'a\t"q" r\n', fmt="tsv", select=("t",), quoting=False, header=False, columns=("file_name", "t")) == [
        Row("a", {"t": '"q" r'})
    ]


def test_csv_streams_a_large_table_in_bounded_memory() -> None:
    count = 200_000

    def pieces() -> Iterator[bytes]:
        yield b"file_name,text,label,pad\n"
        for start in range(0, count, 1000):
            yield b"".join(
                b'img/%07d.jpg,"caption %d, with ""quotes""\nand a newline",%d,%s\n' % (i, i, i % 10, b"p" * 40)
                for i in range(start, start + 1000)
            )

    source = LazyStream(pieces())
    spec = TableSpec(path="big.csv", format="csv", join="file_name", select=("text", "label"))
    tracemalloc.start()
    try:
        n = 0
        for row in read_rows(spec, io.BufferedReader(source)):
            assert isinstance(row, Row)
            if n in (0, 123_456, count - 1):
                assert row == Row(f"img/{n:07d}.jpg", {"text": f'caption {n}, with "quotes"\nand a newline',
                                                       "label": str(n % 10)})  # fmt: skip
            n += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == count
    assert source.produced > 20_000_000
    assert peak < 2 << 20, f"peak {peak} bytes"


# JSON Lines


def test_jsonl_typed_values_and_reasons() -> None:
    lines = [
        b'\xef\xbb\xbf{"file_name": "a.jpg", "text": "caf\xc3\xa9", "n": 3, "f": 0.5, "ok": true, "tags": ["x"]}',
        b"",
        b'{"file_name": 42, "n": null, "box": {"w": 1}, "f": NaN}',
        b"not json",
        b'["a.jpg"]',
        b'{"text": "no join"}',
        b'{"file_name": null}',
        b'{"file_name": ""}',
        b'{"file_name": 1.5}',
        b'{"file_name": true}',
        b'{"file_name": ["a"]}',
        b'{"file_name": "\xff"}',
        b'{"file_name": "b.jpg"}\r',
        b'   {"file_name": "c.jpg", "text": "last, no newline"}   ',
    ]
    got = rows(b"\n".join(lines), fmt="jsonl", select=("text", "n", "f", "ok", "tags", "box"))
    assert got == [
        Row("a.jpg", {"text": "café", "n": 3, "f": 0.5, "ok": True, "tags": ["x"], "box": None}),
        Row("42", {"text": None, "n": None, "f": None, "ok": None, "tags": None, "box": {"w": 1}}),
        "bad-json",
        "bad-json",
        "no-join-value",
        "no-join-value",
        "no-join-value",
        "bad-join-value",
        "bad-join-value",
        "bad-join-value",
        "bad-json",
        Row("b.jpg", dict.fromkeys(("text", "n", "f", "ok", "tags", "box"))),
        Row("c.jpg", {"text": "last, no newline", "n": None, "f": None, "ok": None, "tags": None, "box": None}),
    ]
    assert isinstance(got[0], Row) and type(got[0].values["n"]) is int
    assert rows(b'{"file_name": "a", "x": 1}\n', fmt="jsonl") == [Row("a", {})]


# Parquet


def write_parquet(path: Path, table: pa.Table, **kw: Any) -> None:
    pq.write_table(table, path, **kw)


def read_parquet(path: Path, join: str = "file_name", select: tuple[str, ...] = ()) -> list[Row | str]:
    spec = TableSpec(path=path.name, format="parquet", join=join, select=select)
    with path.open("rb") as f:
        return list(read_rows(spec, f))


def test_parquet_typed_values(tmp_path: Path) -> None:
    table = pa.table(
        {
            "file_name": ["a.jpg", "b.jpg", None, "d.jpg"],
            "n": pa.array([1, None, 3, 4], pa.int64()),
            "f": [0.25, float("nan"), 1.0, -2.5],
            "tags": [["x", "y"], [], None, ["z"]],
            "unused": ["u", "u", "u", "u"],
        }
    )
    path = tmp_path / "meta.parquet"
    write_parquet(path, table)
    assert read_parquet(path, select=("n", "f", "tags", "file_name")) == [
        Row("a.jpg", {"n": 1, "f": 0.25, "tags": ["x", "y"], "file_name": "a.jpg"}),
        Row("b.jpg", {"n": None, "f": None, "tags": [], "file_name": "b.jpg"}),
        "no-join-value",
        Row("d.jpg", {"n": 4, "f": -2.5, "tags": ["z"], "file_name": "d.jpg"}),
    ]


def test_parquet_int_join_and_values_without_a_json_type(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([7, 8], pa.int32()),
            "when": pa.array([datetime.datetime(2024, 5, 1, 12, 30), None], pa.timestamp("us")),
            "day": pa.array([datetime.date(2024, 5, 1), None], pa.date32()),
            "price": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
            "raw": pa.array([b"text", b"\xff\x00"], pa.binary()),
            "point": pa.array([{"x": 1, "y": [1.5]}, None]),
            "attrs": pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int64())),
            "flag": [True, False],
        }
    )
    path = tmp_path / "typed.pq"
    write_parquet(path, table)
    select = ("when", "day", "price", "raw", "point", "attrs", "flag")
    got = read_parquet(path, join="id", select=select)
    assert got == [
        Row("7", {"when": "2024-05-01T12:30:00", "day": "2024-05-01", "price": "1.50", "raw": "text",
                  "point": {"x": 1, "y": [1.5]}, "attrs": [["k", 1]], "flag": True}),
        Row("8", {"when": None, "day": None, "price": None, "raw": "ff00", "point": None, "attrs": None,
                  "flag": False}),
    ]  # fmt: skip
    for row in got:
        assert isinstance(row, Row)
        json.dumps(row.values)


def test_parquet_bad_join_values(tmp_path: Path) -> None:
    path = tmp_path / "floats.parquet"
    write_parquet(path, pa.table({"k": [1.5, 2.0], "b": [True, False]}))
    assert read_parquet(path, join="k") == ["bad-join-value", "bad-join-value"]
    assert read_parquet(path, join="b") == ["bad-join-value", "bad-join-value"]


def test_parquet_missing_column_and_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "meta.parquet"
    write_parquet(path, pa.table({"file_name": ["a"], "text": ["x"]}))
    with pytest.raises(TableError) as e:
        read_parquet(path, select=("text", "caption"))
    assert str(e.value) == "table meta.parquet: no column 'caption'; columns are: file_name, text"
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(TableError, match=r"bad\.parquet"):
        read_parquet(bad)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TableError, match=r"cut\.parquet"):
        read_parquet(cut)


def test_parquet_large_file_yields_every_row(tmp_path: Path) -> None:
    count = 100_000
    path = tmp_path / "big.parquet"
    table = pa.table(
        {
            "file_name": [f"img/{i:06d}.jpg" for i in range(count)],
            "label": [i % 7 for i in range(count)],
            "score": [i / 4 for i in range(count)],
        }
    )
    write_parquet(path, table, row_group_size=30_000)
    spec = TableSpec(path="big.parquet", format="parquet", join="file_name", select=("label", "score"))
    with path.open("rb") as f:
        n = 0
        for row in read_rows(spec, f):
            assert isinstance(row, Row)
            assert row.join == f"img/{n:06d}.jpg"
            if n in (0, 8191, 8192, 29_999, 30_000, count - 1):
                assert row.values == {"label": n % 7, "score": n / 4}
            n += 1
    assert n == count


# member text


def test_value_text_and_json_member() -> None:
    assert value_text('x, "y"') == 'x, "y"'
    assert value_text(None) == ""
    assert value_text(True) == "true" and value_text(False) == "false"
    assert value_text(3) == "3" and value_text(0.5) == "0.5" and value_text(1e20) == "1e+20"
    assert value_text(["é", 1]) == '["é",1]'
    assert value_text({"b": 1, "a": [None]}) == '{"a":[null],"b":1}'
    assert json_member({"text": "café", "n": 1, "a": {"z": 1, "y": 2}}) == '{"a":{"y":2,"z":1},"n":1,"text":"café"}'
