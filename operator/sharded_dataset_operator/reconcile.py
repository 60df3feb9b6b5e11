"""The decision core: (spec, observed state) -> (actions, status, events). Pure: no I/O, no clock.

The pipeline of one version is derived entirely from what exists:

    planner Job + plan -> converter Job + worker reports in AIS -> dSort job (found by its description)
        -> output listing -> the version's own index -> the stable index (publishing)

so the operator can be killed at any point and, on restart, continues from where the cluster is. A new
version is built beside the published one, which stays readable until the new one is published and then
for `spec.output.retainPrevious` (`versions.py`). Records of where each version wrote (`status.artifacts`,
also kept in each version's own index) are what lets the operator delete a version it no longer needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import builders, failures, guard, naming, units, versions
from .builders import ConverterDefaults, Owner
from .model import DsortJob, JobState
from .spec import DatasetSpec
from .status import CONVERTED, SHUFFLED, VERIFIED, DatasetStatus, Phase, StepState
from .times import epoch, parse
from .verify import OutputTally, Totals, compare
from .versions import IndexInfo

ACTIVE_REQUEUE = 1.0  # while a step runs (the operator's SDS_ACTIVE_INTERVAL overrides it)
REBALANCE_POLL = 5.0  # seconds between looks while a dSort attempt waits for AIS's rebalance to end
STALLED_REQUEUE = 15.0
SERVE_ETL_RETRY = 300.0  # seconds between attempts to start a serving ETL that AIS could not start


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
    dsort_attempts: dict[int, DsortJob] = field(default_factory=dict)
    split_attempts: dict[str, dict[int, DsortJob]] = field(default_factory=dict)  # with spec.splits, per split
    capacity_problems: tuple[str, ...] = ()  # AIS targets' capacity errors, asked for when a dSort job is lost
    retry_request: str | None = None
    output: OutputTally | None = None
    outputs: dict[str, OutputTally] = field(default_factory=dict)  # with spec.splits: each split's, by split
    published: IndexInfo | None = None  # what the stable index names (when this resource wrote it)
    version_indexes: dict[str, IndexInfo] = field(default_factory=dict)  # versions whose own index exists
    wanted_index: dict[str, Any] | None = None  # the wanted version's own index, when already written
    reused: dict[str, Any] | None = None  # the planner's record of the converted shards it reuses
    output_conflict: str | None = None  # the stable index belongs to another resource: why, naming it
    etls: dict[str, str] = field(default_factory=dict)  # this resource's AIS ETLs (naming.etl_prefix): stage
    rebalancing: tuple[str, ...] = ()  # AIS's running rebalance jobs, asked for before a dSort attempt starts
    approval: str | None = None  # the approve annotation (guard.APPROVE_ANNOTATION): the version a person approved
    split_stables: dict[str, str | None] = field(default_factory=dict)  # with splits: the version each split's
    # stable index names (None: it names none of this resource's)
    split_sources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (version, split): own
    # split indexes of the published or wanted version, read when a split's stable index is behind it


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
    """Abort an old version's dSort and delete everything it wrote (by version prefix): a previous version
    whose retention is over (`retired`), or a build superseded before it was published."""

    record: dict[str, Any]
    retired: bool = False
    in_use: tuple[tuple[str, str, str], ...] = ()  # (bucket, provider, name): the stable indexes readers use,
    # looked at once more just before deleting (none may name the version)


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
    | WriteIndex
    | DeleteObjects
    | DeletePrefix
    | InitEtl
    | DeleteEtls
)


# What the executor reports back, one per action it reached (`operations.execute`); `after_actions` decides
# what each report means for the status. An action after a `STALL` or `FAIL` report is not carried out.
DONE = "Done"  # carried out; `result`: what it returned (a dSort job id)
BUSY = "ConverterRunning"  # not carried out: a converter of that version still runs (it could write after)
FAILED_CLEANUP = "CleanupFailed"  # a deletion failed (AIS unavailable, refused, a listing or plan unreadable)
DENIED = "AccessDenied"  # the dataset's token may not do what the dSort job would (STALL)
REJECTED = "ShuffleRejected"  # AIS refused the dSort request (FAIL)
ETL_FAILED = "EtlFailed"  # AIS could not start an ETL (FAIL, unless it is the readers' ETL)
STOPS = (DENIED, REJECTED, ETL_FAILED)


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
    record_first: bool = False  # write `status.artifacts` before carrying out the actions (`_record_first`)
    requeue: float | None = ACTIVE_REQUEUE


# ------------------------------------------------------------------------------------------ helpers


def artifact_record(spec: DatasetSpec, owner: Owner) -> dict[str, Any]:
    """Where this version writes: enough to delete it later even if the spec changes."""
    locations = [
        {
            "bucket": spec.output.bucket.name,
            "provider": spec.output.bucket.provider,
            "prefix": builders.converted_base(spec, owner),
        }
    ]
    if spec.shuffle is not None:
        for split in spec.splits.names if spec.splits else (None,):
            locations.append(
                {
                    "bucket": spec.shuffle.output_bucket.name,
                    "provider": spec.shuffle.output_bucket.provider,
                    "prefix": builders.output_base(spec, owner, split),
                }
            )
    bucket, provider, stable = index_location(spec)
    return {
        "version": owner.version,
        "generation": owner.generation,
        "refresh": owner.refresh,
        "locations": locations,
        "dsortDescription": naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.version),
        "plan": naming.plan_manifest_name(builders.converted_base(spec, owner)),
        "pool": {
            "bucket": spec.output.bucket.name,
            "provider": spec.output.bucket.provider,
            "prefix": builders.unit_pool(spec, owner),
        },
        "index": {
            "bucket": bucket,
            "provider": provider,
            "stable": stable,
            "versioned": naming.versioned_index_name(index_prefix(spec), owner.uid, owner.version),
            **(
                {
                    "splits": {
                        split: {
                            "stable": naming.index_name(builders.split_prefix(index_prefix(spec), split)),
                            "versioned": naming.versioned_index_name(
                                builders.split_prefix(index_prefix(spec), split), owner.uid, owner.version
                            ),
                        }
                        for split in spec.splits.names
                    }
                }
                if spec.splits
                else {}
            ),
        },
    }


def index_prefix(spec: DatasetSpec) -> str:
    return spec.shuffle.output_prefix if spec.shuffle is not None else spec.output.prefix


def index_location(spec: DatasetSpec) -> tuple[str, str, str]:
    """(bucket, provider, name) of the stable index."""
    b = spec.shuffle.output_bucket if spec.shuffle is not None else spec.output.bucket
    return b.name, b.provider, naming.index_name(index_prefix(spec))


def _examples(report: dict[str, Any]) -> str:
    ex = report.get("examples") or {}
    parts = [f"{reason}: {', '.join(keys[:3])}" for reason, keys in sorted(ex.items()) if keys]
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ decision


@dataclass(slots=True)
class Track:
    """What one output of the version is made of: the whole dataset, or one split of it (`split`)."""

    split: str | None
    shards: list[str]  # converted shard names, sorted
    key_order: list[str]  # the same, by first key (the index order without a shuffle)
    written: Totals
    samples: int
    tar_bytes: int


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
        if _seconds_since(job.completed_at, self.now) < failures.REPORT_GRACE_SECONDS:
            decision = self.working(Phase.CONVERTING, pending, f"{message} (waiting: AIS may be degraded)")
            decision.requeue = 5.0
            return decision
        return self.failed(None, missing, message)

    def job_ended(
        self, job: JobState, what: str, working: str, failed: str, missing: tuple[str, str, str]
    ) -> Decision | None:
        """A planner or converter Job that is going, failed, or completed without its objects; None while it runs.

        `missing`: (pending reason, failure reason, message) for a completed Job whose objects are invisible.
        """
        if job.deleting:
            return self.working(Phase.CONVERTING, working, f"waiting for the previous {what} Job to go")
        if job.failed_reason:
            msg = f"{what} Job {job.name} failed: {job.failed_message or job.failed_reason}"
            return self.failed(CONVERTED, failed, msg)
        if job.complete:
            return self.missing_output(job, *missing)
        return None

    def failed(self, step: str | None, reason: str, message: str) -> Decision:
        if step is not None:
            self.st.steps[step] = StepState(False, reason, message)
        return _failed(self.decision, self.prev_phase, reason, message)


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
    same_version = prev.get("observedGeneration") == gen and _building_version(prev) in (None, owner.version)
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
    _fill_counts(st, p.plan, p.reports, p.reused)
    if obs.job is not None:
        st.workers_succeeded, st.workers_failed = obs.job.succeeded, obs.job.failed
    p.dsort_attempts = dict(obs.dsort_attempts)
    lost = lost_dsort_attempt(prev, gen, obs.dsort_attempts, obs.capacity_problems) if same_version else None
    if lost is not None:
        p.dsort_attempts[lost[0]] = lost[1]
    for split in spec.splits.names if spec.splits else ():
        attempts = dict(obs.split_attempts.get(split) or {})
        record = ((prev.get("splits") or {}).get(split) or {}).get("shuffle") or {}
        lost = lost_dsort_attempt(prev, gen, attempts, obs.capacity_problems, record) if same_version else None
        if lost is not None:
            attempts[lost[0]] = lost[1]
        p.split_attempts[split] = attempts
    if obs.output_conflict:  # nothing is written; the records of what this resource wrote are kept
        st.artifacts = _unique_records([record, *(prev.get("artifacts") or [])])
        decision = _stalled(p.decision, prev_stalled, Phase.PENDING, "OutputConflict", obs.output_conflict)
    else:
        decision = _build(p)
        _settle_versions(p, decision)
    _serve_etl(p)
    unneeded = sorted(set(obs.etls) - p.etls_needed)
    if unneeded:  # the conversion that used them is over (or the spec no longer asks for one)
        decision.actions.append(DeleteEtls(tuple(unneeded)))
    decision.events[:0] = refused
    decision.record_first = _record_first(prev, decision)
    return decision


CREATING = (EnsureBucket, CreateJob, StartDsort, WriteIndex, InitEtl)


def _record_first(prev: dict[str, Any], d: Decision) -> bool:
    """Whether the records of where versions write must reach the status before this pass writes anything:
    a version whose first objects are written before its record is saved (the pass then stopped, and a newer
    spec superseded it) would be known to nobody, and never deleted."""
    saved = {versions.record_version(r) for r in prev.get("artifacts") or []}
    new = any(versions.record_version(r) not in saved for r in d.status.artifacts or [])
    return new and any(isinstance(a, CREATING) for a in d.actions)


def _build(p: Pass) -> Decision:
    if p.obs.published is not None and p.obs.published.version == p.owner.version:
        return _serving(p)
    retry = p.obs.retry_request
    if p.prev_phase == Phase.FAILED and retry and retry != (p.st.retry or {}).get("request"):
        return _retry_requested(p)
    for phase in (_planning, _conversion, _shuffle, _verification):
        outcome = phase(p)
        if outcome is not None:
            return outcome
    raise AssertionError("verification always decides")  # pragma: no cover


def _building_version(status: dict[str, Any]) -> str | None:
    """The version the previous status was about: the one it was building, else the published one."""
    v = status.get("versions") or {}
    building = (v.get("building") or {}).get("version")
    return str(building or (v.get("published") or {}).get("version") or "") or None


def _serving(p: Pass) -> Decision:
    """The wanted version is the published one: Ready, from what its index says (nothing is re-verified)."""
    info = p.obs.published
    assert info is not None
    st = p.st
    for step in (CONVERTED, SHUFFLED, VERIFIED) if p.spec.shuffle is not None else (CONVERTED, VERIFIED):
        st.steps[step] = StepState(True, {CONVERTED: "Converted", SHUFFLED: "Shuffled", VERIFIED: "Verified"}[step])
    st.shards_output, st.bytes_output = info.shards, info.bytes
    bucket, provider, index = index_location(p.spec)
    st.index_object = f"{provider}://{bucket}/{index}"
    st.progress = conversion_progress(p.plan or {}, {}, p.reports, p.owner.generation, p.reused)
    shuffle = p.prev.get("shuffle") or {} if p.prev_phase is not None else {}
    st.dsort_job_id, st.output_template = shuffle.get("dsortJobId"), shuffle.get("outputTemplate")
    st.shuffle_attempt, st.shuffle_started_at = shuffle.get("attempt"), shuffle.get("startedAt")
    st.shuffle_max_attempts = p.spec.shuffle.max_attempts if p.spec.shuffle else None
    st.completion_time = info.published_at or p.now
    if info.splits:
        st.splits = _split_status(info.splits, None)
    st.phase, st.reason = Phase.READY, "Succeeded"
    st.message = _ready_message(info.version, info.samples, info.shards, info.bytes, st.samples_skipped)
    p.decision.requeue = None
    if p.prev_phase != Phase.READY:
        p.decision.events.append(Event("Normal", "Ready", st.message))
    return p.decision


def _ready_message(version: str, samples: int, shards: int, nbytes: int, skipped: int) -> str:
    return (
        f"version {version}: {samples} samples in {shards} shards ({nbytes / 2**20:.1f} MiB); "
        f"{skipped} incomplete samples skipped"
    )


def _settle_versions(p: Pass, d: Decision) -> None:
    """Everything about versions other than the wanted one: serve the published one while the wanted one is
    not, delete superseded builds at once and previous versions once their retention is over, and say all
    of it in `status.versions`."""
    st, obs, owner = d.status, p.obs, p.owner
    published = p.published_now or obs.published
    records = [*(p.prev.get("artifacts") or [])]
    indexes = dict(obs.version_indexes)
    if obs.published is not None:
        record = obs.published.record
        if record and versions.record_problem(record, owner.namespace, owner.name, owner.uid) is None:
            records.append(record)  # known even if the status lost its record
        if p.published_now is not None and obs.published.version != owner.version:
            indexes.setdefault(obs.published.version, obs.published)  # replaced by this pass: previous now
    retention = versions.plan_retention(
        owner.version, published, records, indexes, p.now, p.spec.output.retain_seconds, _known_versions(p.prev)
    )
    st.artifacts = [_current_first(st.artifacts or [], owner.version), *retention.keep]
    st.artifacts = _unique_records(st.artifacts)
    if p.published_now is None and obs.published is not None and not obs.output_conflict:
        d.actions.extend(_split_repairs(p, obs.published))  # splits' stable indexes behind the published version
    d.actions.extend(_deletions(p, d, retention))  # after publishing: a failed deletion never holds it back
    building = None
    if published is None or published.version != owner.version:
        building = {
            "version": owner.version,
            "generation": owner.generation,
            "refresh": owner.refresh or None,
            "phase": str(st.phase),
            "reason": st.reason,
        }
    seen = (p.prev.get("versions") or {}).get("published")
    if published is None and isinstance(seen, dict) and seen.get("version"):
        # promise P2: its stable index is not seen now; remembered (and nothing deleted) until it is seen again
        # or a version is published anew
        seen = {**seen, "indexMissing": True}
    else:
        seen = published.summary() if published is not None else None
    st.versions = {
        "published": seen,
        "building": building,
        "previous": retention.previous,
        **({"deletionsHeld": p.deletions_held} if p.deletions_held else {}),
    }
    if published is not None and published.version != owner.version:
        what = f"version {published.version} ({published.samples} samples in {published.shards} shards)"
        st.serving = f"serving {what}; version {owner.version}: {st.message}"
        st.index_object = st.index_object or _stable_url(p.spec)
    if retention.next_deadline is not None:
        due = retention.next_deadline + 1.0
        d.requeue = due if d.requeue is None else min(d.requeue, due)
    if any(isinstance(a, CleanupArtifacts) for a in d.actions) and (d.requeue is None or d.requeue > 30.0):
        d.requeue = 30.0  # see that the deletions happened (a failed one is retried)


def _deletions(p: Pass, d: Decision, retention: versions.Retention) -> list[Action]:
    """Delete the versions `retention` gave up (their objects, then the converted shards no version holds),
    once the wanted version's planner cannot pick any of them for reuse any more."""
    st, owner = d.status, p.owner
    cleanups: list[Action] = []
    held = _deletions_held(p, d)
    if held is not None and (retention.abandon or retention.retire):
        st.artifacts = _unique_records([*(st.artifacts or []), *retention.abandon, *retention.retire])
        retention.abandon, retention.retire = [], []
        p.deletions_held = held
    in_use = _in_use(p)
    for r in [*retention.abandon, *retention.retire]:  # promise P1, whatever the retention said
        if versions.record_version(r) in in_use:
            st.artifacts = _unique_records([*(st.artifacts or []), r])
    retention.abandon = [r for r in retention.abandon if versions.record_version(r) not in in_use]
    retention.retire = [r for r in retention.retire if versions.record_version(r) not in in_use]
    for r in retention.abandon:
        cleanups.append(CleanupArtifacts(record=r, in_use=_stable_indexes(p.spec)))
        why = "superseded before it was published"
        d.events.append(Event("Normal", "VersionAbandoned", f"deleting version {versions.record_version(r)}: {why}"))
    for r in retention.retire:
        cleanups.append(CleanupArtifacts(record=r, retired=True, in_use=_stable_indexes(p.spec)))
        why = f"{p.spec.output.retain_seconds:.0f}s after it was replaced"
        d.events.append(Event("Normal", "VersionDeleted", f"deleting version {versions.record_version(r)}: {why}"))
    live = tuple(r for r in st.artifacts or [] if not _holds_no_units(p, r))
    if p.published_now is not None and p.spec.shuffle is not None and p.spec.shuffle.delete_input:
        # shuffle.deleteInput: the converted shards go once the shuffle is published (unless another version
        # still holds them), so the next version has none to reuse
        b = p.spec.output.bucket
        others = tuple(r for r in live if versions.record_version(r) != owner.version)
        cleanups.append(SweepUnits(b.name, b.provider, builders.unit_pool(p.spec, owner), live=others))
    gone = [*retention.abandon, *retention.retire]
    for bucket, provider, prefix in sorted({pool for r in gone if (pool := _pool_of(r)) is not None}):
        cleanups.append(
            SweepUnits(bucket, provider, prefix, live=live, restore=tuple(gone), in_use=_stable_indexes(p.spec))
        )
    return cleanups


