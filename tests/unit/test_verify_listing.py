"""The verification listing: shards from a plain listing, members from one archive listing per shard (several at
once), counted exactly as one listing of the whole prefix would count them; what cannot be listed fails."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Entry, ListingError
from sharded_dataset_operator.core.verify import OutputTally
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


class ArchiveAis:
    """Lists like AIS: sorted names; with `archives`, each shard followed by its members (`shard.tar/member`)."""

    def __init__(self, content: dict[str, list[tuple[str, int]]], extra: tuple[str, ...] = ()) -> None:
        self.content = content
        self.extra = extra  # other objects under the prefix (not shards)
        self.gone: set[str] = set()  # shards deleted after the plain listing
        self.count_delta = 0
        self.archive_listings: list[str] = []
        self.concurrent = self.most_concurrent = 0
        self._lock = threading.Lock()

    def _entries(self, archives: bool) -> list[Listed]:
        out = [Listed(n, 1) for n in self.extra]
        for shard, members in self.content.items():
            out.append(Listed(shard, 512 * (1 + len(members)), f"sum-{shard[-10:-4]}"))
            if archives:
                out += [Listed(f"{shard}/{m}", size) for m, size in members]
        return sorted(out, key=lambda e: e.name)

    def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> list[Entry]:
        return [Entry(e.name, e.size) for e in self._entries(False) if e.name.startswith(prefix)]

    def list_pages(self, bucket: str, provider: str, prefix: str, **kw: Any) -> list[list[Listed]]:
        assert kw.get("archives") is True
        with self._lock:
            self.archive_listings.append(prefix)
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            rows = [e for e in self._entries(True) if e.name.startswith(prefix)]
            rows = [e for e in rows if e.name.partition(".tar")[0] + ".tar" not in self.gone]
            return [rows[i : i + 4] for i in range(0, len(rows), 4)]  # pages of 4
        finally:
            with self._lock:
                self.concurrent -= 1

    def object_count(self, bucket: str, provider: str = "ais", prefix: str = "") -> int:
        return sum(1 for e in self._entries(False) if e.name.startswith(prefix)) + self.count_delta

    def checksum_type(self, bucket: str, provider: str = "ais") -> str:
        return "xxhash2"


def one_listing(ais: ArchiveAis, only: frozenset[str] | None = None) -> OutputTally:
    """How the whole prefix counts in one archive listing (what the operator did before)."""
    tally = OutputTally(PREFIX, only)
    for page in ais.list_pages("b", "ais", PREFIX, archives=True):
        for e in page:
            tally.add(e.name, e.size, {"type": "xxhash2", "value": e.checksum} if e.checksum else None)
    return tally


def test_per_shard_listings_count_exactly_what_one_listing_counts() -> None:
    ais = ArchiveAis(shards(7))
    got = tally_output(ais, "b", "ais", PREFIX)  # type: ignore[arg-type]
    want = one_listing(ArchiveAis(shards(7)))
    assert got.shards == want.shards and got.totals == want.totals and not got.problems
    assert [s.name for s in got.shards] == sorted(ais.content)
    assert got.samples == 21 and got.totals.members == 42
    assert all(s.checksum == {"type": "xxhash2", "value": f"sum-{s.name[-10:-4]}"} for s in got.shards)
    assert sorted(ais.archive_listings) == sorted(ais.content)  # one archive listing per shard, no other
    assert ais.most_concurrent <= observation.VERIFY_LISTING_THREADS


def test_only_the_named_shards_are_listed_and_counted() -> None:
    content = shards(5)
    mine = frozenset(sorted(content)[1:3])
    ais = ArchiveAis(content)
    got = tally_output(ais, "b", "ais", PREFIX, mine)  # type: ignore[arg-type]
    assert [s.name for s in got.shards] == sorted(mine)
    assert got.totals == one_listing(ArchiveAis(content), mine).totals
    assert sorted(ais.archive_listings) == sorted(mine)


def test_a_shard_gone_before_its_members_are_listed_fails_the_listing() -> None:
    ais = ArchiveAis(shards(4))
    ais.gone.add(sorted(ais.content)[2])
    with pytest.raises(ListingError, match="does not show the shard"):
        tally_output(ais, "b", "ais", PREFIX)  # type: ignore[arg-type]


def test_a_listing_shorter_than_the_targets_count_fails() -> None:
    ais = ArchiveAis(shards(3))
    ais.count_delta = 1  # a target's objects missing from the listing
    with pytest.raises(ListingError, match="the cluster counts 4"):
        tally_output(ais, "b", "ais", PREFIX)  # type: ignore[arg-type]


def test_a_shard_whose_name_extends_another_is_not_counted_twice() -> None:
    content = shards(2)
    first = sorted(content)[0]
    content[first + "2.tar"] = [("z000000.cls", 5)]  # listed under the first shard's prefix too
    ais = ArchiveAis(content)
    got = tally_output(ais, "b", "ais", PREFIX)  # type: ignore[arg-type]
    assert got.totals == one_listing(ArchiveAis(content)).totals
    assert len(got.shards) == 3 and not got.problems


def test_more_shards_than_the_operator_counts_stop_the_listing_before_any_member_is_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(objcache, "MAX_LISTED", 3)

    class Streaming(ArchiveAis):
        read = 0

        def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> Any:
            for entry in super().list_objects(bucket, provider, prefix):
                self.read += 1
                yield entry

    ais = Streaming(shards(50))
    with pytest.raises(objcache.LimitExceeded, match="more than 3 output shards"):
        tally_output(ais, "b", "ais", PREFIX)  # type: ignore[arg-type]
    assert ais.read == 4  # the listing was left at the first shard too many, not read to its end
    assert ais.archive_listings == []


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
