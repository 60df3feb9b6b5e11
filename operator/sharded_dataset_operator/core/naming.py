"""Deterministic names: every child object and every AIS object derives from (name, uid, version).

A *version* is one build of the dataset: the resource's generation, plus the refresh annotation's value when
one asked for a rebuild of an unchanged spec (`version_id`: `g7`, or `g7r1a2b3c4d`). Reruns of the same version
therefore overwrite the same objects (idempotent), and objects of different versions or of a
deleted-and-recreated resource never collide. Layout in the output bucket (`<v>` the version id)::

    <output.prefix><uid16>-<v>-plan.json              the plan: counts, skips, the chunk lists (planner)
    <output.prefix><uid16>-<v>-plan-000004.jsonl       plan chunk 4: complete samples 40,000-49,999, sorted
    <output.prefix><uid16>-<v>-plan-units-000000.jsonl the plan's units, each marked converted, reused or taken over
    <output.prefix><uid16>-<v>-plan-members-000004.jsonl which unit each sample of plan chunk 4 is in
    <output.prefix><uid16>-<v>-plan-convert-000000.jsonl the samples to cut into new units, when a version takes
                                                      units over from the one it replaces (else the plan)
    <output.prefix><uid16>-<v>-plan-run-00002          external-sort run 2 (planner; deleted when planned)
    <output.prefix><uid16>-<v>-reused.json             the converted shards this version takes over (planner)
    <output.prefix><uid16>-<v>-progress-w0003.json     converter worker 3's progress, rewritten every few s
    <output.prefix><uid16>-<v>-report-w0003.json       converter worker 3's report
    <output.prefix><uid16>-u<unit id>-00.tar           a converted shard, named by its unit's identity and
                                                      shared by every version that holds the unit
    <shuffle.outputPrefix><uid16>-<v>-a1-000007.tar    shuffled output shard 7 (dSort attempt 1)
    <shuffle.outputPrefix><uid16>-<v>-index.json       the version's own wids index, written once at publish
    <shuffle.outputPrefix>index.json                  the stable index: a copy of the published version's
"""

from __future__ import annotations

import hashlib
import re

MAX_JOB_NAME = 52  # leaves room for the pod suffix "-<index>-xxxxx" within 63 characters

FINALIZER = "shardeddataset.dev/finalizer"
LABEL_NAME = "shardeddataset.dev/name"
LABEL_GENERATION = "shardeddataset.dev/generation"
LABEL_VERSION = "shardeddataset.dev/version"
LABEL_COMPONENT = "app.kubernetes.io/component"


UID_TAG_HEX = 16


def uid_tag(uid: str) -> str:
    """The resource's uid as it appears in object names and dSort descriptions: its first 16 hex digits (64 bits,
    so that two resources sharing a bucket and a prefix practically never share a name)."""
    return uid.replace("-", "")[:UID_TAG_HEX]


ETL_PREFIX = "sds-"


def etl_name(uid: str, version: str | int) -> str:
    """The AIS ETL a version converts through: `sds-<uid tag>-<version>` (AIS allows 6..32 of [a-z0-9-])."""
    return f"{etl_prefix(uid)}{_vid(version)}"


def serve_etl_name(uid: str) -> str:
    """The AIS ETL readers apply to this resource's shards (`spec.serve.etl`): `sds-<uid tag>-serve`."""
    return f"{etl_prefix(uid)}serve"


def etl_prefix(uid: str) -> str:
    """Every AIS ETL this resource runs is named with this prefix (how its leftovers are found)."""
    return f"{ETL_PREFIX}{uid_tag(uid)}-"


def legacy_uid_tag(uid: str) -> str:
    """The 32-bit uid tag of names written before 64-bit tags (records of such versions are still acted on)."""
    return uid.replace("-", "")[:8]


def legacy_dsort_description(namespace: str, name: str, uid: str, version: str | int) -> str:
    return f"sds:{namespace}/{name}:{legacy_uid_tag(uid)}:{_vid(version)}"


def version_id(generation: int, refresh: str = "") -> str:
    """`g<generation>`, or `g<generation>r<8 hex digits of the refresh value's hash>` for a refresh build."""
    if not refresh:
        return f"g{generation}"
    return f"g{generation}r{hashlib.sha256(refresh.encode()).hexdigest()[:8]}"


def _vid(version: str | int) -> str:
    return version if isinstance(version, str) else f"g{version}"