def _holds_no_units(p: Pass, record: dict[str, Any]) -> bool:
    """The wanted version before it has a plan (it failed before planning): it holds no converted shards."""
    wanted = versions.record_version(record) == p.owner.version
    return (
        wanted and p.plan is None and not (p.obs.published is not None and p.obs.published.version == p.owner.version)
    )


def _known_versions(prev: dict[str, Any]) -> dict[str, str | None]:
    """The versions the last status said were published (None) or kept as previous (their deleteAfter)."""
    v = prev.get("versions") or {}
    known: dict[str, str | None] = {}
    for entry in v.get("previous") or []:
        if isinstance(entry, dict) and entry.get("version"):
            known[str(entry["version"])] = str(entry.get("deleteAfter") or "") or None
    published = (v.get("published") or {}).get("version")
    if published:
        known[str(published)] = None
    return known


def _stable_indexes(spec: DatasetSpec) -> tuple[tuple[str, str, str], ...]:
    """(bucket, provider, name) of the stable index and of every split's stable index."""
    bucket, provider, stable = index_location(spec)
    names = (
        [stable, *(naming.index_name(builders.split_prefix(index_prefix(spec), s)) for s in spec.splits.names)]
        if spec.splits
        else [stable]
    )
    return tuple((bucket, provider, n) for n in names)


