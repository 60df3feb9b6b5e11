"""Reading the raw files of a stream of samples: in batches, concurrently, in order, with bounded read-ahead.

Consecutive samples are packed into batches of at most `batch_objects` files and `batch_bytes` bytes (a sample
is never split; one larger than the limits forms its own batch). Each batch is read by one call of the
source's `read_many` (an AIS Get-Batch request, or plain GETs/file reads one after the other) on a small
thread pool, and at most `batches_in_flight` batches totalling at most `readahead_bytes` are read ahead.
Batches are yielded strictly in order, so the shards come out in plan order whatever the timing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sharded_dataset_operator.core.samples import Sample


class MissingFile(Exception):
    """A file of the plan is gone (or came back empty where it had bytes): the worker fails and is retried."""


class Vanished(MissingFile):
    """The source no longer has a listed file (its store answered 404): the source changed since planning."""


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """How to read: batch limits and concurrency."""

    batch_objects: int = 2048
    batch_bytes: int = 8 * 1024 * 1024
    batches_in_flight: int = 3
    readahead_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if min(self.batch_objects, self.batch_bytes, self.batches_in_flight, self.readahead_bytes) < 1:
            raise ValueError("read limits must be positive")


ReadMany = Callable[[Sequence[str]], list[bytes]]
"""Reads the files at these paths, returning their contents in the same order; raises MissingFile."""


class Failed(bytes):
    """The content of a member that could not be read through `Through` (empty), with the reason: the sample
    is skipped and counted, not the worker failed."""

    reason: str

    def __new__(cls, reason: str) -> Failed:
        obj = super().__new__(cls, b"")
        obj.reason = reason
        return obj


@dataclass(frozen=True, slots=True)
class Through:
    """The files of member `member` are read by `fetch(path)` (an object read through an AIS ETL), up to
    `concurrency` at once per batch, instead of by the batch read. `fetch` raises `FetchFailed` for a file it
    could not transform (the sample is skipped and counted); anything else fails the worker."""

    member: str
    fetch: Callable[[str], bytes]
    concurrency: int = 8


class FetchFailed(Exception):
    """`Through.fetch` could not produce this file (e.g. the ETL's transform raised on it)."""


def batches(samples: Iterable[Sample], plan: ReadPlan) -> Iterator[list[Sample]]:
    """Consecutive samples packed by the object and byte limits."""
    batch: list[Sample] = []
    objects = size = 0
    for s in samples:
        n = len(s.files)
        b = s.file_bytes()
        if batch and (objects + n > plan.batch_objects or size + b > plan.batch_bytes):
            yield batch
            batch, objects, size = [], 0, 0
        batch.append(s)
        objects += n
        size += b
    if batch:
        yield batch


def _fetch_one(through: Through, path: str) -> bytes:
    try:
        return through.fetch(path)
    except FetchFailed as e:
        return Failed(str(e))


def _read_batch(
    read_many: ReadMany, batch: list[Sample], through: Through | None = None
) -> list[list[tuple[str, bytes]]]:
    member = through.member if through is not None else None
    paths = [raw.path for s in batch for name, raw in s.files if name != member]
    data = read_many(paths) if paths else []
    if len(data) != len(paths):
        raise MissingFile(f"asked for {len(paths)} files, got {len(data)}")
    fetched: dict[str, bytes] = {}
    if through is not None:
        wanted = [raw.path for s in batch for name, raw in s.files if name == member]
        with ThreadPoolExecutor(max_workers=max(1, min(through.concurrency, len(wanted) or 1))) as pool:
            fetched = dict(zip(wanted, pool.map(lambda p: _fetch_one(through, p), wanted), strict=True))
    out: list[list[tuple[str, bytes]]] = []
    i = 0
    for s in batch:
        members: list[tuple[str, bytes]] = []
        for name, raw in s.files:
            if name == member:
                members.append((name, fetched[raw.path]))
                continue
            content = data[i]
            i += 1
            if raw.size > 0 and not content:
                raise MissingFile(f"{raw.path} came back empty (listed with {raw.size} bytes)")
            members.append((name, content))
        out.append(members)
    return out


def read_samples(
    samples: Iterable[Sample], read_many: ReadMany, plan: ReadPlan, through: Through | None = None
) -> Iterator[tuple[Sample, list[tuple[str, bytes]]]]:
    """(sample, [(member name, bytes), ...]) in input order; the files of a sample in its `files` order; the
    files of `through.member` read by `through.fetch` (a `Failed` where it failed)."""
    with ThreadPoolExecutor(max_workers=plan.batches_in_flight, thread_name_prefix="read") as pool:
        window: deque[tuple[list[Sample], int, Future[list[list[tuple[str, bytes]]]]]] = deque()
        in_flight = 0
        source = batches(samples, plan)
        exhausted = False
        try:
            while True:
                while not exhausted and (
                    not window or (len(window) < plan.batches_in_flight and in_flight < plan.readahead_bytes)
                ):
                    batch = next(source, None)
                    if batch is None:
                        exhausted = True
                        break
                    size = sum(s.file_bytes() for s in batch)
                    window.append((batch, size, pool.submit(_read_batch, read_many, batch, through)))
                    in_flight += size
                if not window:
                    return
                batch, size, fut = window.popleft()
                in_flight -= size
                yield from zip(batch, fut.result(), strict=True)
        finally:
            for _, _, pending in window:
                pending.cancel()
