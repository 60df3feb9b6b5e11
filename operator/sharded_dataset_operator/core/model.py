"""Plain data observed from the cluster, shared by the client modules and the decision core."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """An AIS object (or, in an archive listing, `shard.tar/member`) and its size."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class DsortJob:
    """Aggregated state of a dSort job across targets."""

    id: str
    description: str
    finished: bool
    aborted: bool
    errors: tuple[str, ...]
    extracted_records: int
    created_shards: int
    input_shards: int = 0
    extracted_shards: int = 0
    to_create: int = 0
    ended_at: float | None = None  # epoch seconds the job finished or was aborted, when AIS says


@dataclass(frozen=True, slots=True)
class PodWait:
    """A pod of a running Job that is not running: unscheduled (`reason` "Unschedulable"), or a container
    waiting (`reason` as the kubelet says it, e.g. ImagePullBackOff), with the message and since when."""

    pod: str
    reason: str
    message: str
    since: float | None  # epoch seconds


@dataclass(frozen=True, slots=True)
class JobState:
    """What matters of a converter Job."""

    name: str
    generation: int
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failed_reason: str = ""
    failed_message: str = ""
    deleting: bool = False
    completed_at: float | None = None  # epoch seconds
    waits: tuple[PodWait, ...] = ()  # its pods that are not running, while it runs (`PodWait`)


@dataclass(frozen=True, slots=True)
class AisJob:
    """An AIS batch job (xaction) as AIS reports it: running, finished, or aborted with its error."""

    id: str
    finished: bool
    aborted: bool
    error: str = ""
