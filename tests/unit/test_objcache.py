"""The JSON object cache (objcache.ObjectCache): shared by the pass threads, bounded in bytes in all and per
namespace, and failing closed on a listed object it cannot read (promises P2 and P6)."""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import BucketNotFound
from sharded_dataset_operator.runner import objcache, observation, settings
from sharded_dataset_operator.runner.objcache import VANISHED, LimitExceeded, ObjectCache, ObjectUnreadable


class FakeAis:
    """A bucket in memory: the listing gives each object's size (`sizes` may claim another one, as a large
    object would have, without the test holding its bytes) and a checksum of its content."""

    endpoint = "http://ais"

    def __init__(self, page: int = 2) -> None:
        self.objects: dict[str, bytes] = {}
        self.sizes: dict[str, int] = {}
        self.hidden: set[str] = set()  # left out of the listing (a target down)
        self.vanished: set[str] = set()  # listed, but gone when read
        self.gets: list[str] = []
        self.page = page
        self.missing_bucket = False
        self.lock = threading.Lock()

    def put(self, name: str, body: Any, size: int | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        with self.lock:
            self.objects[name] = data
            if size is not None:
                self.sizes[name] = size

    def list_pages(
        self, bucket: str, provider: str = "ais", prefix: str = "", *, props: str = "name,size"
    ) -> Iterator[list[Any]]:
        if self.missing_bucket:
            raise BucketNotFound(f"bucket {provider}://{bucket} not found")
        with self.lock:
            entries = [
                SimpleNamespace(name=n, size=self.sizes.get(n, len(d)), checksum=hashlib.md5(d).hexdigest())
                for n, d in sorted(self.objects.items())
                if n.startswith(prefix) and n not in self.hidden
            ]
        for i in range(0, len(entries), self.page):
            yield entries[i : i + self.page]

    def get(self, bucket: str, name: str, provider: str = "ais") -> bytes | None:
        with self.lock:
            self.gets.append(name)
            return None if name in self.vanished else self.objects.get(name)


def names(cache: ObjectCache) -> list[str]:
    return [key[2] for key, _, _ in cache.entries()]


def consistent(cache: ObjectCache) -> None:
    """The recorded bytes, in all and per namespace, are those of the entries held, and within the bounds."""
    stats, entries = cache.snapshot()
    assert stats.entries == len(entries) <= cache.limit
    assert stats.bytes == sum(size for _, _, size in entries) <= cache.total_bytes
    held: dict[str, int] = {}
    for _, namespace, size in entries:
        held[namespace] = held.get(namespace, 0) + size
    assert stats.namespaces == held
    assert all(b <= cache.namespace_bytes for b in held.values()), held


def test_an_object_is_read_once_and_again_only_when_its_checksum_changes() -> None:
    ais, cache = FakeAis(), ObjectCache()
    ais.put("b-plan.json", {"v": 1})
    assert cache.read(ais, "out", "ais", "b-plan.json") == {"b-plan.json": {"v": 1}}
    assert cache.read(ais, "out", "ais", "b-plan.json") == {"b-plan.json": {"v": 1}}
    assert ais.gets == ["b-plan.json"] and cache.reads == 1
    ais.put("b-plan.json", {"v": 2})
    assert cache.read(ais, "out", "ais", "b-plan.json") == {"b-plan.json": {"v": 2}}
    assert ais.gets == ["b-plan.json"] * 2
    consistent(cache)


def test_the_total_bound_evicts_the_least_recently_used_objects() -> None:
    ais, cache = FakeAis(), ObjectCache(total_bytes=300, namespace_bytes=300)
    for n in "abcd":
        ais.put(f"{n}.json", {"n": n}, size=100)
    for n in "abc":
        cache.read(ais, "out", "ais", f"{n}.json")
    assert cache.stats().bytes == 300
    cache.read(ais, "out", "ais", "a.json")  # a used again: b is now the least recently used
    cache.read(ais, "out", "ais", "d.json")
    assert names(cache) == ["c.json", "a.json", "d.json"]
    assert cache.stats().bytes == 300
    ais.gets.clear()
    cache.read(ais, "out", "ais", "b.json")
    cache.read(ais, "out", "ais", "d.json")
    assert ais.gets == ["b.json"]  # b was forgotten, d was not
    consistent(cache)


def test_the_entry_count_stays_bounded_too() -> None:
    ais, cache = FakeAis(), ObjectCache(limit=3)
    for i in range(5):
        ais.put(f"{i}.json", {"i": i})
        cache.read(ais, "out", "ais", f"{i}.json")
    assert names(cache) == ["2.json", "3.json", "4.json"]
    consistent(cache)


def test_a_namespace_over_its_share_loses_its_own_objects_first_then_the_cache_its_oldest() -> None:
    ais, cache = FakeAis(), ObjectCache(total_bytes=300, namespace_bytes=200)
    for n in ("y1", "x1", "x2", "x3", "z1"):
        ais.put(f"{n}.json", {}, size=100)
    cache.read(ais, "out", "ais", "y1.json", namespace="t2")  # the oldest of all
    for n in ("x1", "x2", "x3"):
        cache.read(ais, "out", "ais", f"{n}.json", namespace="t1")
    # t1 went over its 200 bytes: its own oldest went, not t2's older object
    assert names(cache) == ["y1.json", "x2.json", "x3.json"]
    assert cache.stats().namespaces == {"t1": 200, "t2": 100}
    cache.read(ais, "out", "ais", "z1.json", namespace="t3")  # 400 bytes in all: the oldest of all goes
    assert names(cache) == ["x2.json", "x3.json", "z1.json"]
    assert cache.stats().namespaces == {"t1": 200, "t3": 100}
    consistent(cache)


def test_an_object_read_for_another_namespace_is_held_by_that_namespace() -> None:
    ais, cache = FakeAis(), ObjectCache(total_bytes=1000, namespace_bytes=200)
    for n in ("a", "b", "c"):
        ais.put(f"{n}.json", {}, size=100)
    cache.read(ais, "out", "ais", "a.json", namespace="t1")
    cache.read(ais, "out", "ais", "b.json", namespace="t2")
    cache.read(ais, "out", "ais", "c.json", namespace="t2")
    cache.read(ais, "out", "ais", "a.json", namespace="t2")  # a hit, now t2's: t2 holds 300, its oldest goes
    assert names(cache) == ["c.json", "a.json"]
    assert cache.stats().namespaces == {"t2": 200}
    consistent(cache)


def test_a_read_over_the_namespace_share_fails_that_dataset_and_no_other() -> None:
    ais, cache = FakeAis(), ObjectCache(total_bytes=1000, namespace_bytes=250)
    for i in range(3):
        ais.put(f"a-report-w{i:04d}.json", {"worker": i}, size=100)
    for i in range(2):
        ais.put(f"b-report-w{i:04d}.json", {"worker": i}, size=100)
    with pytest.raises(LimitExceeded, match=r"ais://out/a-report- \(3 of them\) are 300 bytes.* at most 250 bytes"):
        cache.read(ais, "out", "ais", "a-report-", sticky=True, namespace="greedy")
    assert ais.gets == [] and len(cache) == 0  # nothing was read
    got = cache.read(ais, "out", "ais", "b-report-", sticky=True, namespace="other")
    assert sorted(got) == ["b-report-w0000.json", "b-report-w0001.json"]
    assert cache.stats().namespaces == {"other": 200}
    consistent(cache)


def test_the_share_counts_what_is_cached_of_the_read_already() -> None:
    ais, cache = FakeAis(), ObjectCache(total_bytes=1000, namespace_bytes=250)
    for i in range(2):
        ais.put(f"a-report-w{i:04d}.json", {"worker": i}, size=100)
    cache.read(ais, "out", "ais", "a-report-", sticky=True, namespace="t")
    # both now only sticky (a target is down), and a third report appears: 300 bytes at once
    ais.hidden = {"a-report-w0000.json", "a-report-w0001.json"}
    ais.put("a-report-w0002.json", {"worker": 2}, size=100)
    ais.gets.clear()
    with pytest.raises(LimitExceeded, match="300 bytes"):
        cache.read(ais, "out", "ais", "a-report-", sticky=True, namespace="t")
    ais.hidden = set()  # all listed: two cached hits and a new one, 300 bytes again
    with pytest.raises(LimitExceeded, match="300 bytes"):
        cache.read(ais, "out", "ais", "a-report-", sticky=True, namespace="t")
    assert ais.gets == []


def test_the_per_object_and_per_prefix_limits_still_hold() -> None:
    ais, cache = FakeAis(), ObjectCache(max_bytes=1000, max_objects=3)
    ais.put("b-report-w0099.json", {}, size=80 * 2**20)
    with pytest.raises(LimitExceeded, match=r"b-report-w0099.json is 83886080 bytes.*not read"):
        cache.read(ais, "out", "ais", "b-report-")
    for i in range(4):
        ais.put(f"b-progress-w{i:04d}.json", {})
    with pytest.raises(LimitExceeded, match="more than 3 objects"):
        cache.read(ais, "out", "ais", "b-progress-")
    assert ais.gets == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[1, 2]", "JSON list, not a JSON object"),
        (b'"text"', "JSON str, not a JSON object"),
        (b"null", "JSON NoneType, not a JSON object"),
        (b"", "empty"),
        (b"[" * 200_000 + b"]" * 200_000, "not JSON (RecursionError"),
    ],
)
def test_a_listed_object_that_is_not_a_json_object_is_unreadable_never_absent(content: bytes, why: str) -> None:
    ais, cache = FakeAis(), ObjectCache()
    ais.put("b-report-w0000.json", {"worker": 0})
    ais.put("b-report-w0001.json", content)
    with pytest.raises(ObjectUnreadable) as err:
        cache.read(ais, "out", "ais", "b-report-", sticky=True, namespace="t")
    assert (err.value.bucket, err.value.name) == ("out", "b-report-w0001.json")
    assert err.value.why.startswith(why), err.value.why
    assert "ais://out/b-report-w0001.json" in str(err.value)
    assert "b-report-w0001.json" not in names(cache)
    consistent(cache)


