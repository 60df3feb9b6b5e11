"""The streaming metadata-table readers (core/tables.py) and the COCO reader (core/coco.py)."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharded_dataset_operator.core.coco import (
    CocoError,
    annotation_image_id,
    coco_elements,
    coco_member,
    image_of,
)
from sharded_dataset_operator.core.tables import (
    Row,
    TableError,
    TableSpec,
    format_of,
    json_member,
    read_rows,
    value_text,
)


def rows(spec: TableSpec, data: bytes) -> list[Row | str]:
    return list(read_rows(spec, io.BytesIO(data)))


def test_csv_quoted_fields_keep_delimiters_quotes_and_newlines_exactly() -> None:
    caption = 'A dog, "Rex", on\na sofa\r\nand more'
    data = ('\ufefffile_name,text,score\n0001.jpg,"A dog, ""Rex"", on\na sofa\r\nand more",0.5\n\n0002.jpg,,1\n'
            "0003.jpg\n,orphan,2\n").encode()  # fmt: skip
    got = rows(TableSpec("m.csv", "csv", "file_name", ("text", "score")), data)
    assert got == [
        Row("0001.jpg", {"text": caption, "score": "0.5"}),
        Row("0002.jpg", {"text": "", "score": "1"}),
        "short-row",
        "no-join-value",
    ]


def test_ljspeech_lines_without_quoting_keep_quotes_as_text() -> None:
    data = b'LJ001-0002|in being comparatively modern.|in "being" comparatively modern.\nLJ001-0003\n'
    spec = TableSpec("metadata.csv", "csv", "id", ("normalized",), delimiter="|", quoting=False, header=False,
                     columns=("id", "text", "normalized"))  # fmt: skip
    assert rows(spec, data) == [Row("LJ001-0002", {"normalized": 'in "being" comparatively modern.'}), "short-row"]
    with pytest.raises(TableError, match="column names"):
        rows(TableSpec("m.csv", "csv", "id", (), header=False), data)


def test_other_delimiters_and_tsv() -> None:
    assert rows(TableSpec("m.csv", "csv", "k", ("v",), delimiter=";"), b"k;v\na;1,5\n") == [Row("a", {"v": "1,5"})]
    assert rows(TableSpec("m.tsv", "tsv", "k", ("v",)), b"k\tv\na\tx y\n") == [Row("a", {"v": "x y"})]


def test_a_missing_column_refuses_the_table_naming_it() -> None:
    with pytest.raises(TableError, match=r"table m.csv: no column 'caption'; columns are: file_name, text"):
        rows(TableSpec("m.csv", "csv", "file_name", ("caption",)), b"file_name,text\na.jpg,x\n")


def test_json_lines_typed_values_and_bad_lines() -> None:
    data = b"\n".join(
        [
            b'{"file_name": "a.jpg", "text": "hi", "tags": ["x", "y"], "score": 0.5}',
            b"not json",
            b"[1, 2]",
            b'{"text": "no join"}',
            b'{"file_name": 7, "text": "int join"}',
            b'{"file_name": 1.5}',
            b"",
            b'{"file_name": "b.jpg"}',
        ]
    )
    got = rows(TableSpec("m.jsonl", "jsonl", "file_name", ("text", "tags")), data)
    assert got == [
        Row("a.jpg", {"text": "hi", "tags": ["x", "y"]}),
        "bad-json",
        "bad-json",
        "no-join-value",
        Row("7", {"text": "int join", "tags": None}),
        "bad-join-value",
        Row("b.jpg", {"text": None, "tags": None}),
    ]


def test_parquet_in_batches(tmp_path: Path) -> None:
    n = 20_000
    table = pa.table(
        {
            "file_name": [f"{i:06d}.jpg" for i in range(n)],
            "text": [f"caption {i}" for i in range(n)],
            "score": [i / 2 for i in range(n)],
            "tags": [["a", str(i)] for i in range(n)],
        }
    )
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=3000)
    with open(path, "rb") as f:
        got = list(read_rows(TableSpec("m.parquet", "parquet", "file_name", ("score", "tags")), f))
    assert len(got) == n and got[7] == Row("000007.jpg", {"score": 3.5, "tags": ["a", "7"]})
    with open(path, "rb") as f, pytest.raises(TableError, match="no column 'width'"):
        list(read_rows(TableSpec("m.parquet", "parquet", "file_name", ("width",)), f))
    with pytest.raises(TableError, match="not a Parquet file"):
        list(read_rows(TableSpec("m.parquet", "parquet", "file_name", ()), io.BytesIO(b"nope")))


def test_formats_values_and_json_members() -> None:
    assert [format_of(p, None) for p in ("a.csv", "b.TSV", "c.jsonl", "d.ndjson", "e.parquet")] == [
        "csv", "tsv", "jsonl", "jsonl", "parquet",
    ]  # fmt: skip
    assert format_of("x.txt", "csv") == "csv"
    with pytest.raises(TableError):
        format_of("x.xlsx", None)
    assert [value_text(v) for v in ("a", None, True, 3, 0.5, ["é"], {"b": 1, "a": 2})] == [
        "a", "", "true", "3", "0.5", '["é"]', '{"a":2,"b":1}',
    ]  # fmt: skip
    assert json_member({"tags": ["x"], "score": 0.5}) == '{"score":0.5,"tags":["x"]}'


class LazyStream(io.RawIOBase):
    """A binary stream whose content is made as it is read (so holding it would show in tracemalloc)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self.parts, self.pending = parts, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while len(self.pending) < len(buffer):
            part = next(self.parts, None)
            if part is None:
                break
            self.pending += part
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def test_a_large_csv_is_read_in_constant_memory() -> None:
    def parts() -> Iterator[bytes]:
        yield b"file_name,text\n"
        for i in range(60_000):
            yield f'{i:08d}.jpg,"caption number {i}, with a comma and some more words to fill it"\n'.encode()

    tracemalloc.start()
    count = sum(
        1
        for r in read_rows(TableSpec("m.csv", "csv", "file_name", ("text",)), io.BufferedReader(LazyStream(parts())))
        if isinstance(r, Row)
    )  # noqa: E501
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 60_000 and peak < 1 * 2**20  # the table is ~5 MB


