"""The members of a tar stream, read from its headers alone (pure, no I/O).

The verifier counts a shard's members from the shard's bytes as they stream by: each 512-byte header gives a
member's name and size, and the member's data is stepped over, never copied. It understands what tar writers
put in shards (ustar and its `prefix` field, POSIX pax `path`/`size` records, GNU long names) and lists what
AIS's archive listing lists: every entry but directories. Anything else (a header without the ustar magic, a
size that is not a number, a stream that ends inside a member or before the end-of-archive block, bytes after
it that are not zero) is a `TarFormatError`: a shard that cannot be read whole is never counted as smaller.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_USTAR = b"ustar\x00"  # POSIX ustar and pax; GNU writes b"ustar " and has no prefix field
_GNU = b"ustar "
_HEADER_ONLY = frozenset(b"12346")  # type flags of links and devices: their size is listed, no data follows
_SKIPPED = frozenset(b"5gK")  # directories, pax global headers, GNU long link names: not members
_GNU_LONG_NAME = ord("L")
_NEXT_NAME_OR_SIZE = frozenset((ord("x"), _GNU_LONG_NAME))  # data read, applies to the next header


class TarFormatError(ValueError):
    """The bytes are not a whole tar archive."""


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _number(field: bytes) -> int:
    """A header's size field: octal digits (any padding), or GNU base-256 for sizes of 8 GiB and more."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.strip(b" \x00")
    if digits and not digits.isdigit():
        raise TarFormatError(f"header size field {field!r} is not a number")
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarFormatError(f"header size field {field!r} is not a number") from None


def _pax_records(data: bytes) -> dict[str, str]:
    """`path` and `size` of a pax extended header's `LENGTH KEY=VALUE\\n` records."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("malformed pax extended header")
        key, _, value = record[:-1].partition(b"=")
        if key in (b"path", b"size"):
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def tar_members(chunks: Iterable[bytes]) -> Iterator[tuple[str, int]]:
    """`(name, size)` of each member of the tar stream given as `chunks` (of any sizes), in stream order."""
    reader = _TarReader()
    for chunk in chunks:
        yield from reader.feed(chunk)
    reader.finish()


class _TarReader:
    """What a tar stream's reader carries from one chunk to the next."""

    def __init__(self) -> None:
        self.skip = 0  # bytes of the current member's data and padding still to step over
        self.collect = 0  # bytes of an extended header's data still to read into `extended`
        self.extended = bytearray()
        self.extended_type = 0  # the type flag of the extended header being read
        self.padding = 0  # after the extended header's data
        self.next_name: str | None = None
        self.next_size: int | None = None
        self.head = b""  # a header cut by a chunk's end
        self.ended = False

    def feed(self, chunk: bytes) -> Iterator[tuple[str, int]]:
        n, pos = len(chunk), 0
        while pos < n:
            if self.ended:
                if chunk.count(0, pos) != n - pos:
                    raise TarFormatError("data after the end-of-archive block")
                return
            if self.skip:
                step = min(self.skip, n - pos)
                pos += step
                self.skip -= step
                continue
            if self.collect:
                step = min(self.collect, n - pos)
                self.extended += chunk[pos : pos + step]
                pos += step
                self.collect -= step
                if not self.collect:
                    self._extended_done()
                continue
            if self.head or n - pos < BLOCK:  # a header cut by the chunk's end
                take = chunk[pos : pos + BLOCK - len(self.head)]
                self.head += take
                pos += len(take)
                if len(self.head) < BLOCK:
                    continue
                member = self._header(self.head)
                self.head = b""
                if member is not None:
                    yield member
                continue
            header = self._header
            while pos + BLOCK <= n:  # headers inside the chunk, each member's data stepped over at once
                member = header(chunk[pos : pos + BLOCK])
                pos += BLOCK
                if member is None:
                    break  # the reader's state says what follows
                yield member
                pos += self.skip
                self.skip = 0
            if pos > n:
                self.skip = pos - n

    def _header(self, block: bytes) -> tuple[str, int] | None:
        """The member a header starts (its data and padding set as `skip`), or None for a header that is not a
        member (its data read or skipped through the reader's state)."""
        if block == _ZERO_BLOCK:
            if self.next_name is not None or self.next_size is not None:
                raise TarFormatError("an extended header without the member it describes")
            self.ended = True
            return None
        magic = block[257:263]
        if magic != _USTAR and magic != _GNU:
            raise TarFormatError(f"a header at a member boundary has no ustar magic ({magic!r})")
        digits = block[124:135]
        try:
            size = int(digits, 8) if digits.isdigit() else _number(block[124:136])
        except ValueError:  # an 8 or a 9
            raise TarFormatError(f"header size field {block[124:136]!r} is not a number") from None
        kind = block[156]
        if kind in _NEXT_NAME_OR_SIZE:
            self.extended, self.extended_type = bytearray(), kind
            self.collect, self.padding = size, _padded(size) - size
            if not size:
                self._extended_done()
            return None
        if kind in _SKIPPED:
            self.next_name = self.next_size = None
            self.skip = _padded(size)
            return None
        if self.next_size is not None:
            size, self.next_size = self.next_size, None
        if self.next_name is not None:
            name, self.next_name = self.next_name, None
        else:
            end = block.find(0, 0, 100)
            name = block[: end if end >= 0 else 100].decode("utf-8", "surrogateescape")
            if magic == _USTAR and block[345]:
                end = block.find(0, 345, 500)
                name = block[345 : end if end >= 0 else 500].decode("utf-8", "surrogateescape") + "/" + name
        self.skip = 0 if kind in _HEADER_ONLY else _padded(size)
        return name, size

    def _extended_done(self) -> None:
        data = bytes(self.extended)
        if self.extended_type == _GNU_LONG_NAME:
            self.next_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        else:
            records = _pax_records(data)
            self.next_name = records.get("path", self.next_name)
            if "size" in records:
                try:
                    self.next_size = int(records["size"])
                except ValueError:
                    raise TarFormatError(f"pax size {records['size']!r} is not a number") from None
        self.skip = self.padding

    def finish(self) -> None:
        if self.skip or self.collect or self.head:
            raise TarFormatError("the stream ends inside a member")
        if not self.ended:
            raise TarFormatError("the stream ends before the end-of-archive block")
