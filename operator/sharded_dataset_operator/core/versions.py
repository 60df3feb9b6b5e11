"""The version lifecycle (pure): which version is published, which one is built, which old ones are kept.

A *version* is one complete build of the dataset (`naming.version_id`: the generation, plus the refresh
annotation's value when one asked for a rebuild of an unchanged spec). Like a Deployment's ReplicaSets:

    building ──verified──► published ──next version published──► previous ──retainPrevious──► deleted
       │                                                    (readers of its own index keep working)
       └── superseded before it was published (a newer spec or refresh value) ──► deleted at once

What is published is observed, never remembered: it is the version the stable index
(`<prefix>index.json`) names, and publishing is the single PUT of that object, the last step of a build.
Each version also gets its own index (`<prefix><uid16>-<v>-index.json`), written once just before, which
records when it was published and where the version wrote (its artifacts record). A previous version is
kept until `retainPrevious` after the version that replaced it was published; the replacement time is the
publish time of the next newer index that still exists, else the published version's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core import naming
from sharded_dataset_operator.core.times import epoch, iso, parse

REFRESH_ANNOTATION = "shardeddataset.dev/refresh"
"""Set to any new value to build a new version from the current source without changing the spec."""

DEFAULT_RETAIN_SECONDS = 3600.0


def parse_url(url: str) -> tuple[str, str, str] | None:
    """(bucket, provider, name) of an index URL `provider://bucket/name` (None: not one)."""
    provider, sep, rest = url.partition("://")
    bucket, slash, name = rest.partition("/")
    if not (sep and slash and provider and bucket and name):
        return None
    return bucket, provider, name


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """What a version's index says about it (its `info` block)."""

    version: str
    generation: int
    refresh: str
    published_at: str
    samples: int
    shards: int
    bytes: int
    index: str  # URL of the version's own index, ais://bucket/name
    record: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Any] = field(default_factory=dict)  # per split: index, versionIndex, samples, shards, bytes
    replaces: str = ""  # the version the stable index named when this one's index was written
    # the other versions split stable indexes named then (lagging behind the stable index): replaced by this one too
    replaces_splits: tuple[str, ...] = ()
    source_fingerprint: str = ""  # the listing the version was planned from (`core.fingerprint`)

    @classmethod
    def from_index(cls, body: dict[str, Any] | None, uid: str) -> IndexInfo | None:
        """The info of an index object written by this resource (`uid`); None for anything else."""
        info = (body or {}).get("info") or {}
        if not isinstance(info, dict) or info.get("uid") != uid:
            return None
        generation = int(info.get("generation") or 0)
        shardlist = (body or {}).get("shardlist") or []
        raw_splits = info.get("splits")
        splits: dict[str, Any] = raw_splits if isinstance(raw_splits, dict) else {}
        shards = len(shardlist) + sum(int((s or {}).get("shards") or 0) for s in splits.values())
        nbytes = sum(int(s.get("filesize") or 0) for s in shardlist)
        nbytes += sum(int((s or {}).get("bytes") or 0) for s in splits.values())
        return cls(
            version=str(info.get("version") or f"g{generation}"),
            generation=generation,
            refresh=str(info.get("refresh") or ""),
            published_at=str(info.get("publishedAt") or ""),
            samples=int(info.get("samples") or 0),
            shards=shards,
            bytes=nbytes,
            index=str(info.get("versionIndex") or ""),
            record=dict(info.get("artifacts") or {}),
            splits=dict(splits),
            replaces=str(info.get("replaces") or ""),
            replaces_splits=_versions_named(info.get("replacesSplits")),
            source_fingerprint=str(info.get("sourceFingerprint") or ""),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "generation": self.generation,
            "refresh": self.refresh or None,
            "index": self.index or None,
            "samples": self.samples,
            "shards": self.shards,
            "bytes": self.bytes,
            "publishedAt": self.published_at or None,
            "indexMissing": None,  # (the status is merge-patched: a flag of an earlier pass is cleared)
        }


def index_owner_conflict(body: dict[str, Any] | None, namespace: str, name: str, uid: str) -> str | None:
    """Why this resource may not write the stable index `body` (None: it may; also when there is none).

    An index written for another resource (another namespace or name) is never overwritten: two datasets
    whose output prefixes meet would otherwise publish over each other, and each one's readers would read the
    other's shards. An index of an earlier resource of the same namespace and name (deleted with
    `deletionPolicy: Retain`, then created again) is taken over.
    """
    if body is None:
        return None
    raw = body.get("info")
    info: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if info.get("uid") == uid:
        return None
    owner_ns, owner_name = info.get("namespace"), info.get("resource")
    if owner_ns == namespace and owner_name == name:
        return None
    if owner_ns and owner_name:
        who = f"ShardedDataset {owner_ns}/{owner_name} (uid {info.get('uid')})"
    else:
        who = "something other than a ShardedDataset"
    return f"the output's stable index is already written by {who}; choose another output prefix or bucket"