COCO = {
    "info": {"description": 'a "test" ] } ,', "nested": [1, {"a": [2, 3]}]},
    "licenses": [{"id": 1, "name": "CC"}],
    "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 3, "note": 'é]}",'} for i in range(40)],
    "annotations": [
        {"id": 900 - i, "image_id": i % 13, "bbox": [1.5, 2.0, 3.25, 4.0], "segmentation": [[1.0, 2.0, 3.0]]}
        for i in range(90)
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "tail": 12345,
}


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_coco_elements_come_in_file_order_whatever_the_chunks(chunk: int) -> None:
    data = json.dumps(COCO, ensure_ascii=False).encode()
    got = list(coco_elements(io.BytesIO(data), chunk))
    expected = [(s, e) for s in ("images", "annotations", "categories") for e in COCO[s]]  # type: ignore[attr-defined]
    assert got == expected


@pytest.mark.parametrize(
    "data",
    [b"[1, 2]", b'{"images": [{"id": 1}', b'{"images": [1,}', b'{"a": 1} x', b"", b'{"images": [1] "x": 2}'],
)
def test_what_is_not_a_coco_file_is_refused(data: bytes) -> None:
    with pytest.raises(CocoError):
        list(coco_elements(io.BytesIO(data), 4))


def test_a_large_coco_file_is_streamed() -> None:
    def parts() -> Iterator[bytes]:
        yield b'{"info": {"year": 2017}, "images": ['
        for i in range(20_000):
            yield (b", " if i else b"") + json.dumps({"id": i, "file_name": f"{i:012d}.jpg", "h": 480}).encode()
        yield b'], "annotations": ['
        for i in range(40_000):
            ann = {"id": i, "image_id": i // 2, "bbox": [1.0, 2.0, 3.0, 4.0], "segmentation": [[float(i)] * 8]}
            yield (b", " if i else b"") + json.dumps(ann).encode()
        yield b'], "categories": [{"id": 1}]}'

    tracemalloc.start()
    counts = {"images": 0, "annotations": 0, "categories": 0}
    for section, _ in coco_elements(io.BufferedReader(LazyStream(parts())), chunk_bytes=1 << 16):
        counts[section] += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts == {"images": 20_000, "annotations": 40_000, "categories": 1}
    assert peak < 1 * 2**20  # the file is ~8 MB


def test_coco_images_annotations_and_members() -> None:
    assert image_of({"id": 3, "file_name": "a.jpg"}).id == "3"  # type: ignore[union-attr]
    assert [image_of(x) for x in (1, {"file_name": "a.jpg"}, {"id": 3}, {"id": True, "file_name": "a"})] == [
        "bad-image"
    ] * 4
    assert [annotation_image_id(x) for x in ({"image_id": 5}, {"image_id": "x"}, {}, [])] == ["5", "x", None, None]
    member = coco_member({"id": 3, "file_name": "a.jpg"}, [{"id": 10, "b": "é"}, {"id": 2}, {"id": "z"}])
    assert member == '{"annotations":[{"id":2},{"b":"é","id":10},{"id":"z"}],"image":{"file_name":"a.jpg","id":3}}'
