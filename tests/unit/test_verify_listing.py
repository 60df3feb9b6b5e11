"""The verification count: shards from a plain listing, members from each shard's own bytes or from AIS's
archive listing of each shard (several shards at once), counted exactly as one archive listing of the whole
prefix counts them; what cannot be read or listed fails; the way is chosen by the members' mean size."""

from __future__ import annotations

import io
import random
import tarfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import ListingError, MissingObject
from sharded_dataset_operator.core.verify import READ_MEMBER_BYTES, OutputTally, Totals, compare, counted_from_bytes
from sharded_dataset_operator.runner import objcache, observation
from sharded_dataset_operator.runner.observation import tally_output

PREFIX = "out-5f3a9c1e00004000-g1-a1-"


class Listed:
    def __init__(self, name: str, size: int, checksum: str = "") -> None:
        self.name, self.size, self.checksum = name, size, checksum


def shards(count: int, samples: int = 3) -> dict[str, list[tuple[str, int]]]:
    """Shard name -> its members (key.ext, size), keys unique across shards."""
    out: dict[str, list[tuple[str, int]]] = {}
    for s in range(count):
        out[f"{PREFIX}{s:06d}.tar"] = [
            (f"k{s:03d}{i:03d}.{ext}", 100 * s + 10 * i + len(ext)) for i in range(samples) for ext in ("cls", "jpg")
        ]
    return out