def desired_refresh(annotation: str | None, generation: int, published: IndexInfo | None) -> str:
    """The refresh value the wanted version is built for.

    A new annotation value asks for a new version. An absent annotation asks for nothing: whatever is published
    for this generation stays (removing the annotation while a refresh builds cancels that build).
    """
    if annotation:
        return annotation
    if published is not None and published.generation == generation:
        return published.refresh
    return ""


@dataclass(slots=True)
class Retention:
    """What to do with every version that is neither wanted nor published."""

    keep: list[dict[str, Any]] = field(default_factory=list)  # artifacts records that stay
    retire: list[dict[str, Any]] = field(default_factory=list)  # previous versions whose time has come
    abandon: list[dict[str, Any]] = field(default_factory=list)  # superseded before being published
    previous: list[dict[str, Any]] = field(default_factory=list)  # status.versions.previous entries
    next_deadline: float | None = None  # seconds until the earliest kept previous version is due


def _versions_named(value: Any) -> tuple[str, ...]:
    """The versions of an index's `replacesSplits` ({split: version}), sorted; nothing for anything else."""
    return tuple(sorted({str(v) for v in value.values() if v})) if isinstance(value, dict) else ()


def plan_retention(
    wanted: str,
    published: IndexInfo | None,
    records: Iterable[dict[str, Any]],
    indexes: dict[str, IndexInfo],
    now: str,
    retain_seconds: float,
    known: dict[str, str | None] | None = None,
    in_use: Iterable[str] = (),
    last_in_use: dict[str, str] | None = None,
) -> Retention:
    """Sort the artifacts records of every version into kept, retired (deleted now) and abandoned.

    `indexes`: the versions whose own index exists (they were published at some point), by version id.
    `known`: the versions the last status said were published or kept (version -> its deleteAfter, None for
    the published one). One of them whose own index is not seen now is never taken for "never published"
    (promise P2): it is kept until its recorded deleteAfter (or `retain_seconds` from now), then retired.
    `in_use`: the versions a stable index (the main one or a split's) names now; `last_in_use`: when the last
    status saw each kept version so named (its `lastInUse`). A stable index can move to a version later than
    that version's publication (a switch cut short and repaired by a later pass, or made passes after the
    version's own index was written): its readers move then, so the version they leave is kept until
    `retain_seconds` after the last pass that saw it named (promise P1).
    """
    out = Retention()
    now_t = parse(now)
    used = set(in_use)
    last_seen = {v: t for v, when in (last_in_use or {}).items() if (t := epoch(when)) is not None}
    for version in used:
        last_seen[version] = now_t

    def held(version: str, due: float) -> tuple[float, dict[str, Any]]:
        """The deadline with its last use counted, and the entry's field saying so."""
        seen_at = last_seen.get(version)
        return (due, {}) if seen_at is None else (max(due, seen_at + retain_seconds), {"lastInUse": iso(seen_at)})

    published_times = sorted(
        {parse(i.published_at) for i in [*indexes.values(), *([published] if published else [])] if i.published_at}
    )
    # A version is replaced when the stable index switches away from it: by the newest version written to replace
    # it (a build whose index was written but whose switch never happened is older than the one that switched)
    replaced_at: dict[str, float] = {}
    for i in [*indexes.values(), *([published] if published else [])]:
        for gone in {i.replaces, *i.replaces_splits} - {""} if i.published_at else ():
            replaced_at[gone] = max(replaced_at.get(gone, 0.0), parse(i.published_at))

    def settle(record: dict[str, Any], version: str, info: IndexInfo | None, due: float) -> None:
        """Retire the version when `due` has passed (its last use counted), else keep it with its entry."""
        due, last = held(version, due)
        if due <= now_t:
            out.retire.append(record)
            return
        out.keep.append(record)
        generation = info.generation if info is not None else int(record.get("generation") or 0)
        entry = {"version": version, "generation": generation, "index": (info.index or None) if info else None,
                 "deleteAfter": iso(due), **({} if info else {"indexMissing": True}), **last}  # fmt: skip
        out.previous.append(entry)
        wait = due - now_t
        out.next_deadline = wait if out.next_deadline is None else min(out.next_deadline, wait)

    seen: set[str] = set()
    for record in records:
        version = record_version(record)
        if version in seen:
            continue
        seen.add(version)
        if version == wanted or (published is not None and version == published.version):
            out.keep.append(record)
            continue
        info = indexes.get(version)
        if info is None and known is not None and version in known:
            recorded = epoch(known[version])
            settle(record, version, None, recorded if recorded is not None else now_t + retain_seconds)
        elif info is None and version in last_seen:  # no own index seen, yet a split's stable index named it
            settle(record, version, None, now_t)
        elif info is None:
            out.abandon.append(record)
        else:
            own = parse(info.published_at) if info.published_at else now_t
            later = [t for t in published_times if t > own]
            # replaced by the next newer publication; with none, by the published version; with nothing
            # published (its stable index never switched to it), its own time: a deadline that does not move
            replaced = later[0] if later else (parse(published.published_at) if published else own)
            replaced = replaced_at.get(version, replaced)
            settle(record, version, info, max(own, replaced) + retain_seconds)
    out.previous.sort(key=lambda e: str(e["version"]))
    return out


