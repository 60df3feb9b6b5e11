"""COCO-style annotation files: the images, annotations and categories arrays streamed element by element."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from sharded_dataset_operator.core.coco import (
    CocoError,
    CocoImage,
    annotation_image_id,
    coco_elements,
    coco_member,
    image_of,
)

from .streams import LazyStream


def elements(text: str | bytes, chunk_bytes: int = 1 << 20) -> list[tuple[str, Any]]:
    data = text.encode() if isinstance(text, str) else text
    return list(coco_elements(io.BytesIO(data), chunk_bytes))


def expected(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(s, e) for s in doc if s in ("images", "annotations", "categories") for e in doc[s] or []]


TRICKY: dict[str, Any] = {
    "info": {"description": 'a ] } , " \\ [ {', "year": 2017, "nested": [[[{"x": [1, {"y": "]"}]}]]]},
    "licenses": [{"id": 1, "name": 'Attribution, "BY" ]}'}],
    "images": [
        {"id": 1, "file_name": "a ]b}, c.jpg", "width": 640, "height": 480},
        {"id": "two", "file_name": "日本/写真\u00e9😀.jpg", "note": 'tab\there \\ "quoted" \u2028'},
        {"id": 3, "file_name": "c.jpg", "coco_url": "http://x/y?a=1&b=[2]", "ratio": -0.25, "big": 12.5e3},
    ],
    "a number": -123456.789e-3,
    "annotations": [
        {"id": 10, "image_id": 1, "segmentation": [[10.5, 20.25, 30.0, 40.125, 50, 60]], "bbox": [1, 2, 3, 4]},
        {"id": 11, "image_id": "two", "segmentation": {"counts": 'ab]}c"d', "size": [480, 640]}, "iscrowd": 1},
        {"id": 12, "image_id": 3, "segmentation": [[1e-7, 2e10], [3.5, 4.75, 5, 6]], "area": 0.000001},
        "not an object",
        7,
        None,
    ],
    "categories": [{"id": 1, "name": "person", "supercategory": ']},"\u00fc'}],
    "z": [True, False, None, "]", {}, []],
}


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("ascii_only", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_elements_in_file_order_whatever_the_chunks(indent: int | None, ascii_only: bool, chunk_bytes: int) -> None:
    text = json.dumps(TRICKY, indent=indent, ensure_ascii=ascii_only)
    got = elements(text, chunk_bytes)
    assert got == expected(TRICKY)
    assert [s for s, _ in got] == ["images"] * 3 + ["annotations"] * 6 + ["categories"]


@pytest.mark.parametrize("chunk_bytes", [1, 5, 7, 1 << 20])
def test_numbers_cut_at_every_place_come_back_whole(chunk_bytes: int) -> None:
    values = [0, -0.0, 12.5e3, -1.25e-7, 1e300, 123456789012345678901234567890, 3.0, -7, 0.5e2]
    for pad in range(8):  # moves every number across the chunk boundaries
        text = '{"images": [' + " " * pad + ", ".join(json.dumps(v) for v in values) + "]}"
        assert elements(text, chunk_bytes) == [("images", v) for v in values]
        text = '{"x": ' + " " * pad + '12.5e3, "categories":[1]}'
        assert elements(text, chunk_bytes) == [("categories", 1)]


def test_multibyte_characters_split_across_chunks() -> None:
    name = "é日😀" * 5
    data = json.dumps({"images": [{"id": 1, "file_name": name}]}, ensure_ascii=False).encode()
    for chunk_bytes in (1, 2, 3, 5):
        assert elements(data, chunk_bytes) == [("images", {"id": 1, "file_name": name})]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 20])
def test_other_top_level_values_of_every_type_are_skipped(chunk_bytes: int) -> None:
    text = (
        '{ "s": "[\\"images\\": [1]]", "i": 42, "f": -1.5e-3, "t": true, "fa": false, "n": null,'
        ' "o": {"images": [{"id": 9}], "x": {"y": [1, 2]}}, "a": [1, [2, [3]], {"z": "]"}], "e": [], "eo": {},'
        ' "nan": NaN, "inf": -Infinity,'
        ' "images" : [ ] ,\n"annotations":[],"categories": null, "last": "x"}'
    )
    assert elements(text, chunk_bytes) == []
    assert elements("{}") == []
    assert elements(" \n {  } \n") == []


def test_elements_that_are_not_objects_are_yielded() -> None:
    assert elements('{"images": [1, "x", null, [2], true], "annotations": [{}]}') == [
        ("images", 1), ("images", "x"), ("images", None), ("images", [2]), ("images", True), ("annotations", {})
    ]  # fmt: skip


def test_byte_order_mark_and_nan() -> None:
    assert elements(b'\xef\xbb\xbf{"annotations": [{"area": NaN, "x": Infinity}]}', 3) == [
        ("annotations", {"area": None, "x": None})
    ]


@pytest.mark.timeout(60)
def test_every_truncation_is_an_error() -> None:
    text = json.dumps(TRICKY, ensure_ascii=False)
    assert text.endswith("}")
    data = text.encode()
    for n in range(len(data)):
        with pytest.raises(CocoError):
            elements(data[:n], 7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a JSON object"),
        ('[{"images": []}]', "expected a JSON object"),
        ('"images"', "expected a JSON object"),
        ("42", "expected a JSON object"),
        ('{"images": [1,]}', "invalid JSON at character 14"),
        ('{"images": [1 2]}', "expected ',' or ']' in 'images' at character 14"),
        ('{"images": [{"id": 1,, "x": 2}]}', "invalid JSON at character 21"),
        ('{"info": {"a" 1}, "images": []}', "invalid JSON"),
        ('{"info": 1 "images": []}', "expected ',' or '}'"),
        ("{images: []}", "expected a member name at character 1"),
        ('{"images": []} x', "unexpected data after the top-level object at character 15"),
        ('{"images": []}{}', "unexpected data"),
        ('{"images": {"id": 1}}', "'images' at character 11 is not an array"),
        ('{"annotations": "none"}', "is not an array"),
        ('{"images": [{"file_name": "a\nb"}]}', "invalid JSON"),
        ('{"images": [{"id": 1}', "expected ',' or ']' in 'images' at character 21, found the end of the file"),
        ('{"images": [{"id": 1', "the file is cut short at character 20"),
        ('{"info": "abc', "the file is cut short"),
    ],
)
def test_not_a_coco_file(text: str, message: str) -> None:
    for chunk_bytes in (1, 4, 1 << 20):
        with pytest.raises(CocoError, match=message.replace("[", r"\[").replace("{", r"\{")):
            elements(text, chunk_bytes)


def test_bytes_that_are_not_utf8() -> None:
    with pytest.raises(CocoError, match="not UTF-8"):
        elements(b'{"images": [{"file_name": "\xff"}]}')
    with pytest.raises(CocoError, match="not UTF-8"):
        elements(b'{"images": [{"file_name": "\xc3')  # cut inside a character


def synthetic(images: int, annotations: int) -> Iterator[bytes]:
    """A COCO-style file made piece by piece: info and licenses, images, annotations, then categories."""
    yield b'{"info": {"description": "synthetic", "year": 2024}, "licenses": [{"id": 1, "name": "x"}],\n"images": ['
    for i in range(images):
        yield b'%s{"id": %d, "file_name": "train/%012d.jpg", "width": 640, "height": 480, "license": 1}' % (
            b"," if i else b"",
            i,
            i,
        )
    yield b'],\n"annotations": ['
    for a in range(annotations):
        i = a % images
        yield (
            b'%s{"id": %d, "image_id": %d, "category_id": %d, "iscrowd": 0, "area": %d.5, "bbox": [%d, 2.5, 30, 40],'
            b' "segmentation": [[%d.25, 20.5, 30.75, 40.0, 50.5, 60.25, 70, 80, 90.5, 100.25, 110, 120.75]]}'
        ) % (b"," if a else b"", a, i, a % 80, a, a % 600, a % 500)
    yield b'],\n"categories": [' + b",".join(b'{"id": %d, "name": "c%d"}' % (c, c) for c in range(80)) + b"]}\n"


def test_large_file_streams_in_bounded_memory() -> None:
    images, annotations = 20_000, 140_000
    source = LazyStream(synthetic(images, annotations))
    tracemalloc.start()
    try:
        counts = {"images": 0, "annotations": 0, "categories": 0}
        order: list[str] = []
        for section, element in coco_elements(io.BufferedReader(source), chunk_bytes=1 << 20):
            if not order or order[-1] != section:
                order.append(section)
            n = counts[section]
            assert element["id"] == n
            if section == "annotations" and n % 10_007 == 0:
                assert element["image_id"] == n % images and element["segmentation"][0][0] == n % 500 + 0.25
            counts[section] = n + 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert order == ["images", "annotations", "categories"]
    assert counts == {"images": images, "annotations": annotations, "categories": 80}
    assert source.produced > 30_000_000
    assert peak < 6 << 20, f"peak {peak} bytes"


@pytest.mark.timeout(60)  # reading on to the end (and parsing again at every chunk) takes minutes
def test_an_invalid_element_fails_without_reading_the_rest() -> None:
    start = b'{"images": [{"id": 0, "file_name": "a.jpg"}, {"id": 1,, "file_name": "b.jpg"}'

    def pieces() -> Iterator[bytes]:
        yield start
        yield from synthetic(20_000, 140_000)

    source = LazyStream(pieces())
    got = []
    with pytest.raises(CocoError, match=f"invalid JSON at character {start.index(b',,') + 1}"):
        for item in coco_elements(io.BufferedReader(source), chunk_bytes=1 << 16):
            got.append(item)
    assert got == [("images", {"id": 0, "file_name": "a.jpg"})]
    assert source.produced < 1 << 20


# images, annotations and their member


def test_image_of() -> None:
    record = {"id": 7, "file_name": "train/7.jpg", "width": 3}
    assert image_of(record) == CocoImage("7", "train/7.jpg", record)
    assert image_of({"id": "x7", "file_name": "a.jpg"}) == CocoImage("x7", "a.jpg", {"id": "x7", "file_name": "a.jpg"})
    for bad in (
        "a.jpg",
        [1],
        None,
        {"file_name": "a.jpg"},
        {"id": None, "file_name": "a.jpg"},
        {"id": True, "file_name": "a.jpg"},
        {"id": 1.5, "file_name": "a.jpg"},
        {"id": "", "file_name": "a.jpg"},
        {"id": 1},
        {"id": 1, "file_name": ""},
        {"id": 1, "file_name": 5},
    ):
        assert image_of(bad) == "bad-image", bad


def test_annotation_image_id() -> None:
    assert annotation_image_id({"id": 1, "image_id": 42}) == "42"
    assert annotation_image_id({"image_id": "img-42"}) == "img-42"
    for bad in ({"id": 1}, {"image_id": None}, {"image_id": 4.0}, {"image_id": False}, {"image_id": ""}, [42], 42):
        assert annotation_image_id(bad) is None, bad


def test_coco_member_orders_annotations_by_id() -> None:
    image = {"id": 7, "file_name": "café.jpg", "width": 640}
    annotations: list[dict[str, Any]] = [
        {"id": "b", "image_id": 7},
        {"id": 10, "image_id": 7, "bbox": [1.5, 2]},
        {"image_id": 7},
        {"id": 2, "image_id": 7, "segmentation": [[1, 2, 3]]},
        {"id": "a", "image_id": 7},
        {"id": -1, "image_id": 7},
    ]
    assert coco_member(image, annotations) == (
        '{"annotations":[{"id":-1,"image_id":7},{"id":2,"image_id":7,"segmentation":[[1,2,3]]},'
        '{"bbox":[1.5,2],"id":10,"image_id":7},{"id":"a","image_id":7},{"id":"b","image_id":7},{"image_id":7}],'
        '"image":{"file_name":"café.jpg","id":7,"width":640}}'
    )
    assert coco_member(image, []) == '{"annotations":[],"image":{"file_name":"café.jpg","id":7,"width":640}}'
