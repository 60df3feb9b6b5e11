"""External sort of text records with flat memory: sorted runs spilled to an object store, then one k-way merge.

Records are strings without newlines. Up to `buffer_bytes` of them are sorted in memory; beyond that each full
buffer is sorted and written as one run object, and `sorted()` merges the runs (and what is left in memory)
with `heapq.merge`, reading every run as a stream. Memory is therefore one buffer plus a read buffer per run,
whatever the number of records: 10 M file records of ~100 bytes make ~120 runs of 8 MiB.

To keep the number of streams merged at once small, the buffer doubles every `max_runs // 2` runs: the run
count then grows with the logarithm of the input past `max_runs // 2` runs (10 M records: ~130 runs, the last
ones of 16 MiB), and memory stays within a few buffers, never linear in the input.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Protocol

RECORD_OVERHEAD = 56  # bytes a short Python str costs beyond its characters (CPython 3.11, ASCII)


class RunStore(Protocol):
    """Where runs live while a sort is in progress."""

    def put_run(self, name: str, data: bytes) -> None: ...

    def read_run(self, name: str) -> Iterator[str]:
        """The run's lines (without newlines), streamed."""
        ...

    def delete_run(self, name: str) -> None: ...


class ExternalSorter:
    """Collect records with `add`, then iterate `sorted()` once; `close()` deletes the runs."""

    def __init__(
        self, store: RunStore, prefix: str, *, buffer_bytes: int = 8 * 1024 * 1024, max_runs: int = 128
    ) -> None:
        if buffer_bytes < 1 or max_runs < 2:
            raise ValueError("buffer_bytes must be positive and max_runs at least 2")
        self.store, self.prefix = store, prefix
        self.buffer_bytes, self.max_runs = buffer_bytes, max_runs
        self.runs: list[str] = []
        self.runs_written = 0
        self.records = 0
        self.peak_buffer_bytes = 0
        self._buffer: list[str] = []
        self._size = 0
        self._merged = False

    def add(self, record: str) -> None:
        if self._merged:
            raise RuntimeError("records added after sorted() started")
        if "\n" in record:
            raise ValueError("a record must not contain a newline")
        self._buffer.append(record)
        self._size += len(record) + RECORD_OVERHEAD
        self.records += 1
        if self._size >= self.buffer_bytes:
            self._spill()

    def extend(self, records: Iterable[str]) -> None:
        for r in records:
            self.add(r)

    def _spill(self) -> None:
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._size)
        self._buffer.sort()
        name = f"{self.prefix}{len(self.runs):05d}"
        self.store.put_run(name, ("\n".join(self._buffer) + "\n").encode())
        self.runs.append(name)
        self.runs_written += 1
        self._buffer = []
        self._size = 0
        # Keep the number of runs merged at once bounded: bigger buffers from here on.
        if len(self.runs) >= self.max_runs // 2 and len(self.runs) % (self.max_runs // 2) == 0:
            self.buffer_bytes *= 2

    def sorted(self) -> Iterator[str]:
        """Every record added, in order (duplicates kept)."""
        if self._merged:
            raise RuntimeError("sorted() can be iterated only once")
        self._merged = True
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._size)
        self._buffer.sort()
        if not self.runs:
            yield from self._buffer
            self._buffer = []
            return
        streams: list[Iterator[str]] = [self.store.read_run(name) for name in self.runs]
        streams.append(iter(self._buffer))
        yield from heapq.merge(*streams)
        self._buffer = []

    def close(self) -> None:
        """Delete the runs (safe to call more than once)."""
        for name in self.runs:
            self.store.delete_run(name)
        self.runs = []
