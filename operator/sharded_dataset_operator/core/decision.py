"""The decision core's entry points: `decide` (spec, observed state) -> (actions, status, events), one phase
after the other, and `after_actions` (the executor's reports -> the status). Pure: no I/O, no clock.

The pipeline of one version is derived entirely from what exists:

    planner Job + plan -> converter Job + worker reports in AIS -> dSort job (found by its description)
        -> output listing -> the version's own index -> the stable index (publishing)

so the operator can be killed at any point and, on restart, continues from where the cluster is. A new
version is built beside the published one, which stays readable until the new one is published and then
for `spec.output.retainPrevious` (`lifecycle.py`, `versions.py`). Records of where each version wrote
(`status.artifacts`, also kept in each version's own index) are what lets the operator delete a version it no
longer needs. The promises (README) are enforced here, each in one place (docs/architecture.md#promises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sharded_dataset_operator.core import (
    builders,
    conversion,
    naming,
    planning,
    prefetch,
    shuffle,
    verification,
    versions,
)
from sharded_dataset_operator.core.actions import (
    CREATING,
    DENIED,
    DONE,
    FAILED_CLEANUP,
    REJECTED,
    Action,
    CleanupArtifacts,
    CopyObjects,
    Decision,
    DeleteEtls,
    DeleteJobs,
    DeleteObjects,
    DeletePrefix,
    Event,
    InitEtl,
    Outcome,
    StartDsort,
    StartPrefetch,
    SweepUnits,
    WriteIndex,
)
from sharded_dataset_operator.core.builders import ConverterDefaults, Owner
from sharded_dataset_operator.core.conversion import fill_counts, serve_etl
from sharded_dataset_operator.core.lifecycle import serving, settle_versions
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.records import artifact_record, unique_records
from sharded_dataset_operator.core.shuffle import SHUFFLE_KEYS, lost_dsort_attempt, own_record
from sharded_dataset_operator.core.spec import DatasetSpec
from sharded_dataset_operator.core.state import Pass, building_version, fail, stall, stalled
from sharded_dataset_operator.core.status import DatasetStatus, Phase


def decide(spec: DatasetSpec, owner: Owner, obs: Observed, defaults: ConverterDefaults, now: str) -> Decision:
    """One pass over the wanted version (`owner.version`): serve it if it is published, else build it (one
    phase function after the other; the first that is not done decides), then settle every other version."""
    prev = obs.previous or {}
    refused: list[Event] = []
    if prev.get("artifacts"):
        trusted = []
        for r in prev["artifacts"]:
            problem = versions.record_problem(r, owner.namespace, owner.name, owner.uid)
            if problem is None:
                trusted.append(r)
            else:
                msg = f"ignoring an artifacts record in the status that is not this resource's: {problem}"
                refused.append(Event("Warning", "ArtifactsRefused", msg))
        prev = {**prev, "artifacts": trusted}
    gen = owner.generation
    same_version = prev.get("observedGeneration") == gen and building_version(prev) in (None, owner.version)
    conds = prev.get("conditions") or [] if same_version else []
    prev_stalled = next(
        (c.get("reason") for c in conds if c.get("type") == "Stalled" and c.get("status") == "True"), None
    )
    prev_reason = next((c.get("reason") for c in conds if c.get("type") == "Reconciling"), None)
    prev_phase = prev.get("phase") if same_version else None
    record = artifact_record(spec, owner)
    actions: list[Action] = []
    if obs.stale_jobs:  # Jobs of any other version: stop what still runs (results stay in AIS)
        actions.append(DeleteJobs(names=tuple(obs.stale_jobs)))

    st = DatasetStatus(
        phase=Phase.PENDING,
        observed_generation=gen,
        reason="Pending",
        message="",
        job_name=naming.job_name(owner.name, owner.version),
        workers=spec.conversion.workers,
        start_time=(prev.get("startTime") if same_version else None) or now,
        artifacts=[record],
        retry=(prev.get("retry") if same_version else None),
    )
    p = Pass(spec, owner, obs, defaults, now, Decision(status=st, actions=actions), prev, prev_phase,
             (prev_phase, prev_reason), prev_stalled)  # fmt: skip
    p.plan = obs.plan if obs.plan is not None and int(obs.plan.get("generation", -1)) == gen else None
    p.reports = {i: r for i, r in obs.reports.items() if int(r.get("generation", -1)) == gen}
    p.reused = obs.reused if obs.reused is not None and int(obs.reused.get("generation", -1)) == gen else None
    fill_counts(st, p.plan, p.reports, p.reused)
    if obs.job is not None:
        st.workers_succeeded, st.workers_failed = obs.job.succeeded, obs.job.failed
    p.dsort_attempts = dict(obs.dsort_attempts)
    lost = lost_dsort_attempt(prev, own_record(prev, None, gen, owner.version), obs.dsort_attempts,
                              obs.capacity_problems)  # fmt: skip
    if lost is not None:
        p.dsort_attempts[lost[0]] = lost[1]
    for split in spec.splits.names if spec.splits else ():
        attempts = dict(obs.split_attempts.get(split) or {})
        split_record = own_record(prev, split, gen, owner.version)
        lost = lost_dsort_attempt(prev, split_record, attempts, obs.capacity_problems, split)
        if lost is not None:
            attempts[lost[0]] = lost[1]
        p.split_attempts[split] = attempts
    if obs.output_conflict:  # nothing is written; the records of what this resource wrote are kept
        st.artifacts = unique_records([record, *(prev.get("artifacts") or [])])
        decision = stalled(p.decision, prev_stalled, Phase.PENDING, "OutputConflict", obs.output_conflict)
    else:
        decision = _build(p)
        settle_versions(p, decision)
    serve_etl(p)
    unneeded = sorted(set(obs.etls) - p.etls_needed)
    if unneeded:  # the conversion that used them is over (or the spec no longer asks for one)
        decision.actions.append(DeleteEtls(tuple(unneeded)))
    decision.events[:0] = refused
    decision.record_first = _record_first(prev, decision, now)
    return decision


def _record_first(prev: dict[str, Any], d: Decision, now: str) -> dict[str, Any] | None:
    """The status fields that must be written before this pass writes anything (None: none need be).

    Where a version writes must be known before its first object is written: a version whose objects are
    written first (the pass then stopped, and a newer spec superseded it) would be known to nobody and never
    deleted. So must a dSort attempt before it starts: one AIS forgets at once, with the pass stopping before it
    could say so, is still counted (`lost_dsort_attempt`). What is written first only adds: the records of
    versions this pass deletes stay until the pass that deleted them says so.
    """
    saved = {versions.record_version(r) for r in prev.get("artifacts") or []}
    new = any(versions.record_version(r) not in saved for r in d.status.artifacts or [])
    starts = any(isinstance(a, StartDsort | CopyObjects) for a in d.actions)
    switches = any(isinstance(a, WriteIndex) and (a.publishes or a.guarded) for a in d.actions)
    first: dict[str, Any] = {}
    if starts or (new and any(isinstance(a, CREATING) for a in d.actions)):
        ahead = d.status.to_dict([], now)
        records = unique_records([*(d.status.artifacts or []), *(prev.get("artifacts") or [])])
        first.update({"artifacts": records, "shuffle": ahead["shuffle"], "splits": ahead["splits"]})
    if switches and d.status.versions is not None:
        # readers move when a stable index is written: the versions they leave, and when they were last seen
        # read (`lastInUse`), are known before (promise P1)
        first["versions"] = {"previous": d.status.versions.get("previous") or []}
    return first or None


def _build(p: Pass) -> Decision:
    if p.obs.published is not None and p.obs.published.version == p.owner.version:
        return serving(p)
    retry = p.obs.retry_request
    if p.prev_phase == Phase.FAILED and retry and retry != (p.st.retry or {}).get("request"):
        return _retry_requested(p)
    steps: tuple[Callable[[Pass], Decision | None], ...] = (planning.step, prefetch.step, conversion.step, shuffle.step)
    for step in steps:  # the first that is not done decides
        outcome = step(p)
        if outcome is not None:
            return outcome
    return verification.step(p)  # always decides


def _retry_requested(p: Pass) -> Decision:
    """A Failed run whose retry annotation has a new value: set aside what the failed step left (its Job, and
    the objects that would make the next attempt fail alike), then start it again (promise P5)."""
    reason = next((c.get("reason") for c in p.prev.get("conditions") or [] if c.get("type") == "Stalled"), "")
    version = p.owner.version
    base, b = builders.converted_base(p.spec, p.owner), p.spec.output.bucket
    attempt_objects = [DeletePrefix(b.name, b.provider, naming.report_prefix(base)),
                       DeletePrefix(b.name, b.provider, naming.progress_prefix(base))]  # fmt: skip
    if reason in ("PlanningFailed", "PlanMissing", "NoSamples", "SplitEmpty", "SourceChanged", "SourceNotFound",
                  "AccessDenied"):  # fmt: skip
        # planning again from a clean slate: a converter Job or reports left from before would be taken for the
        # new plan's (SplitEmpty, too, is decided on converted samples, and the source may have changed since;
        # a source that changed under the converters, or refused them, is listed anew)
        jobs = (naming.job_name(p.owner.name, version, "plan"), naming.job_name(p.owner.name, version))
        p.decision.actions.append(DeleteJobs(jobs))
        p.decision.actions.append(DeleteObjects(b.name, b.provider, (naming.plan_manifest_name(base),)))
        p.decision.actions.extend(attempt_objects)
    elif reason in ("ConversionFailed", "ReportMissing", "ConversionIncomplete", "TransformFailed"):
        # a clean attempt: the failed one's reports (a finished worker's too) could fail the next alike
        p.decision.actions.append(DeleteJobs((naming.job_name(p.owner.name, version),)))
        p.decision.actions.extend(attempt_objects)
    p.st.retry = {"request": p.obs.retry_request, "shuffleAttemptBase": max(p.dsort_attempts, default=0)}
    if p.split_attempts:
        p.st.retry["shuffleAttemptBases"] = {k: max(v, default=0) for k, v in p.split_attempts.items()}
    p.decision.events.append(Event("Normal", "RetryRequested", f"retrying after {reason or 'the failure'}"))
    p.decision.requeue = ACTIVE_REQUEST_DELAY
    p.st.phase, p.st.reason, p.st.message = Phase.PENDING, "Retrying", f"retry requested after {reason}"
    return p.decision


ACTIVE_REQUEST_DELAY = 2.0
COPY_RETRY_SECONDS = 15.0  # before the next pass after a copy of a published shard failed


def _keep_shuffle_record(d: Decision, split: str | None, recorded: dict[str, Any] | None) -> None:
    """An output's shuffle record as it was before the pass planned a start (a dSort, or a split's copies)."""
    recorded = recorded or {}
    if split is not None:
        d.status.splits = d.status.splits or {}
        d.status.splits.setdefault(split, {})["shuffle"] = {k: recorded.get(k) for k in SHUFFLE_KEYS}
    d.status.dsort_job_id, d.status.shuffle_attempt = recorded.get("dsortJobId"), recorded.get("attempt")
    d.status.shuffle_version = recorded.get("version")
    d.status.shuffle_started_at, d.status.output_template = recorded.get("startedAt"), recorded.get("outputTemplate")


def after_actions(d: Decision, outcomes: list[Outcome]) -> Decision:
    """What the executor's reports mean for the status: every decision about them is made here.

    A started dSort job's id goes to its output's record (the top level, or its split's), so that a job AIS
    drops later is counted as an ended attempt (`lost_dsort_attempt`); a job that was not started (refused, or
    never reached) leaves its output's record as it was, so no attempt, and no lost one, is forgotten. A version
    whose deletion was not done
    (failed, deferred while its converter runs, or not reached because the pass stopped earlier) keeps its
    record in `status.artifacts`, so the deletion is tried again and nothing is leaked.
    """
    reached = {id(o.action) for o in outcomes}
    restore: list[dict[str, Any]] = []
    stop: Outcome | None = None
    for o in outcomes:
        match o.action:
            case StartDsort(split=split) if o.kind == DONE:
                d.status.dsort_job_id = o.result  # the top level shows the output being shuffled
                if split is not None:
                    d.status.splits = d.status.splits or {}
                    d.status.splits.setdefault(split, {}).setdefault("shuffle", {})["dsortJobId"] = o.result
            case CleanupArtifacts(record=record) if o.kind != DONE:
                restore.append(record)
                if o.kind == FAILED_CLEANUP:
                    version = versions.record_version(record)
                    d.events.append(Event("Warning", "CleanupFailed", f"deleting version {version}: {o.error}"))
            case SweepUnits(restore=back) if o.kind != DONE:
                restore.extend(back)
                d.events.append(Event("Warning", "CleanupFailed", f"deleting converted shards: {o.error}"))
            case StartPrefetch():
                record, event = prefetch.after_start(d.status.prefetch, o.result if o.kind == DONE else None,
                                                     o.error, o.at)  # fmt: skip
                d.status.prefetch = record
                d.events.extend([event] if event else [])
            case CopyObjects(split=split, only=only) if o.kind == DONE and only and split is not None:
                d.status.splits = d.status.splits or {}
                d.status.splits.setdefault(split, {}).setdefault("shuffle", {})["finished"] = True
            case CopyObjects() if o.kind != DONE:  # the dSort after it was not started: the next pass tries again
                d.events.append(Event("Warning", "CopyFailed", f"copying the published version's shards: {o.error}"))
                d.requeue = max(d.requeue or 0.0, COPY_RETRY_SECONDS)
            case InitEtl(name=name, serving=serving):
                if o.kind == DONE:
                    d.events.append(Event("Normal", "EtlStarted", f"AIS ETL {name} runs next to every target"))
                elif serving:  # the build goes on; readers see why their ETL is missing
                    d.status.serve = {**(d.status.serve or {}), "stage": None, "message": o.error, "failedAt": o.at}
                    d.events.append(Event("Warning", "EtlFailed", f"serving ETL {name}: {o.error}"))
                else:
                    stop = o
        if o.kind in (DENIED, REJECTED):
            stop = o
    started = {id(o.action) for o in outcomes if isinstance(o.action, StartDsort) and o.kind == DONE}
    copied = {id(o.action) for o in outcomes if isinstance(o.action, CopyObjects) and o.kind == DONE}
    for action in d.actions:  # deletions the pass did not reach, dSort jobs it did not start
        if isinstance(action, StartDsort) and id(action) not in started:
            _keep_shuffle_record(d, action.split, action.recorded)
        if isinstance(action, CopyObjects) and action.only and id(action) not in copied:
            _keep_shuffle_record(d, action.split, action.recorded)
        if id(action) not in reached:
            if isinstance(action, CleanupArtifacts):
                restore.append(action.record)
            elif isinstance(action, SweepUnits):
                restore.extend(action.restore)
    if restore:
        d.status.artifacts = unique_records([*(d.status.artifacts or []), *restore])
    if stop is not None and stop.kind == DENIED:
        return stall(d, DENIED, stop.error)
    if stop is not None:
        return fail(d, stop.kind, stop.error)
    return d
