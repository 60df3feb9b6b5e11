"""The JSON objects the operator reads from AIS (plan manifests, reports, progress objects, reused.json,
indexes), cached by their AIS checksum and shared by every reconcile pass thread.

Objects a dataset's pods wrote are its tenant's: the cache is bounded in bytes, in all and per namespace (the
namespace of the dataset a read is for), so one tenant's objects can neither push the operator out of memory
nor push another tenant's objects out of the cache. A read that needs more than a namespace's share at once is
a clear failure of that dataset (`LimitExceeded`), and a listed object that cannot be read as a JSON object is
one too (`ObjectUnreadable`), never taken for an absent one.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sharded_dataset_operator.clients.ais import BucketNotFound
from sharded_dataset_operator.runner.settings import SETTINGS


class LimitExceeded(Exception):
    """A dataset's objects in AIS (written by its pods, so by its tenant) are larger or more numerous than the
    operator reads: a clear failure of that dataset, never an operator that runs out of memory."""


class ObjectUnreadable(Exception):
    """An object the listing shows could not be read as a JSON object (not JSON, not an object, empty, or gone
    by the time it was read): never to be taken for an absent object."""

    def __init__(self, bucket: str, name: str, why: str, provider: str = "ais") -> None:
        super().__init__(f"{provider}://{bucket}/{name}: {why}")
        self.bucket, self.name, self.why, self.provider = bucket, name, why, provider


MAX_OBJECT_BYTES = 64 * 1024 * 1024  # a plan manifest, report, progress object, reused.json or index
MAX_OBJECTS = 10_000  # JSON objects under one prefix (reports and progress: one per worker)
MAX_LISTED = 500_000  # output shards counted in a verification, units held by the versions in a sweep
CACHE_BYTES = 96 * 1024 * 1024  # the objects cached, in all
CACHE_NAMESPACE_BYTES = 32 * 1024 * 1024  # ... of the datasets of one namespace (and what one read may need)

VANISHED = "listed but not found when read (retry)"

Key = tuple[str, str, str]  # endpoint, provider://bucket, object name


class ObjectSource(Protocol):
    """What the cache needs of an AIS client (`clients.ais.Ais`)."""

    endpoint: str

    def list_pages(self, bucket: str, provider: str = ..., prefix: str = ..., *, props: str = ...) -> Iterable[Any]:
        """Pages (lists) of entries with `name`, `size` and `checksum`."""

    def get(self, bucket: str, name: str, provider: str = ...) -> bytes | None:
        """The object's content, or None when it does not exist."""


@dataclass(slots=True)
class _Entry:
    checksum: str
    body: dict[str, Any]
    size: int  # bytes, as listed (or as read, when more)
    namespace: str  # of the dataset that read it last


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    bytes: int
    namespaces: dict[str, int]  # bytes held per namespace


def parse_object(data: bytes | None) -> dict[str, Any] | str:
    """The JSON object `data` holds, or why it holds none."""
    if data is None:
        return VANISHED
    if not data:
        return "empty: not a JSON object"
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; RecursionError: too deep
        return f"not JSON ({type(e).__name__}: {str(e)[:200]})"
    if not isinstance(body, dict):
        return f"JSON {type(body).__name__}, not a JSON object"
    return body


