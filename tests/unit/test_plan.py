"""External sort, the plan's chunks and ranges, and batched ordered reads (pure logic)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from sharded_dataset_operator.core.extsort import ExternalSorter
from sharded_dataset_operator.core.plan import (
    ChunkWriter,
    PlanError,
    decode_sample,
    encode_sample,
    read_range,
    worker_range,
)
from sharded_dataset_operator.core.samples import RawFile, Sample
from sharded_dataset_operator.pods.reads import MissingFile, ReadPlan, batches, read_samples


class Runs:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.open_streams = 0

    def put_run(self, name: str, data: bytes) -> None:
        self.objects[name] = data

    def read_run(self, name: str) -> Iterator[str]:
        yield from self.objects[name].decode().splitlines()

    def delete_run(self, name: str) -> None:
        del self.objects[name]


def test_external_sort_equals_sorted_with_runs_spilled_and_deleted() -> None:
    rng = random.Random(7)
    records = [f"k{rng.randrange(10**6):07d}\0f00\0{rng.randrange(99)}" for _ in range(5000)]
    store = Runs()
    sorter = ExternalSorter(store, "run-", buffer_bytes=4096, max_runs=8)
    sorter.extend(records)
    assert sorter.runs_written > 8 and len(store.objects) == sorter.runs_written
    assert sorter.buffer_bytes > 4096  # grew, so the number of runs merged at once stays bounded
    assert list(sorter.sorted()) == sorted(records)
    sorter.close()
    assert store.objects == {}
    with pytest.raises(ValueError, match="newline"):
        ExternalSorter(store, "x").add("a\nb")


def sample(i: int, size: int = 10, files: int = 2) -> Sample:
    return Sample(
        key=f"s{i:05d}",
        files=tuple((f"m{j}", RawFile(f"d{j}/s{i:05d}.bin", size)) for j in range(files)),
        values=(("cls", str(i % 3)),) if i % 2 else (),
    )


def test_plan_chunks_round_trip_and_ranges_cover_every_sample_once() -> None:
    objects: dict[str, bytes] = {}
    writer = ChunkWriter(lambda n, d: objects.__setitem__(n, d), "b-", chunk_samples=7)
    samples = [sample(i) for i in range(50)]
    for s in samples:
        writer.add(s)
    writer.finish()
    assert decode_sample(encode_sample(samples[3])) == samples[3]
    manifest = {"samples": writer.samples, "chunkSamples": 7, "chunks": writer.chunks}
    assert len(writer.chunks) == 8 and writer.members == 100 and writer.bytes == 1000
    read: list[str] = []

    def lines(name: str) -> Iterator[str]:
        read.append(name)
        return iter(objects[name].decode().splitlines())

    for workers in (1, 3, 8, 64):
        got = []
        for w in range(workers):
            start, end = worker_range(manifest, workers, w)
            got.extend(read_range(manifest, start, end, lines))
        assert got == samples
    read.clear()
    assert [s.key for s in read_range(manifest, 15, 17, lines)] == ["s00015", "s00016"]
    assert read == ["b-plan-000002.jsonl"]  # only the chunk holding the range


def test_a_short_or_missing_chunk_is_an_error_not_a_smaller_dataset() -> None:
    objects: dict[str, bytes] = {}
    writer = ChunkWriter(lambda n, d: objects.__setitem__(n, d), "b-", chunk_samples=5)
    for i in range(12):
        writer.add(sample(i))
    writer.finish()
    manifest = {"samples": 12, "chunkSamples": 5, "chunks": writer.chunks}
    objects[writer.chunks[1]] = b"\n".join(objects[writer.chunks[1]].splitlines()[:3]) + b"\n"
    with pytest.raises(PlanError, match="holds 3 samples, the manifest says 5"):
        list(read_range(manifest, 0, 12, lambda n: iter(objects[n].decode().splitlines())))
    with pytest.raises(PlanError, match="chunks"):
        list(read_range({**manifest, "chunks": writer.chunks[:2]}, 0, 12, lambda n: iter(())))


def test_batches_respect_object_and_byte_limits_and_never_split_a_sample() -> None:
    samples = [sample(i, size=100, files=3) for i in range(10)] + [sample(99, size=5000, files=1)]
    got = list(batches(samples, ReadPlan(batch_objects=7, batch_bytes=10**6)))
    assert [len(b) for b in got] == [2, 2, 2, 2, 3]  # 3 files per sample; the 1-file one joins the last
    got = list(batches(samples, ReadPlan(batch_objects=100, batch_bytes=700)))
    assert [len(b) for b in got] == [2, 2, 2, 2, 2, 1]  # 600 bytes per pair; the big one alone


def test_read_samples_keeps_order_bounds_in_flight_and_fails_on_missing_files() -> None:
    samples = [sample(i, size=4) for i in range(200)]
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    rng = random.Random(1)

    def read_many(paths: Sequence[str]) -> list[bytes]:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(rng.random() / 500)
        with lock:
            in_flight -= 1
        return [p.encode()[-4:] for p in paths]

    plan = ReadPlan(batch_objects=6, batch_bytes=10**6, batches_in_flight=4, readahead_bytes=10**6)
    out = list(read_samples(samples, read_many, plan))
    assert [s.key for s, _ in out] == [s.key for s in samples]
    assert out[5][1] == [("m0", b".bin"), ("m1", b".bin")]
    assert 1 < peak <= 4

    def losing(paths: Sequence[str]) -> list[bytes]:
        if any("s00042" in p for p in paths):
            raise MissingFile("d0/s00042.bin not found")
        return [b"x" * 4 for _ in paths]

    with pytest.raises(MissingFile, match="s00042"):
        list(read_samples(samples, losing, plan))

    def empty(paths: Sequence[str]) -> list[bytes]:
        return [b"" for _ in paths]

    with pytest.raises(MissingFile, match="came back empty"):
        list(read_samples(samples, empty, plan))