def test_an_object_gone_between_listing_and_reading_is_unreadable_and_one_never_listed_is_absent() -> None:
    ais, cache = FakeAis(), ObjectCache()
    ais.put("b-plan.json", {"v": 1})
    ais.vanished = {"b-plan.json"}
    with pytest.raises(ObjectUnreadable) as err:
        cache.read(ais, "out", "ais", "b-plan.json")
    assert err.value.why == VANISHED == "listed but not found when read (retry)"
    assert cache.read(ais, "out", "ais", "other.json") == {}
    ais.missing_bucket = True
    assert cache.read(ais, "out", "ais", "b-plan.json") == {}


def test_sticky_objects_outlive_a_listing_that_misses_them_but_not_their_eviction() -> None:
    ais, cache = FakeAis(), ObjectCache()
    for i in range(3):
        ais.put(f"b-report-w{i:04d}.json", {"worker": i})
    assert len(cache.read(ais, "out", "ais", "b-report-", sticky=True)) == 3
    ais.hidden = {"b-report-w0001.json"}
    assert len(cache.read(ais, "out", "ais", "b-report-", sticky=True)) == 3
    assert len(cache.read(ais, "out", "ais", "b-report-")) == 2  # not sticky: what the listing shows
    ais.missing_bucket = True
    assert len(cache.read(ais, "out", "ais", "b-report-", sticky=True)) == 3
    ais.missing_bucket = False
    cache.evict(ais, "out", "ais", ("b-report-w0001.json",))
    assert sorted(cache.read(ais, "out", "ais", "b-report-", sticky=True)) == [
        "b-report-w0000.json",
        "b-report-w0002.json",
    ]
    consistent(cache)


