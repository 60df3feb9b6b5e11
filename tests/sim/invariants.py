"""Invariants checked after every pass; each violation is `P<n> <kind>: <what>`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sharded_dataset_operator.core import guard, naming

from .model import FakeAis, FakeKube, Pods


def _epoch(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(slots=True)
class Published:
    version: str
    samples: int
    shards: frozenset[str]
    published_at: float


@dataclass
class Checker:
    """What readers rely on, tracked pass after pass from the stable indexes in the fake AIS."""

    ais: FakeAis
    kube: FakeKube
    pods: Pods
    bucket: str
    stable: str  # the dataset's stable index
    split_stables: dict[str, str]  # split -> its stable index
    retain: float
    uid: str
    max_attempts: int
    current: dict[str, Published] = field(default_factory=dict)  # stable index name -> what it names
    protected: dict[str, tuple[float, str]] = field(default_factory=dict)  # shard -> (kept until, whose)
    reported: set[str] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)  # versions status.artifacts has ever named
    violations: list[str] = field(default_factory=list)
    behind: dict[str, int] = field(default_factory=dict)  # split -> fault-free passes its stable index lagged
    pass_time: float = 0.0  # when the last pass ran (the clock moves on before `after_pass`)

    def flag(self, key: str, message: str) -> None:
        if key not in self.reported:
            self.reported.add(key)
            self.violations.append(message)

    def read(self, name: str) -> Published | str | None:
        """What a stable index names; "garbage" for an object that is not an index of this resource."""
        if name not in self.ais.buckets.get(self.bucket, {}):
            return None
        body = self.ais.load(self.bucket, name)
        info = body.get("info") if isinstance(body, dict) else None
        if not isinstance(info, dict) or info.get("uid") != self.uid:
            return "garbage"
        shards = frozenset(str(s["url"]) for s in body.get("shardlist") or [])
        at = _epoch(str(info["publishedAt"])) if info.get("publishedAt") else self.ais.clock.t
        return Published(str(info.get("version")), int(info.get("samples") or 0), shards, at)

    def after_pass(self) -> None:
        now = self.ais.clock.t
        for name in [self.stable, *self.split_stables.values()]:
            self.track(name, self.read(name), now)
        status = self.kube.obj.get("status") or {}
        self.recorded.update(str(r.get("version")) for r in status.get("artifacts") or [])
        check_in_use(self, now)
        check_published_counts(self)
        check_splits_agree(self)
        check_attempts(self)

    def track(self, name: str, seen: Published | str | None, now: float) -> None:
        before = self.current.get(name)
        if isinstance(seen, str):
            return  # a foreign object at the index name (an injected accident): readers get nothing useful
        if seen is None:
            if before is not None:
                self.flag(
                    f"idx-{name}-{before.version}",
                    f"P1 stable-index-deleted: {name} (naming version "
                    f"{before.version}) was deleted while readers use it",
                )
                self.current.pop(name)
                for s in before.shards:
                    self.protected[s] = (now + self.retain, f"{before.version} via {name}")
            return
        if before is None or before.version != seen.version:
            if before is not None:  # readers move at the switch, in the last pass: a split's stable index
                # repaired later than the version's publication, or a switch passes after its own index was written
                until = max(seen.published_at, self.pass_time) + self.retain
                for s in before.shards:
                    self.protected[s] = (until, f"replaced version {before.version} via {name}")
                if name == self.stable:
                    check_shrink(self, before, seen)
            self.current[name] = seen


def check_in_use(c: Checker, now: float) -> None:
    """P1: every shard a stable index names, and a replaced version's within its retention, still exists."""
    objects = c.ais.buckets.get(c.bucket, {})
    wanted = [(s, float("inf"), f"{p.version} via {n}") for n, p in c.current.items() for s in p.shards]
    wanted += [(s, until, whose) for s, (until, whose) in c.protected.items()]
    for shard, until, whose in sorted(wanted):
        if shard in objects:
            continue
        gone = c.ais.deleted.get((c.bucket, shard))
        if gone is None:
            c.flag(f"missing-{shard}", f"P3 missing-shard: {shard} ({whose}) is named but was never written")
        elif gone < until:
            by = c.ais.deleted_by.get((c.bucket, shard))
            c.flag(
                f"del-{whose}",
                f"P1 deleted-in-use by {by}: {shard} ({whose}) deleted while in use (kept until "
                f"{until - now:+.0f}s from now)",
            )
    for s in [s for s, (until, _) in c.protected.items() if until <= now]:
        del c.protected[s]