def record_version(record: dict[str, Any]) -> str:
    """The version id of an artifacts record (records written before versions existed carry a generation)."""
    return str(record.get("version") or f"g{int(record.get('generation') or 0)}")


_VERSION = re.compile(r"^g[0-9]+(r[0-9a-f]{8})?$")


def record_problem(record: dict[str, Any], namespace: str, name: str, uid: str) -> str | None:
    """Why an artifacts record may not be acted on for this resource (None: it may).

    Records come back from `status.artifacts`, which anyone allowed to patch the status can write; the
    operator deletes what they name with the dataset's token and aborts dSort jobs by their description. So a
    record is trusted only if every name in it is one this resource's version would have: prefixes ending in
    `<uid>-<version>-` (or `<uid>-u` for the converted-shard pool), its own index `<uid>-<version>-index.json`,
    and the dSort description of this resource and version.
    """
    version = record_version(record)
    if not _VERSION.match(version):
        return f"version {version!r} is not a version id"
    problems = [  # records written before 64-bit names are this resource's too
        _names_problem(record, f"{uid_part}-{version}-", f"{uid_part}-u")
        for uid_part in (naming.uid_tag(uid), naming.legacy_uid_tag(uid))
    ]
    if all(problems):
        return problems[0]
    desc = record.get("dsortDescription")
    own = {
        naming.dsort_description(namespace, name, uid, version),
        naming.legacy_dsort_description(namespace, name, uid, version),
    }
    if desc and desc not in own:
        return f"dSort description {desc!r} is not this resource's"
    return None


def _names_problem(record: dict[str, Any], tag: str, pool_tag: str) -> str | None:
    for loc in record.get("locations") or []:
        if not str(loc.get("prefix") or "").endswith(tag):
            return f"location prefix {loc.get('prefix')!r} does not end in {tag!r}"
    pool = record.get("pool") or {}
    if pool.get("prefix") and not str(pool["prefix"]).endswith(pool_tag):
        return f"pool prefix {pool['prefix']!r} does not end in {pool_tag!r}"
    index = record.get("index") or {}
    if index.get("versioned") and not str(index["versioned"]).endswith(f"{tag}index.json"):
        return f"index {index['versioned']!r} is not this version's own index"
    if index.get("stable") and not str(index["stable"]).endswith("index.json"):
        return f"stable index {index['stable']!r} is not an index"
    if record.get("plan") and not str(record["plan"]).endswith(f"{tag}plan.json"):
        return f"plan {record['plan']!r} is not this version's plan"
    for split, names in (index.get("splits") or {}).items():
        if not str((names or {}).get("versioned") or "").endswith(f"{split}-{tag}index.json"):
            return f"split index {names!r} is not this version's own index of split {split}"
        if not str((names or {}).get("stable") or "").endswith(f"{split}-index.json"):
            return f"split index {names!r} is not split {split}'s stable index"
    return None


def parse_duration(value: str | int | float | None, field_path: str = "spec.output.retainPrevious") -> float:
    """`1h`, `30m`, `90s`, `1h30m`, `0s` (Go/Kubernetes style; no days) -> seconds."""
    if value is None or value == "":
        return DEFAULT_RETAIN_SECONDS
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{field_path}: must not be negative")
        return float(value)
    text = value.strip()
    total, number, matched = 0.0, "", False
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number, matched = "", True
        else:
            raise ValueError(f"{field_path}: {value!r} is not a duration such as 1h, 30m, 90s or 0s")
    if number or not matched:
        raise ValueError(f"{field_path}: {value!r} is not a duration such as 1h, 30m, 90s or 0s")
    return total
