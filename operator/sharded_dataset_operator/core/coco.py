"""A streaming reader of COCO-style annotation files: one JSON object whose "images", "annotations" and
"categories" arrays are yielded element by element, never loaded whole (COCO's train annotations are ~450 MB).

The top level is scanned by hand; each element (and every other top-level value, which is parsed and dropped)
is parsed by the json module's C scanner (`raw_decode`) from a buffer that is refilled from the stream and
trimmed as elements are consumed. Memory: one chunk plus the largest element (a non-array top-level value such
as "info" is held whole while it is parsed).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

SECTIONS = ("images", "annotations", "categories")
_WHITESPACE = " \t\r\n"


class CocoError(Exception):
    """Not a COCO-style file: not a JSON object at the top, invalid JSON, or cut short."""


@dataclass(frozen=True, slots=True)
class CocoImage:
    id: str
    file_name: str
    record: dict[str, Any]


class _Scanner:
    def __init__(self, stream: BinaryIO, chunk_bytes: int) -> None:
        self.stream, self.chunk_bytes = stream, chunk_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buffer = ""
        self.pos = 0
        self.consumed = 0  # characters dropped from the buffer's front
        self.ended = False
        self.json = json.JSONDecoder()

    def _more(self) -> bool:
        if self.ended:
            return False
        data = self.stream.read(self.chunk_bytes)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise CocoError(f"not UTF-8 near character {self.consumed + len(self.buffer)}: {e}") from e
        if self.pos > 0:
            self.consumed += self.pos
            self.buffer, self.pos = self.buffer[self.pos :], 0
        self.buffer += text
        if not data:
            self.ended = True
        return bool(text) or not self.ended

    def peek(self) -> str:
        """The next non-whitespace character ("" at the end of the stream)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._more():
                return ""

    def expect(self, chars: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            where = self.consumed + self.pos
            raise CocoError(f"expected {' or '.join(repr(x) for x in chars)} at character {where}, found {c!r}")
        self.pos += 1
        return c

    def value(self) -> Any:
        """The next JSON value, read whole (more of the stream is read while it is incomplete)."""
        self.peek()
        while True:
            try:
                value, end = self.json.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as e:
                if not self._more():
                    raise CocoError(f"invalid or cut short at character {self.consumed + e.pos}: {e.msg}") from e
                continue
            if end == len(self.buffer) and self.buffer[self.pos] in "-0123456789" and self._more():
                continue  # a number at the buffer's end may go on in the next chunk
            self.pos = end
            return value


def coco_elements(stream: BinaryIO, chunk_bytes: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """(section, element) for every element of the top-level arrays "images", "annotations" and "categories",
    in file order; every other top-level member is parsed and dropped."""
    scan = _Scanner(stream, max(1, chunk_bytes))
    if scan.peek() != "{":
        raise CocoError("not a COCO-style file: the top level is not a JSON object")
    scan.pos += 1
    if scan.peek() == "}":
        scan.pos += 1
        return
    while True:
        if scan.peek() != '"':
            raise CocoError(f"expected a member name at character {scan.consumed + scan.pos}")
        name = scan.value()
        scan.expect(":")
        if name in SECTIONS and scan.peek() == "[":
            scan.pos += 1
            if scan.peek() == "]":
                scan.pos += 1
            else:
                while True:
                    yield str(name), scan.value()
                    if scan.expect(",]") == "]":
                        break
        else:
            scan.value()  # info, licenses, ...: parsed and dropped
        if scan.expect(",}") == "}":
            break
    if scan.peek():
        raise CocoError(f"unexpected data after the top-level object at character {scan.consumed + scan.pos}")


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def image_of(element: Any) -> CocoImage | str:
    """The image of an "images" element, or "bad-image" (not an object, no id, no file_name)."""
    if not isinstance(element, dict):
        return "bad-image"
    image_id = _id_text(element.get("id"))
    file_name = element.get("file_name")
    if image_id is None or not isinstance(file_name, str) or not file_name:
        return "bad-image"
    return CocoImage(image_id, file_name, element)


def annotation_image_id(element: Any) -> str | None:
    """The image id of an "annotations" element as text, None when it has none."""
    return _id_text(element.get("image_id")) if isinstance(element, dict) else None


def _annotation_order(annotation: dict[str, Any]) -> tuple[int, int, str]:
    value = annotation.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value, sort_keys=True))


def coco_member(image: dict[str, Any], annotations: list[dict[str, Any]]) -> str:
    """The JSON member of one image: its images[] entry and its annotations, by id."""
    body = {"image": image, "annotations": sorted(annotations, key=_annotation_order)}
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
