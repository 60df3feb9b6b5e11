"""Deterministic names: every child object and every AIS object derives from (name, uid, generation).

Reruns of the same generation therefore overwrite the same objects (idempotent), and objects of different
generations or of a deleted-and-recreated resource never collide. Layout in the output bucket::

    <output.prefix><uid8>-g<gen>-plan.json            the plan: counts, skips, the chunk list (planner)
    <output.prefix><uid8>-g<gen>-plan-000004.jsonl    plan chunk 4: complete samples 40,000-49,999, sorted
    <output.prefix><uid8>-g<gen>-plan-run-00002       external-sort run 2 (planner; deleted when planned)
    <output.prefix><uid8>-g<gen>-w0003-00012.tar      converted shard 12 of converter worker 3
    <output.prefix><uid8>-g<gen>-progress-w0003.json  converter worker 3's progress, rewritten every few s
    <output.prefix><uid8>-g<gen>-report-w0003.json    converter worker 3's report
    <shuffle.outputPrefix><uid8>-g<gen>-000007.tar    shuffled output shard 7 (dSort)
    <shuffle.outputPrefix>index.json                  wids shard index of the Ready generation
"""

from __future__ import annotations

import hashlib
import re

MAX_JOB_NAME = 52  # leaves room for the pod suffix "-<index>-xxxxx" within 63 characters

FINALIZER = "shardeddataset.dev/finalizer"
LABEL_NAME = "shardeddataset.dev/name"
LABEL_GENERATION = "shardeddataset.dev/generation"
LABEL_COMPONENT = "app.kubernetes.io/component"


def uid8(uid: str) -> str:
    """First 8 hex digits of the resource's uid."""
    return uid.replace("-", "")[:8]


def generation_base(prefix: str, uid: str, generation: int) -> str:
    """Common object-name prefix of everything one generation writes under `prefix`."""
    return f"{prefix}{uid8(uid)}-g{generation}-"


def uid_base(prefix: str, uid: str) -> str:
    """Object-name prefix of everything any generation of this resource writes under `prefix`."""
    return f"{prefix}{uid8(uid)}-g"


def shard_name(base: str, worker: int, seq: int) -> str:
    return f"{base}w{worker:04d}-{seq:05d}.tar"


def shard_prefix(base: str) -> str:
    """Prefix shared by every converted shard of a generation (and nothing else)."""
    return f"{base}w"


def report_name(base: str, worker: int) -> str:
    return f"{base}report-w{worker:04d}.json"


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
    return f"{prefix}index.json"


def job_name(name: str, generation: int, step: str = "convert") -> str:
    """Name of the converter (or `step="plan"`: planner) Job of one generation (a valid, bounded DNS label)."""
    suffix = f"-{step}-g{generation}"
    full = f"{name}{suffix}"
    if len(full) <= MAX_JOB_NAME:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    keep = MAX_JOB_NAME - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-.')}-{digest}{suffix}"


def dsort_description(namespace: str, name: str, uid: str, generation: int, attempt: int | None = None) -> str:
    """Description stamped on a dSort job: lets the operator find its jobs again after a restart.

    Without `attempt`: the generation's description, the common prefix of every attempt's.
    """
    base = f"sds:{namespace}/{name}:{uid8(uid)}:g{generation}"
    return base if attempt is None else f"{base}:a{attempt}"


def dsort_regex(description: str) -> str:
    """POSIX regex matching `description` and any attempt of it (`<description>:a<n>`)."""
    escaped = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", description)
    return f"^{escaped}(:a[0-9]+)?$"


def dsort_attempt(description: str) -> int:
    """The attempt number stamped in a dSort description (1 for a description without one)."""
    match = re.search(r":a([0-9]+)$", description)
    return int(match.group(1)) if match else 1


def attempt_base(base: str, attempt: int) -> str:
    """Object-name prefix of one dSort attempt's output shards."""
    return f"{base}a{attempt}-"