def test_evict_prefix_forgets_all_under_it_but_what_it_keeps() -> None:
    ais, cache = FakeAis(), ObjectCache()
    for n in ("s-g2-plan.json", "s-g2-index.json", "s-g3-plan.json"):
        ais.put(n, {}, size=10)
        cache.read(ais, "out", "ais", n, namespace="t")
    cache.evict_prefix(ais, "out", "ais", "s-g2-", keep="s-g2-index.json")
    assert names(cache) == ["s-g2-index.json", "s-g3-plan.json"]
    assert cache.stats().bytes == 20
    cache.evict_prefix(ais, "out", "other", "s-")  # another bucket: nothing
    assert len(cache) == 2
    consistent(cache)


def test_an_object_evicted_while_it_was_being_read_is_not_cached() -> None:
    ais, cache = FakeAis(), ObjectCache()
    ais.put("i.json", {"v": 1})
    get = ais.get

    def deleted_meanwhile(bucket: str, name: str, provider: str = "ais") -> bytes | None:
        data = get(bucket, name, provider)
        cache.evict(ais, bucket, provider, (name,))  # another thread deletes it and forgets it
        return data

    ais.get = deleted_meanwhile  # type: ignore[method-assign]
    assert cache.read(ais, "out", "ais", "i.json") == {"i.json": {"v": 1}}
    assert len(cache) == 0