def _in_use(p: Pass) -> set[str]:
    """The versions readers may be reading now: the one the stable index names (or this pass publishes), and
    every one a split's stable index names. Nothing of theirs is deleted (promise P1)."""
    used = {v for v in p.obs.split_stables.values() if v}
    for info in (p.obs.published, p.published_now):
        if info is not None:
            used.add(info.version)
    return used


def _deletions_held(p: Pass, d: Decision) -> str | None:
    """Why no version may be deleted on this pass (None: they may). Promise P2: what could not be seen is not
    taken for "nothing in use": while the stable index the last status saw is missing, nothing is deleted."""
    if not _may_sweep(p, d):
        return "the wanted version's planner may still pick converted shards to reuse"
    seen = ((p.prev.get("versions") or {}).get("published") or {}).get("version")
    if seen and p.obs.published is None and p.published_now is None:
        return (
            f"the stable index that named version {seen} is missing or unreadable: nothing is deleted until it is seen"
        )
    return None


def _may_sweep(p: Pass, d: Decision) -> bool:
    """Whether versions may be deleted now: not while the wanted version's planner may still pick converted
    shards to reuse (it lists them once), i.e. once its plan exists, it is published, or it failed."""
    published = p.obs.published is not None and p.obs.published.version == p.owner.version
    return published or p.published_now is not None or p.plan is not None or d.status.phase == Phase.FAILED


