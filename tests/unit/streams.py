"""A stream made as it is read, for the memory tests of the streaming readers (tables, COCO)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any


class LazyStream(io.RawIOBase):
    """A read-only stream whose bytes are made on demand from an iterator of pieces."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._pending = b""
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = piece
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.produced += n
        return n
