"""What a pass of the decision core asks for (the actions, carried out in order by `runner.executor`), what the
executor reports back about each (`Outcome`), and the decision itself: actions, status, events, requeue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core.status import DatasetStatus

ACTIVE_REQUEUE = 1.0  # while a step runs (the operator's SDS_ACTIVE_INTERVAL overrides it)


@dataclass(frozen=True, slots=True)
class EnsureBucket:
    bucket: str
    provider: str


@dataclass(frozen=True, slots=True)
class CreateJob:
    manifest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteJobs:
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CleanupArtifacts:
    """Abort an old version's dSort and delete everything it wrote (by version prefix): a previous version
    whose retention is over (`retired`), or a build superseded before it was published."""

    record: dict[str, Any]
    retired: bool = False
    in_use: tuple[tuple[str, str, str], ...] = ()  # (bucket, provider, name): the stable indexes readers use,


@dataclass(frozen=True, slots=True)
class SweepUnits:
    """Delete the converted shards under `pool` whose unit no version in `live` holds (by their plans).
    If that fails, the `restore` records go back into the status, so that the deletion is tried again."""

    bucket: str
    provider: str
    pool: str
    live: tuple[dict[str, Any], ...]
    restore: tuple[dict[str, Any], ...] = ()
    in_use: tuple[tuple[str, str, str], ...] = ()  # stable indexes whose versions' units are kept as well


@dataclass(frozen=True, slots=True)
class StartDsort:
    spec: dict[str, Any]
    split: str | None = None  # the split whose output it shuffles (its record gets the job id)
    recorded: dict[str, Any] | None = None  # that output's shuffle record before this start, put back if the job
    # is not started (a lost attempt it records must stay counted)


@dataclass(frozen=True, slots=True)
class CopyObjects:
    """Server-side copies within one bucket, (source, destination) names: an Append refresh's copies of the
    published version's shuffled shards into the new dSort attempt's output (`core.append`)."""

    bucket: str
    provider: str
    pairs: tuple[tuple[str, str], ...]
    split: str | None = None  # the split whose output they go to
    only: bool = False  # the copies are that split's whole output: its shuffle record is `finished` once done
    recorded: dict[str, Any] | None = None  # that split's shuffle record before this pass, put back on a failure


@dataclass(frozen=True, slots=True)
class StartPrefetch:
    """One AIS prefetch job over the source's objects under `prefix` (at their latest version)."""

    bucket: str
    provider: str
    prefix: str


@dataclass(frozen=True, slots=True)
class WriteIndex:
    bucket: str
    provider: str
    name: str
    body: dict[str, Any]
    publishes: bool = False  # the stable index: this PUT switches readers to the version
    guarded: bool = False  # a split's stable index: like the stable index, never over another resource's


@dataclass(frozen=True, slots=True)
class DeleteObjects:
    bucket: str
    provider: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    bucket: str
    provider: str
    prefix: str


@dataclass(frozen=True, slots=True)
class InitEtl:
    """Start an AIS ETL (`builders.etl_init_message`); AIS runs its pod next to every target. `serving`: the
    readers' ETL (`spec.serve.etl`), whose failure is reported in `status.serve`, not by failing the build."""

    name: str
    message: dict[str, Any]
    serving: bool = False


@dataclass(frozen=True, slots=True)
class DeleteEtls:
    """Stop and remove AIS ETLs of this resource that no step needs any more."""

    names: tuple[str, ...]


Action = (
    EnsureBucket
    | CreateJob
    | DeleteJobs
    | CleanupArtifacts
    | SweepUnits
    | StartDsort
    | CopyObjects
    | WriteIndex
    | DeleteObjects
    | DeletePrefix
    | InitEtl
    | DeleteEtls
    | StartPrefetch
)


# What the executor reports back, one per action it reached (`operations.execute`); `after_actions` decides
# what each report means for the status. An action after a `STALL` or `FAIL` report is not carried out.
DONE = "Done"  # carried out; `result`: what it returned (a dSort job id)


BUSY = "ConverterRunning"  # not carried out: a converter of that version still runs (it could write after)


FAILED_CLEANUP = "CleanupFailed"  # a deletion failed (AIS unavailable, refused, a listing or plan unreadable)


DENIED = "AccessDenied"  # the dataset's token may not do what the dSort job would (STALL)


REJECTED = "ShuffleRejected"  # AIS refused the dSort request (FAIL)


NOT_STARTED = "NotStarted"  # an optional job (a prefetch) AIS did not start: the build goes on without it


ETL_FAILED = "EtlFailed"  # AIS could not start an ETL (FAIL, unless it is the readers' ETL)


COPY_FAILED = "CopyFailed"  # a copy of a published shard failed: the dSort after it is not started (retried)


STOPS = (DENIED, REJECTED, ETL_FAILED, COPY_FAILED)


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    kind: str = DONE
    result: str = ""
    error: str = ""
    at: str = ""  # when, for a failure the status records


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(slots=True)
class Decision:
    status: DatasetStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    need_output: bool = False
    output_prefix: str = ""
    output_only: frozenset[str] | None = None
    output_key: str = ""  # the split whose output it is (`Observed.outputs` key): splits may share a prefix
    output_from_bytes: bool = False  # count it from the shards' bytes, not AIS's archive listing (small members)
    record_first: dict[str, Any] | None = None  # status fields to write before carrying out the actions
    requeue: float | None = ACTIVE_REQUEUE


CREATING = (EnsureBucket, CreateJob, StartDsort, CopyObjects, WriteIndex, InitEtl)