def _pool_of(record: dict[str, Any]) -> tuple[str, str, str] | None:
    pool = record.get("pool") or {}
    if not pool.get("prefix"):
        return None
    return str(pool["bucket"]), str(pool.get("provider") or "ais"), str(pool["prefix"])


def _stable_url(spec: DatasetSpec) -> str:
    bucket, provider, index = index_location(spec)
    return f"{provider}://{bucket}/{index}"


def _current_first(records: list[dict[str, Any]], version: str) -> dict[str, Any]:
    return next(r for r in records if versions.record_version(r) == version)


def _unique_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for r in records:
        v = versions.record_version(r)
        if v not in seen:
            seen.add(v)
            out.append(r)
    return out


def _retry_requested(p: Pass) -> Decision:
    """A Failed run whose retry annotation has a new value: set aside what the failed step left (its Job, and
    the objects that would make the next attempt fail alike), then start it again (promise P5)."""
    reason = next((c.get("reason") for c in p.prev.get("conditions") or [] if c.get("type") == "Stalled"), "")
    version = p.owner.version
    base, b = builders.converted_base(p.spec, p.owner), p.spec.output.bucket
    attempt_objects = [DeletePrefix(b.name, b.provider, naming.report_prefix(base)),
                       DeletePrefix(b.name, b.provider, naming.progress_prefix(base))]  # fmt: skip
    if reason in ("PlanningFailed", "PlanMissing", "NoSamples", "SplitEmpty"):
        p.decision.actions.append(DeleteJobs((naming.job_name(p.owner.name, version, "plan"),)))
        p.decision.actions.append(DeleteObjects(b.name, b.provider, (naming.plan_manifest_name(base),)))
        if reason == "SplitEmpty":  # decided on the converted samples: the source may have changed since
            p.decision.actions.append(DeleteJobs((naming.job_name(p.owner.name, version),)))
            p.decision.actions.extend(attempt_objects)
    elif reason in ("ConversionFailed", "ReportMissing"):
        p.decision.actions.append(DeleteJobs((naming.job_name(p.owner.name, version),)))
    elif reason in ("ConversionIncomplete", "TransformFailed"):
        p.decision.actions.append(DeleteJobs((naming.job_name(p.owner.name, version),)))
        p.decision.actions.extend(attempt_objects)  # reports of the failed attempt would fail the next alike
    p.st.retry = {"request": p.obs.retry_request, "shuffleAttemptBase": max(p.dsort_attempts, default=0)}
    if p.split_attempts:
        p.st.retry["shuffleAttemptBases"] = {k: max(v, default=0) for k, v in p.split_attempts.items()}
    p.decision.events.append(Event("Normal", "RetryRequested", f"retrying after {reason or 'the failure'}"))
    p.decision.requeue = ACTIVE_REQUEST_DELAY
    p.st.phase, p.st.reason, p.st.message = Phase.PENDING, "Retrying", f"retry requested after {reason}"
    return p.decision


ACTIVE_REQUEST_DELAY = 2.0


def _planning(p: Pass) -> Decision | None:
    """One pod lists the source and writes the plan."""
    obs, st = p.obs, p.st
    placement = builders.placement_problem(p.spec, p.defaults)
    if placement is not None:
        return p.failed(None, "PlacementNotAllowed", placement)
    if p.plan is not None:
        if int(p.plan.get("samples") or 0) == 0:  # never published, shuffle or not (promise P4)
            msg = "no complete samples: " + (_examples(p.plan) or "the source is empty")
            if p.obs.published is not None:
                msg += f"; version {p.obs.published.version} stays published"
            return p.failed(CONVERTED, "NoSamples", msg)
        return None
    st.steps[CONVERTED] = StepState(False, "Planning")
    if obs.planner is None:
        if obs.source_problem:
            return _stalled(p.decision, p.prev_stalled, Phase.PENDING, "SourceNotFound", obs.source_problem)
        p.decision.actions.append(EnsureBucket(p.spec.output.bucket.name, p.spec.output.bucket.provider))
        previous = previous_plan(p.spec, p.owner, obs.published)
        p.decision.actions.append(CreateJob(builders.build_planner_job(p.spec, p.owner, p.defaults, previous)))
        return p.working(Phase.CONVERTING, "Planning", "starting the planner")
    msg = f"planner Job {obs.planner.name} completed but its plan is missing"
    settled = p.job_ended(obs.planner, "planner", "Planning", "PlanningFailed", ("PlanPending", "PlanMissing", msg))
    if settled is not None:
        return settled
    return p.working(Phase.CONVERTING, "Planning", "listing the source and grouping it into samples")


def previous_plan(spec: DatasetSpec, owner: Owner, published: IndexInfo | None) -> str | None:
    """The plan manifest of the published version, when it is another version of this resource whose converted
    shards are where this version writes its own (the new planner takes over its intact units)."""
    if published is None or published.version == owner.version:
        return None
    record = published.record
    pool = record.get("pool") or {}
    b = spec.output.bucket
    if (pool.get("bucket"), pool.get("provider") or "ais", pool.get("prefix")) != (
        b.name,
        b.provider,
        builders.unit_pool(spec, owner),
    ):
        return None
    plan = str(record.get("plan") or "")
    return plan if plan.startswith(naming.uid_base(spec.output.prefix, owner.uid)) else None


def converter_workers(spec: DatasetSpec, plan: dict[str, Any]) -> int:
    """Converter pods for a plan: `spec.conversion.workers`, fewer when fewer units are left to convert."""
    return min(spec.conversion.workers, int((plan.get("units") or {}).get("convert") or 0))


