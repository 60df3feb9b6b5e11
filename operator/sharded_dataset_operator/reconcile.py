"""The decision core: (spec, observed state) -> (actions, status, events). Pure: no I/O, no clock.

The pipeline of one generation is derived entirely from what exists:

    converter Job + worker reports in AIS  ->  dSort job (found by its description)  ->  output listing

so the operator can be killed at any point and, on restart, continues from where the cluster is. Records of
earlier generations' objects (`status.artifacts`) are what lets a new generation clean up after the old one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import builders, naming
from .builders import ConverterDefaults, Owner
from .model import DsortJob, JobState
from .spec import DatasetSpec
from .status import CONVERTED, SHUFFLED, VERIFIED, DatasetStatus, Phase, StepState
from .verify import OutputTally, Totals, compare

ACTIVE_REQUEUE = 1.0  # while a step runs (the operator's SDS_ACTIVE_INTERVAL overrides it)
STALLED_REQUEUE = 15.0


# ------------------------------------------------------------------------------------------ observations


@dataclass(slots=True)
class Observed:
    """Everything the decision needs; `output` is gathered only when `Decision.need_output` asks for it."""

    previous: dict[str, Any]
    source_problem: str | None = None
    planner: JobState | None = None
    plan: dict[str, Any] | None = None
    job: JobState | None = None
    stale_jobs: list[str] = field(default_factory=list)
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    dsort: DsortJob | None = None
    output: OutputTally | None = None


# ------------------------------------------------------------------------------------------ actions


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
    """Abort an old generation's dSort and delete everything it wrote (by generation prefix)."""

    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StartDsort:
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriteIndex:
    bucket: str
    provider: str
    name: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteObjects:
    bucket: str
    provider: str
    names: tuple[str, ...]


Action = EnsureBucket | CreateJob | DeleteJobs | CleanupArtifacts | StartDsort | WriteIndex | DeleteObjects


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
    requeue: float | None = ACTIVE_REQUEUE


# ------------------------------------------------------------------------------------------ helpers


def artifact_record(spec: DatasetSpec, owner: Owner) -> dict[str, Any]:
    """Where this generation writes: enough to clean it up later even if the spec changes."""
    locations = [
        {
            "bucket": spec.output.bucket.name,
            "provider": spec.output.bucket.provider,
            "prefix": builders.converted_base(spec, owner),
        }
    ]
    if spec.shuffle is not None:
        locations.append(
            {
                "bucket": spec.shuffle.output_bucket.name,
                "provider": spec.shuffle.output_bucket.provider,
                "prefix": builders.output_base(spec, owner),
            }
        )
    return {
        "generation": owner.generation,
        "locations": locations,
        "dsortDescription": naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.generation),
    }


def index_location(spec: DatasetSpec) -> tuple[str, str, str]:
    if spec.shuffle is not None:
        b = spec.shuffle.output_bucket
        return b.name, b.provider, naming.index_name(spec.shuffle.output_prefix)
    return spec.output.bucket.name, spec.output.bucket.provider, naming.index_name(spec.output.prefix)


def _examples(report: dict[str, Any]) -> str:
    ex = report.get("examples") or {}
    parts = [f"{reason}: {', '.join(keys[:3])}" for reason, keys in sorted(ex.items()) if keys]
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ decision