class ObjectCache:
    """JSON objects (plan, reports, progress) by name, re-read only when their AIS checksum changes.

    Thread-safe (one lock around the entries, never held during an AIS request). Bounded, least recently used
    first out: at most `limit` objects and `total_bytes` bytes in all, and `namespace_bytes` bytes for the
    datasets of one namespace (each object counted by its size in the listing). When a namespace holds more
    than its share its own least recently used objects go first; then, when the cache holds more than its
    total, the least recently used of all.

    What it reads is bounded too: an object is read only if the listing gives it at most `max_bytes`, at most
    `max_objects` under a prefix, and at most `namespace_bytes` (or `total_bytes`, when less) for one read,
    counting what is already cached of it (`LimitExceeded` otherwise; nothing is then read).
    """

    def __init__(
        self,
        limit: int = 4096,
        max_bytes: int = MAX_OBJECT_BYTES,
        max_objects: int = MAX_OBJECTS,
        *,
        total_bytes: int = CACHE_BYTES,
        namespace_bytes: int = CACHE_NAMESPACE_BYTES,
    ) -> None:
        self.limit, self.max_bytes, self.max_objects = limit, max_bytes, max_objects
        self.total_bytes, self.namespace_bytes = total_bytes, namespace_bytes
        self.reads = 0  # GETs done
        self._lock = threading.Lock()
        self._items: OrderedDict[Key, _Entry] = OrderedDict()  # least recently used first
        self._by_namespace: dict[str, OrderedDict[Key, None]] = {}  # the same order, per namespace
        self._held: dict[str, int] = {}  # bytes per namespace
        self._bytes = 0
        self._evictions = 0  # evict() calls so far: a read that overlaps one caches nothing it read

    # -- what it holds ------------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        return self.snapshot()[0]

    def entries(self) -> list[tuple[Key, str, int]]:
        """(key, namespace, size) of every cached object, least recently used first."""
        return self.snapshot()[1]

    def snapshot(self) -> tuple[CacheStats, list[tuple[Key, str, int]]]:
        """The recorded counts and the entries, at one moment."""
        with self._lock:
            entries = [(k, e.namespace, e.size) for k, e in self._items.items()]
            return CacheStats(len(self._items), self._bytes, dict(self._held)), entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # -- eviction -----------------------------------------------------------------------------------------

    def evict(self, ais: ObjectSource, bucket: str, provider: str, names: Iterable[str]) -> None:
        """Forget deleted objects (a sticky one would otherwise outlive its deletion)."""
        where = f"{provider}://{bucket}"
        with self._lock:
            self._evictions += 1
            for name in names:
                self._remove((ais.endpoint, where, name))

    def evict_prefix(self, ais: ObjectSource, bucket: str, provider: str, prefix: str, keep: str = "") -> None:
        """Forget every object under `prefix` (but `keep`)."""
        where = (ais.endpoint, f"{provider}://{bucket}")
        with self._lock:
            self._evictions += 1
            for key in [k for k in self._items if k[:2] == where and k[2].startswith(prefix) and k[2] != keep]:
                self._remove(key)

    # -- reading ------------------------------------------------------------------------------------------

    def read(
        self,
        ais: ObjectSource,
        bucket: str,
        provider: str,
        prefix: str,
        sticky: bool = False,
        *,
        namespace: str = "",
    ) -> dict[str, dict[str, Any]]:
        """Every JSON object under `prefix` (name -> content), for a dataset of `namespace`.

        An object the listing does not show is absent. One it shows but that is not a JSON object, or that is
        gone when read, raises `ObjectUnreadable`. `LimitExceeded` when the objects are too large or too many
        (see the class); nothing is read then.

        `sticky`: the objects are immutable once written (worker reports), so one seen before stays known
        even when a listing misses it (a target that holds it is down for a while).
        """
        where = (ais.endpoint, f"{provider}://{bucket}")
        with self._lock:
            epoch = self._evictions
        listed: dict[str, Any] = {}
        try:
            for page in ais.list_pages(bucket, provider, prefix, props="name,size,checksum"):
                for e in page:
                    listed[str(e.name)] = e
                if len(listed) > self.max_objects:
                    raise LimitExceeded(
                        f"more than {self.max_objects} objects under {provider}://{bucket}/{prefix}: the operator "
                        "reads at most that many"
                    )
        except BucketNotFound:
            listed = {}  # what is sticky stays known
        sizes = {name: int(e.size or 0) for name, e in listed.items()}
        for name, size in sizes.items():
            if size > self.max_bytes:
                raise LimitExceeded(
                    f"{provider}://{bucket}/{name} is {size} bytes; the operator reads objects of at most "
                    f"{self.max_bytes} bytes (it was not read)"
                )
        found: dict[str, dict[str, Any]] = {}
        misses: list[tuple[str, str]] = []  # name, checksum
        with self._lock:
            kept: list[tuple[Key, _Entry]] = []  # sticky objects the listing misses
            if sticky:
                kept = [
                    (k, e)
                    for k, e in self._items.items()
                    if k[:2] == where and k[2].startswith(prefix) and k[2] not in listed
                ]
            need = sum(sizes.values()) + sum(e.size for _, e in kept)
            bound = min(self.namespace_bytes, self.total_bytes)
            if need > bound:
                raise LimitExceeded(
                    f"the objects under {provider}://{bucket}/{prefix} ({len(listed) + len(kept)} of them) are "
                    f"{need} bytes in all; the operator holds at most {bound} bytes of one namespace's objects "
                    "at once (they were not read)"
                )
            hits: list[tuple[Key, _Entry]] = list(kept)
            for name, e in listed.items():
                key = (*where, name)
                checksum = str(e.checksum or "") or f"size:{sizes[name]}"
                hit = self._items.get(key)
                if hit is not None and hit.checksum == checksum:
                    hits.append((key, hit))
                else:
                    misses.append((name, checksum))
            for key, hit in hits:
                self._touch(key, hit, namespace)
                found[key[2]] = hit.body
            self._shrink(namespace)
        for name, checksum in misses:
            data = ais.get(bucket, name, provider)
            body = parse_object(data)
            with self._lock:
                self.reads += 1
            if isinstance(body, str):
                raise ObjectUnreadable(bucket, name, body, provider)
            assert data is not None
            if len(data) > self.max_bytes:  # rewritten larger since it was listed
                raise LimitExceeded(
                    f"{provider}://{bucket}/{name} is {len(data)} bytes; the operator reads objects of at most "
                    f"{self.max_bytes} bytes"
                )
            found[name] = body
            with self._lock:
                if self._evictions == epoch:  # else it may have been deleted since it was read: not cached
                    self._put((*where, name), _Entry(checksum, body, max(sizes[name], len(data)), namespace))
        return found

    # -- the entries (the lock held) ----------------------------------------------------------------------

    def _account(self, key: Key, entry: _Entry) -> None:
        self._by_namespace.setdefault(entry.namespace, OrderedDict())[key] = None
        self._held[entry.namespace] = self._held.get(entry.namespace, 0) + entry.size
        self._bytes += entry.size

    def _unaccount(self, key: Key, entry: _Entry) -> None:
        order = self._by_namespace[entry.namespace]
        del order[key]
        self._held[entry.namespace] -= entry.size
        if not order:
            del self._by_namespace[entry.namespace], self._held[entry.namespace]
        self._bytes -= entry.size

    def _remove(self, key: Key) -> None:
        entry = self._items.pop(key, None)
        if entry is not None:
            self._unaccount(key, entry)

    def _touch(self, key: Key, entry: _Entry, namespace: str) -> None:
        """`entry` used now, by a dataset of `namespace` (which holds it from now on)."""
        if self._items.get(key) is not entry:
            return  # evicted meanwhile (by another thread): its content is still the right answer
        if entry.namespace != namespace:
            self._unaccount(key, entry)
            entry.namespace = namespace
            self._account(key, entry)
        self._items.move_to_end(key)
        self._by_namespace[namespace].move_to_end(key)

    def _put(self, key: Key, entry: _Entry) -> None:
        self._remove(key)
        self._items[key] = entry
        self._account(key, entry)
        self._shrink(entry.namespace)

    def _shrink(self, namespace: str) -> None:
        """Least recently used out: of `namespace` while it holds more than its share, then of all."""
        order = self._by_namespace.get(namespace)
        while order and self._held[namespace] > self.namespace_bytes:
            self._remove(next(iter(order)))
        while self._items and (self._bytes > self.total_bytes or len(self._items) > self.limit):
            self._remove(next(iter(self._items)))


CACHE = ObjectCache(
    max_bytes=SETTINGS.max_object_bytes,
    total_bytes=SETTINGS.cache_bytes,
    namespace_bytes=SETTINGS.cache_namespace_bytes,
)