def _conversion(p: Pass) -> Decision | None:
    """The converter workers, each on its share of the units the plan did not find converted already."""
    assert p.plan is not None
    spec, obs, st, plan = p.spec, p.obs, p.st, p.plan
    workers = converter_workers(spec, plan)
    st.workers = workers
    if len(p.reports) < workers:
        st.steps[CONVERTED] = StepState(False, "Converting")
        st.progress = conversion_progress(plan, obs.progress, p.reports, p.owner.generation, p.reused)
        todo = f"{(plan.get('units') or {}).get('convertSamples', plan['samples'])} samples"
        if p.reused:
            todo += f" ({int(p.reused.get('written') or 0)} more reused from an earlier version)"
        waiting = _etl(p)
        if waiting is not None:
            return waiting
        if obs.job is None:
            p.decision.actions.append(
                CreateJob(builders.build_converter_job(spec, p.owner, p.defaults, workers=workers))
            )
            return p.working(Phase.CONVERTING, "Converting", f"starting {workers} converter worker(s) for {todo}")
        missing = sorted(set(range(workers)) - set(p.reports))
        msg = f"converter Job completed but reports of worker(s) {missing} are missing"
        settled = p.job_ended(
            obs.job, "converter", "Converting", "ConversionFailed", ("ReportsPending", "ReportMissing", msg)
        )
        if settled is not None:
            return settled
        return p.working(
            Phase.CONVERTING,
            "Converting",
            f"{len(p.reports)}/{workers} converter workers done, {st.progress['samples']}/{plan['samples']} samples",
        )
    done = [*p.reports.values(), *([p.reused] if p.reused else [])]
    reused = f", {st.shards_reused} reused" if st.shards_reused else ""
    st.steps[CONVERTED] = StepState(
        True, "Converted", f"{st.samples_written} samples in {st.shards_converted} shards{reused}"
    )
    transformed_away = sum(int(n) for r in done for n in (r.get("skippedByReason") or {}).values())
    if st.samples_written + transformed_away != int(plan.get("samples") or 0):
        msg = f"the converters wrote {st.samples_written} samples but the plan holds {plan['samples']}"
        if transformed_away:
            msg += f" ({transformed_away} skipped by the transform)"
        return p.failed(CONVERTED, "ConversionIncomplete", msg)
    covered = sum(int(r.get("planFingerprint") or 0) for r in done) % units.FINGERPRINT_MOD
    if covered != int((plan.get("units") or {}).get("fingerprint") or 0):
        msg = "the converted and reused units do not hold exactly the planned samples (unit fingerprints differ)"
        return p.failed(CONVERTED, "ConversionIncomplete", msg)
    if st.samples_written == 0 and transformed_away:
        errors = sorted(str(r.get("firstTransformError")) for r in done if r.get("firstTransformError"))
        first = f"first error: sample {errors[0]}" if errors else "the function dropped every sample"
        return p.failed(CONVERTED, "TransformFailed", f"the transform left no sample; {first}")
    records = [s for r in done for s in r.get("shards") or []]
    pool = builders.unit_pool(spec, p.owner)
    foreign = [str(s.get("name")) for s in records if not str(s.get("name") or "").startswith(pool)]
    if foreign:
        msg = f"the reports list shards outside this resource's converted shards ({pool}*): {', '.join(foreign[:3])}"
        return p.failed(CONVERTED, "ConversionIncomplete", msg)
    p.converted_shards = sorted(s["name"] for s in records)
    p.key_order = [s["name"] for s in sorted(records, key=lambda s: (str(s.get("firstKey") or ""), s.get("part") or 0))]
    for r in done:
        p.written.merge(Totals.from_dict(r))
    if spec.splits is None:
        tar_bytes = sum(int(r.get("bytes") or 0) for r in done)
        p.tracks = [Track(None, p.converted_shards, p.key_order, p.written, st.samples_written, tar_bytes)]
        return None
    by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in spec.splits.names}
    for record in records:
        by_split.setdefault(str(record.get("split") or ""), []).append(record)
    unknown = sorted(k for k in by_split if k not in spec.splits.names)
    if unknown:
        return p.failed(CONVERTED, "ConversionIncomplete", f"the reports name splits the spec has not: {unknown}")
    for name in spec.splits.names:
        recs = by_split[name]
        written = Totals()
        for record in recs:
            written.merge(Totals.from_dict(record))
        samples = sum(int(r.get("samples") or 0) for r in recs)
        if samples == 0:
            return p.failed(CONVERTED, "SplitEmpty", f"split {name} holds no complete sample")
        order = [r["name"] for r in sorted(recs, key=lambda r: (str(r.get("firstKey") or ""), r.get("part") or 0))]
        tar_bytes = sum(int(r.get("bytes") or 0) for r in recs)
        p.tracks.append(Track(name, sorted(r["name"] for r in recs), order, written, samples, tar_bytes))
    st.splits = {t.split or "": {"samples": t.samples, "convertedShards": len(t.shards)} for t in p.tracks}
    return None


def _etl(p: Pass) -> Decision | None:
    """With `spec.transform.aisEtl`: the version's AIS ETL must run before (and while) the converters read
    through it; it is started here and removed once the conversion is over (`decide`)."""
    etl = p.spec.transform.ais_etl if p.spec.transform else None
    if etl is None:
        return None
    name = naming.etl_name(p.owner.uid, p.owner.version)
    p.etls_needed.add(name)
    stage = p.obs.etls.get(name)
    p.st.etl = {"name": name, "stage": stage or "Initializing", "image": etl.image}
    if stage == "Running":
        return None
    problem = builders.etl_image_problem(etl, p.defaults)
    if problem is not None:
        return p.failed(CONVERTED, "EtlNotAllowed", problem)
    if stage is None:
        p.decision.actions.append(InitEtl(name, builders.etl_init_message(etl, name, p.owner, p.defaults)))
        return p.working(Phase.CONVERTING, "EtlStarting", f"starting AIS ETL {name} ({etl.image}) on every target")
    if stage in ("Aborted", "Unknown"):
        p.etls_needed.discard(name)  # removed, so that a retry starts it afresh
        return p.failed(CONVERTED, "EtlFailed", f"AIS ETL {name} is {stage}: see its pods in the AIS namespace")
    return p.working(Phase.CONVERTING, "EtlStarting", f"waiting for AIS ETL {name} ({stage})")


def _serve_etl(p: Pass) -> None:
    """`spec.serve.etl`: an AIS ETL kept running while the resource exists, for readers to apply to its shards
    on the fly (`GET <shard>?etl_name=<status.serve.etl>`). Started on any pass that finds it missing."""
    etl = p.spec.serve_etl
    if etl is None:
        return
    name = naming.serve_etl_name(p.owner.uid)
    stage = p.obs.etls.get(name)
    serve: dict[str, Any] = {"etl": name, "stage": stage or "Initializing", "image": etl.image}
    p.st.serve = serve
    problem = builders.etl_image_problem(etl, p.defaults)
    if problem is not None and stage is None:
        serve.update(etl=None, stage=None, message=problem)
        if (p.prev.get("serve") or {}).get("message") != problem:
            p.decision.events.append(Event("Warning", "EtlNotAllowed", problem))
        return
    if stage in ("Aborted", "Unknown"):
        serve["message"] = f"AIS ETL {name} is {stage}: started again"
        return  # not needed: removed now, started again on the next pass
    p.etls_needed.add(name)
    if stage is None:
        failed_at = epoch((p.prev.get("serve") or {}).get("failedAt"))
        if failed_at is not None and _seconds_since(failed_at, p.now) < SERVE_ETL_RETRY:
            serve.update(
                stage=None, message=(p.prev.get("serve") or {}).get("message"), failedAt=p.prev["serve"]["failedAt"]
            )
            return  # AIS could not start it a moment ago: try again later, not on every pass
        p.decision.actions.append(InitEtl(name, builders.etl_init_message(etl, name, p.owner, p.defaults), True))