def generation_base(prefix: str, uid: str, version: str | int) -> str:
    """Common object-name prefix of everything one version writes under `prefix` (an int: generation)."""
    return f"{prefix}{uid_tag(uid)}-{_vid(version)}-"


def uid_base(prefix: str, uid: str) -> str:
    """Object-name prefix of everything any version of this resource writes under `prefix` (not its units)."""
    return f"{prefix}{uid_tag(uid)}-g"


def unit_pool(prefix: str, uid: str) -> str:
    """Object-name prefix of every converted shard of this resource (shared by its versions)."""
    return f"{prefix}{uid_tag(uid)}-u"


def unit_shard_name(pool: str, unit_id: str, part: int) -> str:
    return f"{pool}{unit_id}-{part:02d}.tar"


def unit_of(pool: str, name: str) -> str | None:
    """The unit id in a converted shard's name (None for anything else)."""
    if not name.startswith(pool) or not name.endswith(".tar"):
        return None
    unit, sep, _ = name[len(pool) :].partition("-")
    return unit if sep else None


def plan_units_name(base: str, chunk: int) -> str:
    return f"{base}plan-units-{chunk:06d}.jsonl"


def plan_convert_name(base: str, chunk: int, stream: str = "") -> str:
    """A chunk of a convert stream (`stream`: the split; "" without splits)."""
    return f"{base}plan-convert-{stream + '-' if stream else ''}{chunk:06d}.jsonl"


def plan_members_name(base: str, chunk: int) -> str:
    return f"{base}plan-members-{chunk:06d}.jsonl"


def reused_name(base: str) -> str:
    return f"{base}reused.json"


def report_name(base: str, worker: int) -> str:
    return f"{base}report-w{worker:04d}.json"


def report_prefix(base: str) -> str:
    return f"{base}report-"


def progress_prefix(base: str) -> str:
    return f"{base}progress-"


def progress_name(base: str, worker: int) -> str:
    return f"{base}progress-w{worker:04d}.json"


def plan_manifest_name(base: str) -> str:
    return f"{base}plan.json"


def plan_chunk_name(base: str, chunk: int) -> str:
    return f"{base}plan-{chunk:06d}.jsonl"


def plan_run_prefix(base: str) -> str:
    return f"{base}plan-run-"


def output_template(base: str) -> str:
    """dSort output_format: an unbounded fmt-style range (dSort appends the extension)."""
    return f"{base}%06d"


def index_name(prefix: str) -> str:
    """The stable index: always the published version's shard list."""
    return f"{prefix}index.json"


def versioned_index_name(prefix: str, uid: str, version: str) -> str:
    """One version's own index, written once when the version is published and never rewritten."""
    return f"{generation_base(prefix, uid, version)}index.json"


def job_name(name: str, version: str | int, step: str = "convert") -> str:
    """Name of the converter (or `step="plan"`: planner) Job of one version (a valid, bounded DNS label)."""
    suffix = f"-{step}-{_vid(version)}"
    full = f"{name}{suffix}"
    if len(full) <= MAX_JOB_NAME:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    keep = MAX_JOB_NAME - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-.')}-{digest}{suffix}"


def dsort_description(
    namespace: str, name: str, uid: str, version: str | int, attempt: int | None = None, split: str | None = None
) -> str:
    """Description stamped on a dSort job: lets the operator find its jobs again after a restart.

    Without `attempt`: the common prefix of every attempt's; without `split` (a dataset with splits shuffles
    each split by a job of its own, `:s-<split>`): the version's.
    """
    base = f"sds:{namespace}/{name}:{uid_tag(uid)}:{_vid(version)}"
    if split:
        base += f":s-{split}"
    return base if attempt is None else f"{base}:a{attempt}"


def dsort_regex(description: str) -> str:
    """POSIX regex matching `description` and any attempt of it (`<description>:a<n>`), of any split of it."""
    escaped = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", description)
    return f"^{escaped}(:s-[a-z0-9-]+)?(:a[0-9]+)?$"


def dsort_attempt(description: str) -> int:
    """The attempt number stamped in a dSort description (1 for a description without one)."""
    match = re.search(r":a([0-9]+)$", description)
    return int(match.group(1)) if match else 1


def attempt_base(base: str, attempt: int) -> str:
    """Object-name prefix of one dSort attempt's output shards."""
    return f"{base}a{attempt}-"