def test_pass_threads_share_the_cache_safely() -> None:
    """8 threads read, re-read changed objects and evict on overlapping keys and namespaces; nothing fails and
    the byte accounting matches the entries at the end."""
    ais = FakeAis(page=3)
    cache = ObjectCache(limit=40, total_bytes=3_000, namespace_bytes=900)
    prefixes = [f"p{i}-" for i in range(10)]
    for p in prefixes:
        for w in range(4):
            ais.put(f"{p}report-w{w:04d}.json", {"worker": w}, size=50 + 25 * w)  # 50..125: 350 a prefix
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        start.wait()
        try:
            for i in range(4_000):
                p = rnd.choice(prefixes)
                op = rnd.random()
                namespace = f"t{rnd.randrange(4)}"
                if op < 0.6:
                    got = cache.read(ais, "out", "ais", p, sticky=rnd.random() < 0.5, namespace=namespace)
                    assert all(body["worker"] >= 0 for body in got.values())
                elif op < 0.75:
                    name = f"{p}report-w{rnd.randrange(4):04d}.json"
                    ais.put(name, {"worker": rnd.randrange(4), "i": i})  # rewritten: a new checksum
                elif op < 0.9:
                    cache.evict(ais, "out", "ais", (f"{p}report-w{rnd.randrange(4):04d}.json",))
                else:
                    cache.evict_prefix(ais, "out", "ais", p, keep=f"{p}report-w0000.json")
                if i % 100 == 0:
                    consistent(cache)
        except BaseException as e:  # collected: the main thread fails the test
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [], errors[:3]
    consistent(cache)
    assert cache.reads > 0 and len(cache) > 0


def test_the_bounds_come_from_the_settings_and_the_old_names_still_import() -> None:
    s = settings.from_env({"SDS_CACHE_BYTES": "1000", "SDS_CACHE_NAMESPACE_BYTES": "100"})
    assert (s.cache_bytes, s.cache_namespace_bytes) == (1000, 100)
    d = settings.from_env({})
    assert (d.cache_bytes, d.cache_namespace_bytes) == (96 * 2**20, 32 * 2**20)
    assert objcache.CACHE.total_bytes == settings.SETTINGS.cache_bytes
    assert objcache.CACHE.namespace_bytes == settings.SETTINGS.cache_namespace_bytes
    assert objcache.CACHE.max_bytes == settings.SETTINGS.max_object_bytes
    assert objcache.CACHE is objcache.CACHE
    assert objcache.LimitExceeded is LimitExceeded and objcache.ObjectUnreadable is ObjectUnreadable
    assert objcache.ObjectCache is ObjectCache
    assert (objcache.MAX_OBJECT_BYTES, objcache.MAX_OBJECTS, objcache.MAX_LISTED) == (
        objcache.MAX_OBJECT_BYTES,
        objcache.MAX_OBJECTS,
        objcache.MAX_LISTED,
    )


def test_read_json_reads_for_the_namespace_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    ais, cache = FakeAis(), ObjectCache()
    monkeypatch.setattr(objcache, "CACHE", cache)
    ais.put("i.json", {"info": {}}, size=100)
    assert observation.read_json(ais, "out", "ais", "i.json", namespace="ml") == {"info": {}}  # type: ignore[arg-type]
    assert observation.read_json(ais, "out", "ais", "none.json") is None  # type: ignore[arg-type]
    assert cache.stats().namespaces == {"ml": 100}
    ais.put("bad.json", b"[]")
    with pytest.raises(ObjectUnreadable):
        observation.read_json(ais, "out", "ais", "bad.json")  # type: ignore[arg-type]