def _shuffle(p: Pass) -> Decision | None:
    """dSort for each output (one, or one per split, in spec order), attempt after attempt while the failures
    are the cluster's weather and the budget lasts."""
    if p.spec.shuffle is None:
        return None
    for track in p.tracks:
        decision = _shuffle_track(p, track)
        if decision is not None:
            return decision
    return None


def _shuffle_track(p: Pass, track: Track) -> Decision | None:
    spec, owner, st = p.spec, p.owner, p.st
    assert spec.shuffle is not None
    split = track.split
    attempts = p.dsort_attempts if split is None else p.split_attempts.get(split, {})
    attempt = max(attempts, default=0)
    retry = st.retry or {}
    base = int(
        (retry.get("shuffleAttemptBase") if split is None else (retry.get("shuffleAttemptBases") or {}).get(split)) or 0
    )
    budget = spec.shuffle.max_attempts
    st.shuffle_max_attempts = budget
    same_version = p.prev.get("observedGeneration") == owner.generation and _building_version(p.prev) in (
        None,
        owner.version,
    )
    recorded = (
        p.prev.get("shuffle") if split is None else ((p.prev.get("splits") or {}).get(split) or {}).get("shuffle")
    ) or {}
    what = "dSort" if split is None else f"dSort of split {split}"
    out_base = builders.output_base(spec, owner, split)
    state: dict[str, Any] = {}
    job = attempts.get(attempt)
    start_next = job is None
    outcome: Decision | None = None
    if job is not None:
        state = {"attempt": attempt, "dsortJobId": job.id}
        if recorded.get("attempt") == attempt and same_version:
            state["startedAt"] = recorded.get("startedAt")
        state["outputTemplate"] = naming.output_template(naming.attempt_base(out_base, attempt))
        if job.aborted and attempt <= base:
            start_next = True  # aborted before the retry request: a fresh budget starts after it
        elif job.aborted:
            errors = "; ".join(job.errors) or "no error reported"
            msg = f"{what} attempt {attempt - base}/{budget} (job {job.id}) aborted: {errors}"
            if failures.classify_dsort_abort(job.errors) == failures.PERMANENT or attempt - base >= budget:
                outcome = p.failed(SHUFFLED, "ShuffleFailed", msg)
            else:
                wait = failures.backoff_seconds(attempt - base) - _seconds_since(job.ended_at, p.now)
                if wait > 0:
                    st.steps[SHUFFLED] = StepState(False, "ShuffleRetrying", msg)
                    outcome = p.working(Phase.SHUFFLING, "ShuffleRetrying", f"{msg}; retrying in {wait:.0f}s")
                    outcome.requeue = min(wait, 30.0)
                else:
                    start_next = True
        elif not job.finished:
            st.progress = dsort_progress(job)
            running = f"{what} job {job.id} (attempt {attempt - base}/{budget}) running: {st.progress['summary']}"
            st.steps[SHUFFLED] = StepState(False, "Shuffling", running)
            outcome = p.working(Phase.SHUFFLING, "Shuffling", running)
        else:
            state["finished"] = True
            st.steps[SHUFFLED] = StepState(True, "Shuffled", f"{what} job {job.id} finished")
    nxt = max(attempt, base) + 1
    if start_next and outcome is None and p.obs.rebalancing:
        # Objects are moving between targets (one joined or came back at a new address): a dSort job started
        # now may not find its inputs. Wait, without spending an attempt.
        msg = f"AIS is rebalancing ({', '.join(p.obs.rebalancing)}): {what} attempt {nxt - base}/{budget} waits for it"
        st.steps[SHUFFLED] = StepState(False, "WaitingForRebalance", msg)
        outcome = p.working(Phase.SHUFFLING, "WaitingForRebalance", msg)
        outcome.requeue = REBALANCE_POLL
    elif start_next and outcome is None:
        if job is not None:  # an aborted attempt: its partial output must not be counted or left behind
            b = spec.shuffle.output_bucket
            p.decision.actions.append(DeletePrefix(b.name, b.provider, naming.attempt_base(out_base, attempt)))
            if attempt > base:
                after = "; ".join(job.errors) or "an abort without an error"
                p.decision.events.append(
                    Event("Warning", "ShuffleRetry", f"{what} attempt {nxt - base}/{budget} after: {after}")
                )
        p.decision.actions.append(
            StartDsort(
                builders.build_dsort_spec(
                    spec, owner, track.shards, track.written.member_bytes, track.tar_bytes, nxt, split
                ),
                split,
            )
        )
        state = {
            "attempt": nxt,
            "startedAt": p.now,
            "outputTemplate": naming.output_template(naming.attempt_base(out_base, nxt)),
        }
        st.steps[SHUFFLED] = StepState(False, "Shuffling", f"starting {what} attempt {nxt - base}/{budget}")
        outcome = p.working(Phase.SHUFFLING, "Shuffling", f"starting {what} (attempt {nxt - base}/{budget})")
    if split is None or outcome is not None:  # the top-level fields show the output being shuffled
        st.dsort_job_id = state.get("dsortJobId")
        st.shuffle_attempt, st.shuffle_started_at = state.get("attempt"), state.get("startedAt")
        st.output_template = state.get("outputTemplate")
    if split is not None:
        st.splits = st.splits or {}
        st.splits.setdefault(split, {})["shuffle"] = {k: v for k, v in state.items() if v is not None}
    return outcome


def lost_dsort_attempt(
    previous: dict[str, Any],
    generation: int,
    observed: dict[int, DsortJob],
    problems: tuple[str, ...] = (),
    record: dict[str, Any] | None = None,
) -> tuple[int, DsortJob] | None:
    """The dSort attempt that status records as started but AIS no longer knows, as a job that ended.

    AIS answers a dSort start with a job id even when its targets refused the job (a target above its
    capacity high watermark refuses every new dSort), and a job is gone after every target that ran it
    restarted. Without this the attempt would be started again under the same number, forever and outside
    the budget. An attempt already recorded as shuffled counts as finished (its output is still verified).
    """
    shuffle = (previous.get("shuffle") or {}) if record is None else record
    attempt, job_id = shuffle.get("attempt"), shuffle.get("dsortJobId")
    if previous.get("observedGeneration") != generation or not attempt or not job_id:
        return None
    attempt = int(attempt)
    if attempt in observed or attempt < max(observed, default=0):
        return None
    shuffled = any(c.get("type") == SHUFFLED and c.get("status") == "True" for c in previous.get("conditions") or [])
    shuffled = shuffled if record is None else bool(record.get("finished"))
    why = "AIS no longer knows the job (its targets refused it at the start, or restarted since)"
    return attempt, DsortJob(
        id=str(job_id),
        description="",
        finished=shuffled,
        aborted=not shuffled,
        errors=() if shuffled else (why, *problems),
        extracted_records=0,
        created_shards=0,
        ended_at=epoch(shuffle.get("startedAt")),
    )


