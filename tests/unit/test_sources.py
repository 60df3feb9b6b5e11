"""The AIS source: a remote bucket (s3://...) is listed by its backend and read with cold GETs where Get-Batch
cannot serve (objects AIS has not fetched yet); an AIS bucket's missing object stays a missing file."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import MissingObject
from sharded_dataset_operator.pods.reads import MissingFile
from sharded_dataset_operator.pods.sources import AisSource


class Remote:
    """AIS in front of a backend: `cached` is what AIS holds, `backend` what a cold GET can fetch."""

    def __init__(self, backend: dict[str, bytes], cached: set[str]) -> None:
        self.backend, self.cached = backend, cached
        self.counted = 0

    def get_batch(self, bucket: str, names: list[str], provider: str = "ais") -> list[bytes]:
        missing = [n for n in names if n not in self.cached]
        if missing:
            raise MissingObject(missing[0])
        return [self.backend[n] for n in names]

    def get(self, bucket: str, name: str, provider: str = "ais", direct: bool = False) -> bytes | None:
        if name not in self.backend:
            return None
        self.cached.add(name)
        return self.backend[name]

    def list_pages(self, bucket: str, provider: str, prefix: str, **_: Any) -> Iterator[list[Any]]:
        yield [SimpleNamespace(name=n, size=len(d), checksum="") for n, d in sorted(self.backend.items())]

    def object_count(self, bucket: str, provider: str = "ais", prefix: str = "") -> int:
        self.counted += 1
        return len(self.cached)


def test_a_remote_bucket_reads_objects_ais_does_not_hold_yet_with_cold_gets() -> None:
    ais = Remote({"p/a.jpg": b"a", "p/b.jpg": b"b"}, cached={"p/a.jpg"})
    source = AisSource(ais, "raw", "aws", "p/")  # type: ignore[arg-type]
    assert [f.path for f in source.files()] == ["a.jpg", "b.jpg"] and ais.counted == 0  # no count of the cache
    assert source.read_many(["a.jpg", "b.jpg"]) == [b"a", b"b"]
    assert source.reads.cold_batches == 1 and source.reads.object_requests == 2
    assert source.read_many(["a.jpg", "b.jpg"]) == [b"a", b"b"]  # now in AIS: one Get-Batch
    assert source.reads.batch_requests == 1
    ais.backend.pop("p/b.jpg")
    ais.cached.discard("p/b.jpg")
    with pytest.raises(MissingFile, match=r"b\.jpg"):
        source.read_many(["a.jpg", "b.jpg"])


def test_an_ais_bucket_missing_object_is_a_missing_file_at_once() -> None:
    ais = Remote({"a.jpg": b"a", "b.jpg": b"b"}, cached={"a.jpg"})
    source = AisSource(ais, "raw", "ais", "")  # type: ignore[arg-type]
    with pytest.raises(MissingFile, match="disappeared during conversion"):
        source.read_many(["a.jpg", "b.jpg"])
    assert source.reads.object_requests == 0
