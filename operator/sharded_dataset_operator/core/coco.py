"""A streaming reader of COCO-style annotation files: one JSON object whose "images", "annotations" and
"categories" arrays are yielded element by element, never loaded whole (COCO's train annotations are ~450 MB).

The top level is scanned by hand; each element (and every other top-level value, which is parsed and dropped)
is parsed by the json module's C scanner (`raw_decode`) from a buffer of decoded text that is refilled from the
stream chunk by chunk and trimmed as values are consumed. Memory: one chunk plus the largest element; a top-level
value that is not one of those arrays (such as "info" or "licenses") is held whole while it is parsed. NaN and
infinities (not JSON, though Python writes them) read as None. Offsets in messages count decoded characters.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from sharded_dataset_operator.core.compactjson import compact_sorted

SECTIONS = ("images", "annotations", "categories")
BAD_IMAGE = "bad-image"
_NON_WHITESPACE = re.compile(r"[^ \t\n\r]")
# A parse error this close to the buffer's end, or a number ending this close to it, may be due to the chunk's
# end rather than the file: read more and parse again. (A cut literal such as "-Infinit" fails at its start.)
_SLACK = 16


class CocoError(Exception):
    """Not a COCO-style file: not a JSON object at the top, invalid JSON, or cut short (the message says where)."""


@dataclass(frozen=True, slots=True)
class CocoImage:
    """An "images" element: its id as text (an int id as its decimal text), its file name, the element itself."""

    id: str
    file_name: str
    record: dict[str, Any]


def _no_constant(_: str) -> None:
    return None


class _Scanner:
    """Decoded text of the stream, read a chunk at a time; `buffer[pos:]` is what is not consumed yet."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int) -> None:
        self.stream, self.chunk_bytes = stream, max(1, chunk_bytes)
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()  # a leading byte order mark is dropped
        self.json = json.JSONDecoder(parse_constant=_no_constant)
        self.buffer = ""
        self.pos = 0
        self.dropped = 0  # characters dropped from the buffer's front
        self.bytes_read = 0
        self.ended = False

    def offset(self) -> int:
        return self.dropped + self.pos

    def more(self) -> bool:
        """Drop the consumed text and read one more chunk; False, changing nothing, once the stream is exhausted."""
        if self.ended:
            return False
        data = self.stream.read(self.chunk_bytes) or b""
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise CocoError(f"not UTF-8 text near byte {self.bytes_read + max(0, e.start)}: {e.reason}") from None
        self.bytes_read += len(data)
        if not data:
            self.ended = True
            if not text:
                return False  # nothing changed: positions in the buffer still hold
        del data
        rest = self.buffer[self.pos :]
        self.dropped += self.pos
        self.buffer, self.pos = "", 0  # the old buffer goes before the new one is made
        self.buffer = rest + text
        return True

    def peek(self) -> str:
        """The next character that is not whitespace, not consumed ("" at the end of the stream)."""
        while True:
            found = _NON_WHITESPACE.search(self.buffer, self.pos)
            if found is not None:
                self.pos = found.start()
                return self.buffer[self.pos]
            self.pos = len(self.buffer)
            if not self.more():
                return ""

    def expect(self, chars: str, what: str) -> str:
        """Consume the next character, one of `chars` (CocoError naming `what` when it is not)."""
        c = self.peek()
        if not c or c not in chars:
            found = repr(c) if c else "the end of the file"
            raise CocoError(f"expected {what} at character {self.offset()}, found {found}")
        self.pos += 1
        return c

    def value(self) -> Any:
        """The next JSON value, parsed whole (reading more of the stream while it may be incomplete)."""
        self.peek()
        while True:
            try:
                value, end = self.json.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as e:
                unterminated = e.msg.startswith("Unterminated string")
                if (unterminated or e.pos + _SLACK > len(self.buffer)) and self.more():
                    continue
                problem = "the file is cut short" if unterminated or e.pos >= len(self.buffer) else "invalid JSON"
                raise CocoError(f"{problem} at character {self.dropped + e.pos}: {e.msg}") from None
            if type(value) in (int, float) and end + _SLACK > len(self.buffer) and self.more():
                continue  # a number at the buffer's end may go on in the next chunk ("12" of "12.5e3")
            self.pos = end
            return value


def coco_elements(stream: BinaryIO, chunk_bytes: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """(section, element) for every element of the top-level arrays "images", "annotations" and "categories",
    in file order; every other top-level member is parsed and dropped. A section that is null counts as empty;
    one that is neither null nor an array is a CocoError."""
    scan = _Scanner(stream, chunk_bytes)
    scan.expect("{", "a JSON object (a COCO-style file is one object)")
    if scan.peek() == "}":
        scan.pos += 1
    else:
        while True:
            if scan.peek() != '"':
                scan.expect('"', "a member name")
            name = str(scan.value())
            scan.expect(":", "':' after the member name")
            if name in SECTIONS and scan.peek() == "[":
                scan.pos += 1
                if scan.peek() == "]":
                    scan.pos += 1
                else:
                    while True:
                        yield name, scan.value()
                        if scan.expect(",]", f"',' or ']' in {name!r}") == "]":
                            break
            else:
                at = scan.offset()
                value = scan.value()  # info, licenses, ...: parsed and dropped
                if name in SECTIONS and value is not None:
                    raise CocoError(f"{name!r} at character {at} is not an array")
                del value
            if scan.expect(",}", "',' or '}' after a top-level member") == "}":
                break
    if scan.peek():
        raise CocoError(f"unexpected data after the top-level object at character {scan.offset()}")


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def image_of(element: Any) -> CocoImage | str:
    """The image of an "images" element, or "bad-image" (not an object, no int/str id, no file_name text)."""
    if not isinstance(element, dict):
        return BAD_IMAGE
    image_id = _id_text(element.get("id"))
    file_name = element.get("file_name")
    if image_id is None or not isinstance(file_name, str) or not file_name:
        return BAD_IMAGE
    return CocoImage(image_id, file_name, element)


def annotation_image_id(element: Any) -> str | None:
    """The image id of an "annotations" element as text, None when it is not an object or has no int/str one."""
    return _id_text(element.get("image_id")) if isinstance(element, dict) else None


def _annotation_order(annotation: dict[str, Any]) -> tuple[int, int, str]:
    value = annotation.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, compact_sorted(value))


def coco_member(image: dict[str, Any], annotations: list[dict[str, Any]]) -> str:
    """The JSON member of one image: {"image": ..., "annotations": [...]}, the annotations by their "id" (int ids
    numerically, then any other by its JSON text)."""
    body = {"image": image, "annotations": sorted(annotations, key=_annotation_order)}
    return compact_sorted(body)