def _verification(p: Pass) -> Decision:
    """Count each output as it is listed, compare with what the converters wrote, index it, Ready."""
    spec, owner, obs, st = p.spec, p.owner, p.obs, p.st
    st.progress = conversion_progress(p.plan or {}, {}, p.reports, owner.generation, p.reused)
    verified: list[tuple[Track, list[tuple[Any, ...]], OutputTally]] = []
    for track in p.tracks:
        attempt = st.shuffle_attempt
        if track.split is not None and spec.shuffle is not None:
            attempt = ((st.splits or {}).get(track.split) or {}).get("shuffle", {}).get("attempt")
        verify_prefix = verification_prefix(spec, owner, attempt, track.split)
        tally = obs.outputs.get(track.split) if track.split is not None else obs.output
        if tally is None:
            p.decision.need_output = True
            p.decision.output_prefix = verify_prefix
            p.decision.output_key = track.split or ""
            if spec.shuffle is None:  # the version's own converted shards, among other versions' in the pool
                p.decision.output_only = frozenset(track.shards)
            st.steps[VERIFIED] = StepState(False, "Verifying")
            what = "counting samples in the output shards" + (f" of split {track.split}" if track.split else "")
            return p.working(Phase.VERIFYING, "Verifying", what)
        problem = compare(track.samples, track.written, tally)
        if problem is None and spec.shuffle is None and sorted(s.name for s in tally.shards) != track.shards:
            problem = f"hold {len(tally.shards)} shards, the converters reported {len(track.shards)}"
        if problem is not None:
            msg = f"output shards under {verify_prefix} {problem}"
            if _condition_reason(p.prev, VERIFIED) != "VerificationRetrying":
                # a listing taken while an AIS target was down is short: verify once more before judging
                st.steps[VERIFIED] = StepState(False, "VerificationRetrying", msg)
                decision = p.working(Phase.VERIFYING, "VerificationRetrying", f"{msg}; verifying again")
                decision.requeue = failures.VERIFY_RETRY_SECONDS
                return decision
            return p.failed(VERIFIED, "VerificationFailed", msg)
        shards = [(s.name, s.samples, s.size, s.checksum) for s in tally.shards]
        if spec.shuffle is None:  # the converted shards themselves: listed in key order (they are key ranges)
            position = {name: i for i, name in enumerate(track.key_order)}
            shards.sort(key=lambda s: position.get(str(s[0]), len(position)))
        verified.append((track, shards, tally))
    total = sum(t.samples for t, _, _ in verified)
    held = _publish_guard(p, total, verified)
    if held is not None:
        return held
    nshards = sum(len(tally.shards) for _, _, tally in verified)
    st.shards_output = nshards
    st.bytes_output = sum(tally.bytes for _, _, tally in verified)
    st.steps[VERIFIED] = StepState(
        True,
        "Verified",
        f"{total} samples, {p.written.members} members, {p.written.member_bytes} bytes in {nshards} shards",
    )
    _publish(p, total, verified)
    st.index_object = _stable_url(spec)
    st.completion_time = (p.prev.get("completionTime") if p.prev_phase == Phase.READY else None) or p.now
    st.phase = Phase.READY
    st.reason = "Succeeded"
    st.message = _ready_message(owner.version, total, nshards, st.bytes_output, st.samples_skipped)
    p.decision.requeue = ACTIVE_REQUEUE if obs.published is not None else None  # then: the replaced version
    if p.prev_phase != Phase.READY:
        replaced = f"; replaces version {obs.published.version}" if obs.published is not None else ""
        p.decision.events.append(Event("Normal", "Ready", st.message + replaced))
    return p.decision


HELD_REQUEUE = 300.0  # seconds between passes while a publication waits for a person (the annotation wakes it)


def _publish_guard(
    p: Pass, total: int, verified: list[tuple[Track, list[tuple[Any, ...]], OutputTally]]
) -> Decision | None:
    """Promise P4: a verified version that would drop more of the published version's samples than
    `spec.output.publishGuard.maxRemoved` allows is held until a person approves it (None: publish)."""
    published, owner = p.obs.published or _published_as_last_seen(p), p.owner
    if published is None or published.version == owner.version:
        return None
    new_splits = {t.split: t.samples for t, _, _ in verified if t.split is not None}
    diff = guard.plan_diff(p.plan, published)
    verdict = guard.judge(owner.version, published, total, new_splits, diff, p.spec.output.max_removed)
    approval = p.obs.approval
    p.st.publish_guard = verdict.status(approval)
    if not verdict.held:
        return None
    if approval == owner.version:
        p.decision.events.append(Event("Normal", "PublishApproved", f"publishing as approved: {verdict.message()}"))
        return None
    if approval and approval != (p.prev.get("publishGuard") or {}).get("approval"):
        why = f"annotation {guard.APPROVE_ANNOTATION}={approval} does not name the held version {owner.version}"
        p.decision.events.append(Event("Warning", "ApprovalIgnored", why))
    st = p.st
    st.steps[VERIFIED] = StepState(True, "Verified", f"{total} samples; held before publishing")
    how = f"kubectl annotate shardeddataset {owner.name} {guard.APPROVE_ANNOTATION}={owner.version}"
    msg = f"{verdict.message()}; the published version keeps serving. To publish it anyway: {how}"
    decision = _stalled(p.decision, p.prev_stalled, Phase.VERIFYING, "PublishHeld", msg)
    decision.requeue = HELD_REQUEUE
    return decision


def _published_as_last_seen(p: Pass) -> IndexInfo | None:
    """The published version as the last status saw it, while its stable index is not seen (promise P2: the
    guard still weighs the new version against it)."""
    seen = (p.prev.get("versions") or {}).get("published") or {}
    if not seen.get("version"):
        return None
    return IndexInfo(str(seen["version"]), int(seen.get("generation") or 0), str(seen.get("refresh") or ""),
                     str(seen.get("publishedAt") or ""), int(seen.get("samples") or 0), 0, 0, "")  # fmt: skip