def decide(spec: DatasetSpec, owner: Owner, obs: Observed, defaults: ConverterDefaults, now: str) -> Decision:
    prev = obs.previous or {}
    gen = owner.generation
    same_gen = prev.get("observedGeneration") == gen
    prev_phase = prev.get("phase") if same_gen else None
    prev_stalled = (
        next(
            (
                c.get("reason")
                for c in prev.get("conditions") or []
                if c.get("type") == "Stalled" and c.get("status") == "True"
            ),
            None,
        )
        if same_gen
        else None
    )
    prev_reason = next((c.get("reason") for c in prev.get("conditions") or [] if c.get("type") == "Reconciling"), None)
    prev_step = (prev_phase, prev_reason if same_gen else None)
    record = artifact_record(spec, owner)
    actions: list[Action] = []

    # Earlier generations: stop what still runs and delete what they wrote.
    # Stop their converters first; the cleanup is deferred while their pods still run (see operations).
    if obs.stale_jobs:
        actions.append(DeleteJobs(names=tuple(obs.stale_jobs)))
    old_records = [r for r in (prev.get("artifacts") or []) if r.get("generation") != gen]
    for r in old_records:
        actions.append(CleanupArtifacts(record=r))

    st = DatasetStatus(
        phase=Phase.PENDING,
        observed_generation=gen,
        reason="Pending",
        message="",
        job_name=naming.job_name(owner.name, gen),
        workers=spec.conversion.workers,
        start_time=(prev.get("startTime") if same_gen else None) or now,
        artifacts=[record],
    )
    decision = Decision(status=st, actions=actions)

    plan = obs.plan if obs.plan is not None and int(obs.plan.get("generation", -1)) == gen else None
    reports = {i: r for i, r in obs.reports.items() if int(r.get("generation", -1)) == gen}
    converted = plan is not None and len(reports) == spec.conversion.workers
    _fill_counts(st, plan, reports)

    if obs.job is not None:
        st.workers_succeeded, st.workers_failed = obs.job.succeeded, obs.job.failed

    # ---- planning: one pod lists the source and writes the plan
    if plan is None:
        st.steps[CONVERTED] = StepState(False, "Planning")
        if obs.planner is None:
            if obs.source_problem:
                return _stalled(decision, prev_stalled, Phase.PENDING, "SourceNotFound", obs.source_problem)
            actions.append(EnsureBucket(spec.output.bucket.name, spec.output.bucket.provider))
            actions.append(CreateJob(builders.build_planner_job(spec, owner, defaults)))
            return _working(decision, prev_step, Phase.CONVERTING, "Planning", "starting the planner")
        if obs.planner.failed_reason:
            msg = f"planner Job {obs.planner.name} failed: {obs.planner.failed_message or obs.planner.failed_reason}"
            st.steps[CONVERTED] = StepState(False, "PlanningFailed", msg)
            return _failed(decision, prev_phase, "PlanningFailed", msg)
        if obs.planner.complete:
            msg = f"planner Job {obs.planner.name} completed but its plan is missing"
            return _failed(decision, prev_phase, "PlanMissing", msg)
        return _working(
            decision, prev_step, Phase.CONVERTING, "Planning", "listing the source and grouping it into samples"
        )
    if int(plan.get("samples") or 0) == 0 and spec.shuffle is not None:
        msg = "no complete samples to shuffle: " + (_examples(plan) or "the source is empty")
        st.steps[CONVERTED] = StepState(False, "NoSamples", msg)
        return _failed(decision, prev_phase, "NoSamples", msg)

    # ---- conversion
    if not converted:
        st.steps[CONVERTED] = StepState(False, "Converting")
        st.progress = conversion_progress(plan, obs.progress, reports, gen)
        if obs.job is None:
            actions.append(CreateJob(builders.build_converter_job(spec, owner, defaults)))
            return _working(
                decision,
                prev_step,
                Phase.CONVERTING,
                "Converting",
                f"starting {spec.conversion.workers} converter worker(s) for {plan['samples']} samples",
            )
        if obs.job.failed_reason:
            msg = f"converter Job {obs.job.name} failed: {obs.job.failed_message or obs.job.failed_reason}"
            st.steps[CONVERTED] = StepState(False, "ConversionFailed", msg)
            return _failed(decision, prev_phase, "ConversionFailed", msg)
        if obs.job.complete:
            missing = sorted(set(range(spec.conversion.workers)) - set(reports))
            msg = f"converter Job completed but reports of worker(s) {missing} are missing"
            return _failed(decision, prev_phase, "ReportMissing", msg)
        return _working(
            decision,
            prev_step,
            Phase.CONVERTING,
            "Converting",
            f"{len(reports)}/{spec.conversion.workers} converter workers done, "
            f"{st.progress['samples']}/{plan['samples']} samples",
        )

    st.steps[CONVERTED] = StepState(True, "Converted", f"{st.samples_written} samples in {st.shards_converted} shards")
    if st.samples_written != int(plan.get("samples") or 0):
        msg = f"the converters wrote {st.samples_written} samples but the plan holds {plan['samples']}"
        st.steps[CONVERTED] = StepState(False, "ConversionIncomplete", msg)
        return _failed(decision, prev_phase, "ConversionIncomplete", msg)
    converted_shards = sorted(s["name"] for r in reports.values() for s in r.get("shards") or [])
    written = Totals()
    for r in reports.values():
        written.merge(Totals.from_dict(r))

    # ---- shuffle
    if spec.shuffle is not None:
        st.output_template = naming.output_template(builders.output_base(spec, owner))
        if obs.dsort is None:
            tar_bytes = sum(int(r.get("bytes") or 0) for r in reports.values())
            actions.append(
                StartDsort(builders.build_dsort_spec(spec, owner, converted_shards, written.member_bytes, tar_bytes))
            )
            st.steps[SHUFFLED] = StepState(False, "Shuffling", "starting dSort")
            return _working(decision, prev_step, Phase.SHUFFLING, "Shuffling", "starting dSort")
        st.dsort_job_id = obs.dsort.id
        if obs.dsort.aborted:
            msg = f"dSort job {obs.dsort.id} aborted: " + ("; ".join(obs.dsort.errors) or "no error reported")
            st.steps[SHUFFLED] = StepState(False, "ShuffleFailed", msg)
            return _failed(decision, prev_phase, "ShuffleFailed", msg)
        if not obs.dsort.finished:
            st.progress = dsort_progress(obs.dsort)
            running = f"dSort job {obs.dsort.id} running: {st.progress['summary']}"
            st.steps[SHUFFLED] = StepState(False, "Shuffling", running)
            return _working(decision, prev_step, Phase.SHUFFLING, "Shuffling", running)
        st.steps[SHUFFLED] = StepState(True, "Shuffled", f"dSort job {obs.dsort.id} finished")
        verify_prefix = builders.output_base(spec, owner)
    else:
        verify_prefix = naming.shard_prefix(builders.converted_base(spec, owner))

    # ---- verification
    st.progress = conversion_progress(plan, {}, reports, gen)
    if obs.output is None:
        decision.need_output = True
        st.steps[VERIFIED] = StepState(False, "Verifying")
        return _working(decision, prev_step, Phase.VERIFYING, "Verifying", "counting samples in the output shards")
    tally = obs.output
    st.shards_output = len(tally.shards)
    st.bytes_output = tally.bytes
    problem = compare(st.samples_written, written, tally)
    if problem is None and spec.shuffle is None and [s.name for s in tally.shards] != converted_shards:
        problem = f"hold {len(tally.shards)} shards, the converters reported {len(converted_shards)}"
    if problem is not None:
        msg = f"output shards under {verify_prefix} {problem}"
        st.steps[VERIFIED] = StepState(False, "VerificationFailed", msg)
        return _failed(decision, prev_phase, "VerificationFailed", msg)
    total = tally.samples
    st.steps[VERIFIED] = StepState(
        True,
        "Verified",
        f"{total} samples, {written.members} members, {written.member_bytes} bytes in {len(tally.shards)} shards",
    )
    bucket, provider, index = index_location(spec)
    info = {
        "namespace": owner.namespace,
        "resource": owner.name,
        "uid": owner.uid,
        "generation": gen,
        "bucket": bucket,
        "provider": provider,
        "samples": total,
        "algorithm": spec.shuffle.algorithm if spec.shuffle else "none",
        "seed": spec.shuffle.seed if spec.shuffle else None,
    }
    actions.append(
        WriteIndex(
            bucket,
            provider,
            index,
            builders.build_shard_index(
                owner.name, [(s.name, s.samples, s.size, s.checksum) for s in tally.shards], index, info
            ),
        )
    )
    if spec.shuffle is not None and spec.shuffle.delete_input:
        actions.append(DeleteObjects(spec.output.bucket.name, spec.output.bucket.provider, tuple(converted_shards)))
    st.index_object = f"{provider}://{bucket}/{index}"
    st.completion_time = (prev.get("completionTime") if prev_phase == Phase.READY else None) or now
    st.phase = Phase.READY
    st.reason = "Succeeded"
    st.message = (
        f"{total} samples in {len(tally.shards)} shards ({st.bytes_output / 2**20:.1f} MiB); "
        f"{st.samples_skipped} incomplete samples skipped"
    )
    decision.requeue = None
    if prev_phase != Phase.READY:
        decision.events.append(Event("Normal", "Ready", st.message))
    return decision


