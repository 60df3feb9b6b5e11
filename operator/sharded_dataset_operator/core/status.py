"""The ShardedDataset status model and its kstatus conditions.

Status is recomputed from observed state on every reconcile (see `reconcile.py`); the only things carried over
from the previous status are condition transition times and the record of where earlier generations wrote
(`artifacts`), which is needed to clean them up.

kstatus contract (Flux, Argo CD via docs/argocd-health.lua, `kubectl wait --for=condition=Ready`):
  working          Ready=False  Reconciling=True   Stalled=False
  done             Ready=True   Reconciling=False  Stalled=False   UpToDate=True
  failed/stuck     Ready=False  Reconciling=False  Stalled=True
`Ready` says that a verified version is published and readable; while a newer version is built beside it, or
after that build failed, `Ready` stays True (reason `Serving`) and `UpToDate=False` says why the wanted
version is not published yet (kstatus: Reconciling=True is in progress, Stalled=True is failed).
Every condition carries `observedGeneration`, and so does the status itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PENDING = "Pending"
    CONVERTING = "Converting"
    SHUFFLING = "Shuffling"
    VERIFYING = "Verifying"
    READY = "Ready"
    FAILED = "Failed"


READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
UP_TO_DATE = "UpToDate"
CONVERTED = "Converted"
MAX_STATUS_CLASSES = 100  # status.classes.mapping up to this many classes (all of them: the index info.classes)
SHUFFLED = "Shuffled"
VERIFIED = "Verified"
CONDITION_ORDER = (READY, RECONCILING, STALLED, UP_TO_DATE, CONVERTED, SHUFFLED, VERIFIED)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Return `conditions` with `type_` set; `lastTransitionTime` changes only when the status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = previous["lastTransitionTime"] if previous and previous.get("status") == value else now
    updated = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    }
    rest = [c for c in conditions if c.get("type") != type_]
    merged = [*rest, updated]
    order = {t: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(merged, key=lambda c: order.get(str(c.get("type")), len(order)))


@dataclass(slots=True)
class StepState:
    """A per-step condition: done, or not done with a reason."""

    done: bool
    reason: str
    message: str = ""


@dataclass(slots=True)
class DatasetStatus:
    """Everything the operator reports; `to_dict` gives the `status` subresource content."""

    phase: Phase
    observed_generation: int
    reason: str
    message: str
    stalled: bool = False
    samples_total: int = 0
    samples_written: int = 0
    samples_skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    rejected_files: dict[str, int] = field(default_factory=dict)
    rows_unused: dict[str, int] = field(default_factory=dict)  # label and table rows not used, by reason
    classes: dict[str, int] = field(default_factory=dict)  # class name -> index (spec.samples.classes)
    shards_converted: int = 0
    shards_reused: int = 0  # of the converted shards, those taken over from an earlier version
    samples_reused: int = 0
    shards_output: int = 0
    bytes_output: int = 0
    job_name: str | None = None
    workers: int = 0
    workers_succeeded: int = 0
    workers_failed: int = 0
    dsort_job_id: str | None = None
    output_template: str | None = None
    index_object: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    artifacts: list[dict[str, Any]] | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    progress: dict[str, Any] | None = None
    shuffle_attempt: int | None = None
    shuffle_started_at: str | None = None
    shuffle_version: str | None = None
    shuffle_max_attempts: int | None = None
    retry: dict[str, Any] | None = None
    serving: str | None = None  # an older version is published and readable: what it is (Ready's message)
    versions: dict[str, Any] | None = None
    splits: dict[str, dict[str, Any]] | None = None  # per split: samples, shards, bytes, index, shuffle
    etl: dict[str, Any] | None = None  # the AIS ETL the conversion reads through: name, stage, image
    prefetch: dict[str, Any] | None = None  # spec.source.ais.prefetch: the AIS prefetch job and how it ended
    serve: dict[str, Any] | None = None  # spec.serve.etl: the readers' ETL (name, stage, image, message)
    publish_guard: dict[str, Any] | None = None  # guard.Verdict.status(): what publishing would remove, held or not

    def conditions(self, previous: list[dict[str, Any]], now: str) -> list[dict[str, Any]]:
        gen = self.observed_generation
        ready = self.phase == Phase.READY
        conds = list(previous)
        if ready or self.serving is None:
            conds = set_condition(conds, READY, ready, "Succeeded" if ready else self.reason, self.message, gen, now)
        else:
            conds = set_condition(conds, READY, True, "Serving", self.serving, gen, now)
        conds = set_condition(conds, UP_TO_DATE, ready, "Published" if ready else self.reason, self.message, gen, now)
        reconciling = not ready and not self.stalled
        conds = set_condition(
            conds, RECONCILING, reconciling, self.reason if reconciling else "Done", self.message, gen, now
        )
        conds = set_condition(
            conds,
            STALLED,
            self.stalled,
            self.reason if self.stalled else "Healthy",
            self.message if self.stalled else "",
            gen,
            now,
        )
        for type_ in (CONVERTED, SHUFFLED, VERIFIED):
            step = self.steps.get(type_)
            if step is not None:
                conds = set_condition(conds, type_, step.done, step.reason, step.message, gen, now)
            else:
                conds = [c for c in conds if c.get("type") != type_]
        return conds

    def to_dict(self, previous_conditions: list[dict[str, Any]], now: str) -> dict[str, Any]:
        status: dict[str, Any] = {
            "phase": str(self.phase),
            "observedGeneration": self.observed_generation,
            "message": self.message,
            "conditions": self.conditions(previous_conditions, now),
            "samples": {
                "total": self.samples_total,
                "written": self.samples_written,
                "skipped": self.samples_skipped,
                "skippedByReason": dict(self.skipped_by_reason),
                "rejectedFiles": dict(self.rejected_files),
                **({"rows": dict(self.rows_unused)} if self.rows_unused else {}),
            },
            **(
                {
                    "classes": {
                        "count": len(self.classes),
                        **({"mapping": dict(self.classes)} if len(self.classes) <= MAX_STATUS_CLASSES else {}),
                    }
                }
                if self.classes
                else {}
            ),
            "shards": {
                "converted": self.shards_converted,
                "output": self.shards_output,
                "bytes": self.bytes_output,
            },
            "conversion": {
                "jobName": self.job_name,
                "workers": self.workers,
                "succeeded": self.workers_succeeded,
                "failed": self.workers_failed,
                "reusedShards": self.shards_reused,
                "reusedSamples": self.samples_reused,
            },
            "shuffle": {
                "version": self.shuffle_version,
                "dsortJobId": self.dsort_job_id,
                "outputTemplate": self.output_template,
                "attempt": self.shuffle_attempt,
                "startedAt": self.shuffle_started_at,
                "maxAttempts": self.shuffle_max_attempts,
            },
            "progress": self.progress,  # None removes it (the status is merge-patched)
            "indexObject": self.index_object,
            "startTime": self.start_time,
            "completionTime": self.completion_time,
        }
        if self.artifacts is not None:
            status["artifacts"] = self.artifacts
        if self.retry is not None:
            status["retry"] = self.retry
        if self.versions is not None:
            status["versions"] = self.versions
        status["splits"] = self.splits  # None removes it (a spec without splits any more)
        status["etl"] = self.etl
        status["prefetch"] = self.prefetch
        status["serve"] = self.serve
        status["publishGuard"] = self.publish_guard
        return status