def _publish(p: Pass, samples: int, verified: list[tuple[Track, list[tuple[Any, ...]], OutputTally]]) -> None:
    """Write the version's own index (once), then the stable index as a copy of it: the single PUT that
    switches readers to this version. A pass that finds the version's index already written (the operator
    stopped between the two PUTs) copies that one, so the publication time and content never change.

    With splits, each split's own index comes first and the version's index names them (`info.splits`); each
    split's stable index (`<outputPrefix><split>-index.json`) is written only after the stable index, so a
    split's stable index never names a version that is not published (and so may not be deleted); a pass
    that finds one behind the published version puts it right (`_split_repairs`)."""
    spec, owner = p.spec, p.owner
    bucket, provider, stable = index_location(spec)
    record = p.st.artifacts[0] if p.st.artifacts else artifact_record(spec, owner)
    versioned = record["index"]["versioned"]
    info_common = {
        "namespace": owner.namespace,
        "resource": owner.name,
        "uid": owner.uid,
        "generation": owner.generation,
        "version": owner.version,
        "refresh": owner.refresh,
        "publishedAt": p.now,
        "bucket": bucket,
        "provider": provider,
        "algorithm": spec.shuffle.algorithm if spec.shuffle else "none",
        "seed": spec.shuffle.seed if spec.shuffle else None,
        "replaces": p.obs.published.version if p.obs.published is not None else None,
    }
    splits: dict[str, Any] = {}
    split_stables: list[WriteIndex] = []
    body = p.obs.wanted_index
    if body is None or IndexInfo.from_index(body, owner.uid) is None:
        shards: list[tuple[Any, ...]] = []
        if spec.splits is None:
            shards = verified[0][1]
        for track, split_shards, tally in verified if spec.splits is not None else ():
            assert track.split is not None
            names = record["index"]["splits"][track.split]
            info = {
                **info_common,
                "split": track.split,
                "versionIndex": f"{provider}://{bucket}/{names['versioned']}",
                "samples": track.samples,
            }
            split_body = builders.build_shard_index(
                f"{owner.name}-{track.split}", split_shards, names["versioned"], info, keep_order=spec.shuffle is None
            )
            p.decision.actions.append(WriteIndex(bucket, provider, names["versioned"], split_body))
            split_stables.append(WriteIndex(bucket, provider, names["stable"], split_body, guarded=True))
            splits[track.split] = {
                "index": f"{provider}://{bucket}/{names['stable']}",
                "versionIndex": f"{provider}://{bucket}/{names['versioned']}",
                "samples": track.samples,
                "shards": len(tally.shards),
                "bytes": tally.bytes,
            }
        info = {
            **info_common,
            "versionIndex": f"{provider}://{bucket}/{versioned}",
            "artifacts": record,
            "samples": samples,
            **({"splits": splits} if splits else {}),
        }
        body = builders.build_shard_index(owner.name, shards, versioned, info, keep_order=spec.shuffle is None)
        p.decision.actions.append(WriteIndex(bucket, provider, versioned, body))
    p.decision.actions.append(WriteIndex(bucket, provider, stable, body, publishes=True))
    p.published_now = IndexInfo.from_index(body, owner.uid)
    if not split_stables and p.published_now is not None:  # the version's index was written by an earlier pass
        split_stables = _split_repairs(p, p.published_now)
    p.decision.actions.extend(split_stables)
    if spec.splits is not None:
        p.st.splits = _split_status((body.get("info") or {}).get("splits") or {}, p.st.splits)


def _split_repairs(p: Pass, published: IndexInfo) -> list[WriteIndex]:
    """Each split's stable index that does not name the published version yet, rewritten as a copy of the
    published version's own index of that split (read by `observe` when they differ)."""
    names = (published.record.get("index") or {}).get("splits") or {}
    bucket, provider, _ = index_location(p.spec)
    out = []
    for split in sorted(published.splits):
        if p.obs.split_stables.get(split) == published.version or split not in names:
            continue
        source = p.obs.split_sources.get((published.version, split))
        if source is not None:
            out.append(WriteIndex(bucket, provider, str(names[split]["stable"]), source, guarded=True))
    return out


def verification_prefix(spec: DatasetSpec, owner: Owner, attempt: int | None, split: str | None = None) -> str:
    """Where the shards to verify are: the dSort attempt's output, or the converted shards without a shuffle."""
    if spec.shuffle is not None:
        return naming.attempt_base(builders.output_base(spec, owner, split), attempt or 1)
    return builders.unit_pool(spec, owner)


def _split_status(published: dict[str, Any], building: dict[str, Any] | None) -> dict[str, Any]:
    """`status.splits`: per split what its published index says, with what is known of its build."""
    out: dict[str, Any] = {}
    for name, s in published.items():
        out[name] = {k: s.get(k) for k in ("samples", "shards", "bytes", "index", "versionIndex")}
        if building and (building.get(name) or {}).get("shuffle"):
            out[name]["shuffle"] = building[name]["shuffle"]
    return out


def _condition_reason(status: dict[str, Any], type_: str) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _seconds_since(then: float | None, now: str) -> float:
    if then is None:
        return float("inf")
    return parse(now) - then


def conversion_progress(
    plan: dict[str, Any],
    progress: dict[int, dict[str, Any]],
    reports: dict[int, dict[str, Any]],
    generation: int,
    reused: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Samples and bytes converted so far, from the workers' progress objects (a report counts as done, and
    so do the samples of reused shards)."""
    planned = int(plan.get("samples") or 0)
    samples = int((reused or {}).get("consumed") or 0)
    nbytes = int((reused or {}).get("bytes") or 0)
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


def _fill_counts(
    st: DatasetStatus,
    plan: dict[str, Any] | None,
    reports: dict[int, dict[str, Any]],
    reused: dict[str, Any] | None = None,
) -> None:
    done = [*reports.values(), *([reused] if reused else [])]
    st.samples_written = sum(int(r.get("written") or 0) for r in done)
    plan = plan or {}
    st.skipped_by_reason = {str(k): int(v) for k, v in (plan.get("skipped") or {}).items()}
    for r in done:  # samples the transform dropped or failed on, counted by the workers
        for reason, n in (r.get("skippedByReason") or {}).items():
            st.skipped_by_reason[str(reason)] = st.skipped_by_reason.get(str(reason), 0) + int(n)
    st.rejected_files = {str(k): int(v) for k, v in (plan.get("rejectedFiles") or {}).items()}
    st.samples_skipped = sum(st.skipped_by_reason.values())
    st.samples_total = int(plan.get("samples") or 0) + sum(int(v) for v in (plan.get("skipped") or {}).values())
    st.shards_converted = sum(len(r.get("shards") or []) for r in done)
    st.shards_reused = len((reused or {}).get("shards") or [])
    st.samples_reused = int((reused or {}).get("written") or 0)
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


def after_actions(d: Decision, outcomes: list[Outcome]) -> Decision:
    """What the executor's reports mean for the status: every decision about them is made here.

    A started dSort job's id goes to its output's record (the top level, or its split's), so that a job AIS
    drops later is counted as an ended attempt (`lost_dsort_attempt`). A version whose deletion was not done
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
    for action in d.actions:  # deletions the pass did not reach
        if id(action) not in reached:
            if isinstance(action, CleanupArtifacts):
                restore.append(action.record)
            elif isinstance(action, SweepUnits):
                restore.extend(action.restore)
    if restore:
        d.status.artifacts = _unique_records([*(d.status.artifacts or []), *restore])
    if stop is not None and stop.kind == DENIED:
        return stall(d, DENIED, stop.error)
    if stop is not None:
        return fail(d, stop.kind, stop.error)
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
