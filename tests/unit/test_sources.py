"""The AIS source: a remote bucket (s3://...) is listed as its backend has it now and read at the backend's
current version, one GET each; an AIS bucket is cross-checked against the targets' count and read by
Get-Batch, and its missing object is a missing file."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import MissingObject
from sharded_dataset_operator.pods.reads import MissingFile
from sharded_dataset_operator.pods.sources import AisSource


class Remote:
    """AIS in front of a backend: `cached` is AIS's copy of each object it holds, `backend` what S3 has now."""

    def __init__(self, backend: dict[str, bytes], cached: dict[str, bytes]) -> None:
        self.backend, self.cached = backend, cached
        self.counted = 0
        self.listed_remote: list[bool] = []

    def get_batch(self, bucket: str, names: list[str], provider: str = "ais") -> list[bytes]:
        missing = [n for n in names if n not in self.cached]
        if missing:
            raise MissingObject(missing[0])
        return [self.cached[n] for n in names]  # what AIS holds, stale or not

    def get(
        self, bucket: str, name: str, provider: str = "ais", direct: bool = False, latest: bool = False
    ) -> bytes | None:
        if latest or name not in self.cached:
            if name not in self.backend:
                return None
            self.cached[name] = self.backend[name]
        return self.cached[name]

    def list_pages(self, bucket: str, provider: str, prefix: str, **kw: Any) -> Iterator[list[Any]]:
        self.listed_remote.append(bool(kw.get("remote_props")))
        source = self.backend if kw.get("remote_props") else {**self.backend, **self.cached}
        yield [SimpleNamespace(name=n, size=len(d), checksum=f"etag-{d!r}") for n, d in sorted(source.items())]

    def object_count(self, bucket: str, provider: str = "ais", prefix: str = "") -> int:
        self.counted += 1
        return len(self.cached)


def test_a_remote_bucket_is_listed_and_read_as_the_backend_has_it_now() -> None:
    ais = Remote({"p/a.jpg": b"new", "p/b.jpg": b"b"}, cached={"p/a.jpg": b"old"})  # a.jpg rewritten in S3
    source = AisSource(ais, "raw", "aws", "p/")  # type: ignore[arg-type]
    listed = list(source.files())
    assert [(f.path, f.tag) for f in listed] == [("a.jpg", "etag-b'new'"), ("b.jpg", "etag-b'b'")]
    assert ais.listed_remote == [True] and ais.counted == 0  # no count of what AIS happens to hold
    assert source.read_many(["a.jpg", "b.jpg"]) == [b"new", b"b"]  # never the stale copy, cold ones fetched
    assert source.reads.object_requests == 2 and source.reads.batch_requests == 0
    del ais.backend["p/b.jpg"]  # deleted in S3 while AIS still holds it
    with pytest.raises(MissingFile, match=r"b\.jpg"):
        source.read_many(["a.jpg", "b.jpg"])


def test_an_ais_bucket_is_read_by_get_batch_and_a_missing_object_is_a_missing_file() -> None:
    ais = Remote({}, cached={"a.jpg": b"a", "b.jpg": b"b"})
    source = AisSource(ais, "raw", "ais", "")  # type: ignore[arg-type]
    assert [f.path for f in source.files()] == ["a.jpg", "b.jpg"] and ais.counted == 1
    assert ais.listed_remote == [False]
    assert source.read_many(["a.jpg", "b.jpg"]) == [b"a", b"b"] and source.reads.batch_requests == 1
    del ais.cached["b.jpg"]
    with pytest.raises(MissingFile, match="disappeared during conversion"):
        source.read_many(["a.jpg", "b.jpg"])
    assert source.reads.object_requests == 0