def tar_bytes(members: list[tuple[str, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes([len(name) % 251]) * size))
    return out.getvalue()


class ShardStore:
    """Lists and serves shards as AIS does: a plain listing in name order (size and checksum), an archive listing
    (each shard, then its members sorted by name), and each shard's bytes, a real tar of its members, as a
    stream of odd-sized chunks."""

    def __init__(self, content: dict[str, list[tuple[str, int]]], extra: tuple[str, ...] = ()) -> None:
        self.content = content
        self.extra = extra  # other objects under the prefix (not shards)
        self.gone: set[str] = set()  # shards deleted after the listing
        self.replaced: dict[str, bytes] = {}  # shards whose bytes changed after the listing
        self.count_delta = 0
        self.listed = 0
        self.reads: list[str] = []
        self.concurrent = self.most_concurrent = 0
        self._lock = threading.Lock()

    def data(self, shard: str) -> bytes:
        return tar_bytes(self.content[shard])

    def list_pages(self, bucket: str, provider: str, prefix: str, **kw: Any) -> Iterator[list[Listed]]:
        archives = bool(kw.get("archives"))
        rows = [Listed(n, 1) for n in self.extra]
        for s in self.content:
            if archives and s in self.gone:
                continue
            rows.append(Listed(s, len(self.data(s)), f"sum-{s[-10:-4]}"))
            rows += [Listed(f"{s}/{m}", size) for m, size in self.content[s]] if archives else []
        rows = sorted((e for e in rows if e.name.startswith(prefix)), key=lambda e: e.name)
        if archives:
            self.count_reader(prefix)
        try:
            for i in range(0, len(rows), 4):  # pages of 4
                self.listed += len(rows[i : i + 4])
                yield rows[i : i + 4]
        finally:
            if archives:
                self.count_reader(None)

    def count_reader(self, shard: str | None) -> None:
        with self._lock:
            if shard is not None:
                self.reads.append(shard)
                self.concurrent += 1
                self.most_concurrent = max(self.most_concurrent, self.concurrent)
            else:
                self.concurrent -= 1

    def stream_chunks(self, bucket: str, name: str, provider: str = "ais", chunk_size: int = 0) -> Iterator[bytes]:
        if name in self.gone:
            raise MissingObject(name)
        self.count_reader(name)
        try:
            data = self.replaced.get(name) or self.data(name)
            for i in range(0, len(data), 700):
                yield data[i : i + 700]
        finally:
            self.count_reader(None)

    def object_count(self, bucket: str, provider: str = "ais", prefix: str = "") -> int:
        names = [*self.extra, *self.content]
        return sum(1 for n in names if n.startswith(prefix)) + self.count_delta

    def checksum_type(self, bucket: str, provider: str = "ais") -> str:
        return "xxhash2"


def archive_listing(store: ShardStore, only: frozenset[str] | None = None) -> OutputTally:
    """How AIS's archive listing of the whole prefix counts (each shard, then its members sorted by name): what
    the operator counted before it read the bytes."""
    tally = OutputTally(PREFIX, only)
    for shard in sorted(store.content):
        tally.add(shard, len(store.data(shard)), {"type": "xxhash2", "value": f"sum-{shard[-10:-4]}"})
        for member, size in sorted(store.content[shard]):
            tally.add(f"{shard}/{member}", size)
    return tally


@pytest.mark.parametrize("from_bytes", [True, False])
def test_each_shard_counted_alone_counts_exactly_what_one_archive_listing_counts(from_bytes: bool) -> None:
    store = ShardStore(shards(7))
    got = tally_output(store, "b", "ais", PREFIX, from_bytes=from_bytes)  # type: ignore[arg-type]
    want = archive_listing(ShardStore(shards(7)))
    assert got.shards == want.shards and got.totals == want.totals and not got.problems
    assert [s.name for s in got.shards] == sorted(store.content)
    assert got.samples == 21 and got.totals.members == 42
    assert all(s.checksum == {"type": "xxhash2", "value": f"sum-{s.name[-10:-4]}"} for s in got.shards)
    assert sorted(store.reads) == sorted(store.content)  # each shard read or listed once, nothing else
    assert store.most_concurrent <= observation.VERIFY_THREADS


@pytest.mark.parametrize("from_bytes", [True, False])
def test_only_the_named_shards_are_counted(from_bytes: bool) -> None:
    content = shards(5)
    mine = frozenset(sorted(content)[1:3])
    store = ShardStore(content)
    got = tally_output(store, "b", "ais", PREFIX, mine, from_bytes=from_bytes)  # type: ignore[arg-type]
    assert [s.name for s in got.shards] == sorted(mine)
    assert got.totals == archive_listing(ShardStore(content), mine).totals
    assert sorted(store.reads) == sorted(mine)


def test_a_shard_gone_before_it_is_read_fails_the_listing() -> None:
    store = ShardStore(shards(4))
    store.gone.add(sorted(store.content)[2])
    with pytest.raises(ListingError, match="was listed but is gone"):
        tally_output(store, "b", "ais", PREFIX, from_bytes=True)  # type: ignore[arg-type]


def test_a_shard_gone_before_its_archive_listing_fails_the_listing() -> None:
    store = ShardStore(shards(4))
    store.gone.add(sorted(store.content)[2])
    with pytest.raises(ListingError, match="shows the shard 0 times"):
        tally_output(store, "b", "ais", PREFIX)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", ["cut short", "grown"])
def test_a_shard_whose_bytes_changed_after_the_listing_fails_the_listing(change: str) -> None:
    store = ShardStore(shards(3))
    shard = sorted(store.content)[1]
    good = store.data(shard)
    store.replaced[shard] = good[: len(good) // 2] if change == "cut short" else good + bytes(10240)
    with pytest.raises(ListingError, match=f"{shard} was listed with .* bytes but .* were read"):
        tally_output(store, "b", "ais", PREFIX, from_bytes=True)  # type: ignore[arg-type]


def test_a_shard_that_reads_whole_but_is_no_tar_is_a_problem_that_fails_verification() -> None:
    store = ShardStore(shards(3))
    shard = sorted(store.content)[1]
    good = store.data(shard)
    store.replaced[shard] = good[:512] + b"x" * (len(good) - 512)  # the first member's data runs over its end
    got = tally_output(store, "b", "ais", PREFIX, from_bytes=True)  # type: ignore[arg-type]
    assert len(got.problems) == 1 and got.problems[0].startswith(f"{shard} is not a whole tar archive")
    want = archive_listing(ShardStore(shards(3)))
    assert compare(want.samples, want.totals, got) == got.problems[0]


def test_a_sample_split_apart_inside_a_shard_counts_as_a_reader_would_see_it() -> None:
    """WebDataset readers group adjacent members by key: `a.cls, b.cls, a.jpg` are three samples to them, and
    reading the bytes counts three (an archive listing, sorted by name, showed two)."""
    content = {f"{PREFIX}000000.tar": [("a.cls", 1), ("b.cls", 1), ("a.jpg", 9), ("b.jpg", 9)]}
    got = tally_output(ShardStore(content), "b", "ais", PREFIX, from_bytes=True)  # type: ignore[arg-type]
    assert got.samples == 4 and got.totals.members == 4
    assert compare(2, archive_listing(ShardStore(content)).totals, got) == "hold 4 samples but the converters wrote 2"


@pytest.mark.parametrize("from_bytes", [True, False])
def test_a_listing_shorter_than_the_targets_count_fails(from_bytes: bool) -> None:
    store = ShardStore(shards(3))
    store.count_delta = 1  # a target's objects missing from the listing
    with pytest.raises(ListingError, match="the cluster counts 4"):
        tally_output(store, "b", "ais", PREFIX, from_bytes=from_bytes)  # type: ignore[arg-type]


@pytest.mark.parametrize("from_bytes", [True, False])
def test_a_shard_whose_name_extends_another_is_not_counted_twice(from_bytes: bool) -> None:
    content = shards(2)
    first = sorted(content)[0]
    content[first + "2.tar"] = [("z000000.cls", 5)]  # listed under the first shard's prefix too
    got = tally_output(ShardStore(content), "b", "ais", PREFIX, from_bytes=from_bytes)  # type: ignore[arg-type]
    assert got.totals == archive_listing(ShardStore(content)).totals
    assert len(got.shards) == 3 and not got.problems


def test_more_shards_than_the_operator_counts_stop_the_listing_before_any_shard_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(objcache, "MAX_LISTED", 3)
    store = ShardStore(shards(50))
    with pytest.raises(objcache.LimitExceeded, match="more than 3 output shards"):
        tally_output(store, "b", "ais", PREFIX, from_bytes=True)  # type: ignore[arg-type]
    assert store.listed == 4  # the listing was left at the page of the first shard too many, not read to its end
    assert store.reads == []


@pytest.mark.parametrize("seed", range(5))
def test_adding_a_shards_members_at_once_counts_what_adding_each_entry_counts(seed: int) -> None:
    rng = random.Random(seed)
    one, batched = OutputTally(PREFIX), OutputTally(PREFIX)
    for s in range(3):
        shard = f"{PREFIX}{s:06d}.tar"
        members = sorted(
            (f"k{rng.randrange(40):03d}.{rng.choice(['cls', 'jpg', 'json'])}", rng.randrange(10_000))
            for _ in range(rng.randrange(1, 30))
        )
        for tally in (one, batched):
            tally.add(shard, 512, None)
        for name, size in members:
            one.add(f"{shard}/{name}", size)
        cut = rng.randrange(len(members) + 1)  # in two pages: a sample may span them
        batched.add_members(shard, iter(members[:cut]))
        batched.add_members(shard, iter(members[cut:]))
    assert batched.shards == one.shards and batched.totals == one.totals
    assert batched.samples == one.samples > 0 and not batched.problems


def test_members_added_before_their_shard_are_a_problem_as_entries_are() -> None:
    tally = OutputTally(PREFIX)
    tally.add_members(f"{PREFIX}000000.tar", iter([("k1.cls", 1)]))
    assert tally.problems == [f"member {PREFIX}000000.tar/k1.cls listed outside its shard"]
    assert tally.totals.members == 0


def test_small_members_are_counted_from_the_bytes_and_large_ones_from_the_archive_listing() -> None:
    assert counted_from_bytes(Totals(members=3_000, member_bytes=3_000 * 1_100))  # synthetic ImageNet: ~1 KiB
    assert counted_from_bytes(Totals(members=10, member_bytes=10 * READ_MEMBER_BYTES))
    assert not counted_from_bytes(Totals(members=10, member_bytes=10 * READ_MEMBER_BYTES + 1))
    assert not counted_from_bytes(Totals(members=3, member_bytes=3 * 110_000))  # ImageNet's JPEGs: ~110 KB
    assert not counted_from_bytes(Totals())  # nothing written: nothing to read