def check_published_counts(c: Checker) -> None:
    """P2/P3: the published version is not empty and holds the complete samples its plan found."""
    p = c.current.get(c.stable)
    if p is None:
        return
    if p.samples == 0:
        c.flag(f"empty-{p.version}", f"P2 empty-published: version {p.version} with 0 samples is published")
    planned = c.pods.planned.get(p.version)
    if planned is not None and planned != p.samples:
        c.flag(
            f"count-{p.version}",
            f"P3 wrong-count: version {p.version} published with {p.samples} samples, its plan found {planned}",
        )


def check_splits_agree(c: Checker) -> None:
    """P3: with splits, each split's stable index names the version the dataset's index names, once a pass
    without faults has run (a pass stopped between the switch and the splits' stable indexes leaves them one
    version behind; the next pass puts them right). The versions they name are kept (`check_in_use`)."""
    main = c.current.get(c.stable)
    for split, name in c.split_stables.items():
        p = c.current.get(name)
        if p is None or (main is not None and p.version == main.version):
            c.behind.pop(split, None)
            continue
        if c.ais.faults.on:
            continue
        c.behind[split] = c.behind.get(split, 0) + 1
        if c.behind[split] < 2:
            continue
        what = f"version {main.version}" if main else "no version"
        c.flag(
            f"split-{split}-{p.version}",
            f"P3 split-mismatch: split {split}'s stable index names version "
            f"{p.version} while the dataset's index names {what}",
        )


def check_shrink(c: Checker, before: Published, after: Published) -> None:
    """P4: a new version that drops more than 10 % of the published version's samples needs an approval."""
    approved = (c.kube.obj["metadata"].get("annotations") or {}).get(guard.APPROVE_ANNOTATION)
    if before.samples and after.samples < 0.9 * before.samples and approved != after.version:
        c.flag(
            f"shrink-{after.version}",
            f"P4 shrink: version {after.version} ({after.samples} samples) replaced "
            f"{before.version} ({before.samples} samples) without approval",
        )


def check_attempts(c: Checker) -> None:
    """P5: shuffle attempts stay within the budget, and no attempt is started again and again."""
    status: dict[str, Any] = c.kube.obj.get("status") or {}
    retry = status.get("retry") or {}
    records = []  # with splits the top-level fields only mirror the split being shuffled: each split is checked
    if not c.split_stables:
        records.append((None, status.get("shuffle") or {}, int(retry.get("shuffleAttemptBase") or 0)))
    bases = retry.get("shuffleAttemptBases") or {}
    for split, s in (status.get("splits") or {}).items():
        records.append((split, (s or {}).get("shuffle") or {}, int(bases.get(split) or 0)))
    for split, shuffle, base in records:
        attempt = int(shuffle.get("attempt") or 0)
        if attempt - base > c.max_attempts:
            where = f"split {split}" if split else "the dataset"
            c.flag(
                f"budget-{split}",
                f"P5 attempt-over-budget: {where} at shuffle attempt {attempt} (base {base}, "
                f"maxAttempts {c.max_attempts})",
            )
    for desc, n in c.ais.starts.items():
        if n > 3:
            c.flag(f"starts-{desc}", f"P5 dsort-restarted: dSort {desc} started {n} times")


_VERSION = re.compile(r"-(g[0-9]+(?:r[0-9a-f]{8})?)-")


def check_leaks(c: Checker) -> None:
    """P6 (end of run): no objects of a version the status no longer records (nothing would delete them)."""
    status = c.kube.obj.get("status") or {}
    live = {str(r.get("version")) for r in status.get("artifacts") or []}
    live.add(str(((status.get("versions") or {}).get("published") or {}).get("version")))
    tag = naming.uid_tag(c.uid)
    leaked: dict[str, int] = {}
    for name in c.ais.buckets.get(c.bucket, {}):
        m = _VERSION.search(name[name.find(tag) + len(tag) :] if tag in name else "")
        if m and m.group(1) not in live:
            version = m.group(1) + (" (only its dSort access probe)" if name.endswith("-access-probe") else "")
            leaked[version] = leaked.get(version, 0) + 1
    for version, n in sorted(leaked.items()):
        how = (
            "its record was dropped from status.artifacts"
            if version.split(" ")[0] in c.recorded
            else "its record never reached the status"
        )
        c.flag(f"leak-{version}", f"P6 leak ({how}): {n} objects of version {version} stay, nothing will delete them")
