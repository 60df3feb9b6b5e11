"""The pass being decided (`Pass`: inputs, the decision being built, the previous status) and the status
transitions every phase shares, written once: working, stalled, failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core import failures
from sharded_dataset_operator.core.actions import ACTIVE_REQUEUE, Decision, Event
from sharded_dataset_operator.core.builders import ConverterDefaults, Owner
from sharded_dataset_operator.core.model import DsortJob, JobState
from sharded_dataset_operator.core.observed import Observed, Track
from sharded_dataset_operator.core.spec import DatasetSpec
from sharded_dataset_operator.core.status import CONVERTED, DatasetStatus, Phase, StepState
from sharded_dataset_operator.core.times import parse
from sharded_dataset_operator.core.verify import Totals
from sharded_dataset_operator.core.versions import IndexInfo

STALLED_REQUEUE = 15.0
POD_BLOCKED = "PodsNotStarting"
"""The reason while a planner or converter pod is unscheduled or cannot start its container."""


def examples(report: dict[str, Any]) -> str:
    ex = report.get("examples") or {}
    parts = [f"{reason}: {', '.join(keys[:3])}" for reason, keys in sorted(ex.items()) if keys]
    return "; ".join(parts)


@dataclass(slots=True)
class Pass:
    """What every phase function of one pass shares: inputs, the decision being built, previous state."""

    spec: DatasetSpec
    owner: Owner
    obs: Observed
    defaults: ConverterDefaults
    now: str
    decision: Decision
    prev: dict[str, Any]
    prev_phase: Any
    prev_step: tuple[Any, Any]
    prev_stalled: str | None
    plan: dict[str, Any] | None = None
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)
    written: Totals = field(default_factory=Totals)
    converted_shards: list[str] = field(default_factory=list)
    key_order: list[str] = field(default_factory=list)  # the converted shards by their first key
    dsort_attempts: dict[int, DsortJob] = field(default_factory=dict)  # observed, plus a lost one (see below)
    split_attempts: dict[str, dict[int, DsortJob]] = field(default_factory=dict)  # the same, per split
    tracks: list[Track] = field(default_factory=list)  # one, or one per split
    published_now: IndexInfo | None = None  # the wanted version, when this pass publishes it
    reused: dict[str, Any] | None = None  # the converted shards the plan takes over from earlier versions
    etls_needed: set[str] = field(default_factory=set)  # the AIS ETLs a step of this pass still uses
    deletions_held: str | None = None  # why this pass deletes no version (`_deletions_held`)

    @property
    def st(self) -> DatasetStatus:
        return self.decision.status

    def working(self, phase: Phase, reason: str, message: str) -> Decision:
        return _working(self.decision, self.prev_step, phase, reason, message)

    def missing_output(self, job: JobState, pending: str, missing: str, message: str) -> Decision:
        """A completed Job whose objects are not visible: wait a grace period (an AIS target that holds them
        may be down for a moment), then fail."""
        if seconds_since(job.completed_at, self.now) < failures.REPORT_GRACE_SECONDS:
            decision = self.working(Phase.CONVERTING, pending, f"{message} (waiting: AIS may be degraded)")
            decision.requeue = 5.0
            return decision
        return self.failed(None, missing, message)

    def job_ended(
        self, job: JobState, what: str, working: str, failed: str, missing: tuple[str, str, str]
    ) -> Decision | None:
        """A planner or converter Job that is going, failed, completed without its objects, or whose pods cannot
        start (`PodsNotStarting`: said after a grace, Stalled after `pod_stall_after`, until they start); None
        while it runs.

        `missing`: (pending reason, failure reason, message) for a completed Job whose objects are invisible.
        """
        if job.deleting:
            return self.working(Phase.CONVERTING, working, f"waiting for the previous {what} Job to go")
        if job.failed_reason:
            msg = f"{what} Job {job.name} failed: {job.failed_message or job.failed_reason}"
            return self.failed(CONVERTED, failures.pod_reason(job.failed_message, failed), msg)
        if job.complete:
            return self.missing_output(job, *missing)
        blocked = failures.pods_blocked(job.waits, self.now)
        if blocked is not None:
            why, seconds = blocked
            msg = f"{what} Job {job.name} cannot start: {why}"
            if seconds >= self.defaults.pod_stall_after:
                return stalled(self.decision, self.prev_stalled, Phase.CONVERTING, POD_BLOCKED, msg)
            if seconds >= failures.POD_START_GRACE_SECONDS:
                return self.working(Phase.CONVERTING, POD_BLOCKED, msg)
        return None

    def failed(self, step: str | None, reason: str, message: str) -> Decision:
        if step is not None:
            self.st.steps[step] = StepState(False, reason, message)
        return _failed(self.decision, self.prev_phase, reason, message)


def building_version(status: dict[str, Any]) -> str | None:
    """The version the previous status was about: the one it was building, else the published one."""
    v = status.get("versions") or {}
    building = (v.get("building") or {}).get("version")
    return str(building or (v.get("published") or {}).get("version") or "") or None


def ready_message(version: str, samples: int, shards: int, nbytes: int, skipped: int) -> str:
    return (
        f"version {version}: {samples} samples in {shards} shards ({nbytes / 2**20:.1f} MiB); "
        f"{skipped} incomplete samples skipped"
    )


def split_status(published: dict[str, Any], building: dict[str, Any] | None) -> dict[str, Any]:
    """`status.splits`: per split what its published index says, with what is known of its build."""
    out: dict[str, Any] = {}
    for name, s in published.items():
        out[name] = {k: s.get(k) for k in ("samples", "shards", "bytes", "index", "versionIndex")}
        if building and (building.get(name) or {}).get("shuffle"):
            out[name]["shuffle"] = building[name]["shuffle"]
    return out


def condition_reason(status: dict[str, Any], type_: str) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == type_), None)


def seconds_since(then: float | None, now: str) -> float:
    if then is None:
        return float("inf")
    return parse(now) - then


def _working(d: Decision, prev_step: tuple[Any, Any], phase: Phase, reason: str, message: str) -> Decision:
    d.status.phase, d.status.reason, d.status.message = phase, reason, message
    d.requeue = ACTIVE_REQUEUE
    if prev_step != (phase, reason):
        d.events.append(Event("Normal", reason, message))
    return d


def stalled(d: Decision, prev_stalled: str | None, phase: Phase, reason: str, message: str) -> Decision:
    d.status.phase, d.status.reason, d.status.message, d.status.stalled = phase, reason, message, True
    d.requeue = STALLED_REQUEUE
    if prev_stalled != reason:
        d.events.append(Event("Warning", reason, message))
    return d


def stall(d: Decision, reason: str, message: str, requeue: float = 60.0) -> Decision:
    """Turn a decision into a Stalled one discovered while carrying it out (e.g. the dataset's token may not
    write the dSort output): nothing more is done this pass, the counts stay, it is tried again later."""
    d.actions = []
    d.status.reason, d.status.message, d.status.stalled = reason, message, True
    d.requeue = requeue
    d.events.append(Event("Warning", reason, message))
    return d


def fail(d: Decision, reason: str, message: str) -> Decision:
    """Turn a decision into a permanent failure discovered while carrying it out (e.g. dSort refused)."""
    d.actions = []
    return _failed(d, None, reason, message)


def _failed(d: Decision, prev_phase: Any, reason: str, message: str) -> Decision:
    d.status.phase, d.status.reason, d.status.message, d.status.stalled = Phase.FAILED, reason, message, True
    d.requeue = None
    if prev_phase != Phase.FAILED:
        d.events.append(Event("Warning", reason, message))
    return d