def conversion_progress(
    plan: dict[str, Any], progress: dict[int, dict[str, Any]], reports: dict[int, dict[str, Any]], generation: int
) -> dict[str, Any]:
    """Samples and bytes converted so far, from the workers' progress objects (a report counts as done)."""
    planned = int(plan.get("samples") or 0)
    samples = nbytes = 0
    for worker, p in progress.items():
        if worker in reports or int(p.get("generation", -1)) != generation:
            continue
        samples += int(p.get("samples") or 0)
        nbytes += int(p.get("bytes") or 0)
    for r in reports.values():
        samples += int(r.get("written") or 0)
        nbytes += int(r.get("bytes") or 0)
    samples = min(samples, planned)
    percent = 100 if planned == 0 else samples * 100 // planned
    return {
        "summary": f"{percent}%",
        "percent": percent,
        "samples": samples,
        "samplesPlanned": planned,
        "bytes": nbytes,
    }


def dsort_progress(job: DsortJob) -> dict[str, Any]:
    """dSort's own counters: input shards extracted, then output shards created."""
    if job.to_create:
        summary = f"dSort created {job.created_shards}/{job.to_create} shards"
        percent = 50 + job.created_shards * 50 // max(1, job.to_create)
    else:
        summary = f"dSort extracted {job.extracted_shards}/{job.input_shards} shards"
        percent = job.extracted_shards * 50 // max(1, job.input_shards)
    return {"summary": summary, "percent": min(percent, 100)}


def _fill_counts(st: DatasetStatus, plan: dict[str, Any] | None, reports: dict[int, dict[str, Any]]) -> None:
    st.samples_written = sum(int(r.get("written") or 0) for r in reports.values())
    plan = plan or {}
    st.skipped_by_reason = {str(k): int(v) for k, v in (plan.get("skipped") or {}).items()}
    st.rejected_files = {str(k): int(v) for k, v in (plan.get("rejectedFiles") or {}).items()}
    st.samples_skipped = sum(st.skipped_by_reason.values())
    st.samples_total = int(plan.get("samples") or 0) + st.samples_skipped if plan else 0
    st.shards_converted = sum(len(r.get("shards") or []) for r in reports.values())
    st.bytes_output = 0


def _working(d: Decision, prev_step: tuple[Any, Any], phase: Phase, reason: str, message: str) -> Decision:
    d.status.phase, d.status.reason, d.status.message = phase, reason, message
    d.requeue = ACTIVE_REQUEUE
    if prev_step != (phase, reason):
        d.events.append(Event("Normal", reason, message))
    return d


def _stalled(d: Decision, prev_stalled: str | None, phase: Phase, reason: str, message: str) -> Decision:
    d.status.phase, d.status.reason, d.status.message, d.status.stalled = phase, reason, message, True
    d.requeue = STALLED_REQUEUE
    if prev_stalled != reason:
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
