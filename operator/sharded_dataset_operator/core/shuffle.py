"""Phase 3, shuffle: a dSort job per output, attempt after attempt while the failures are the cluster's weather
and the budget lasts (promise P5)."""

from __future__ import annotations

from typing import Any

from sharded_dataset_operator.core import append, builders, failures, naming
from sharded_dataset_operator.core.actions import CopyObjects, Decision, DeletePrefix, Event, StartDsort
from sharded_dataset_operator.core.model import DsortJob
from sharded_dataset_operator.core.observed import Track
from sharded_dataset_operator.core.state import Pass, building_version, seconds_since
from sharded_dataset_operator.core.status import SHUFFLED, Phase, StepState
from sharded_dataset_operator.core.times import epoch

SHUFFLE_KEYS = ("version", "attempt", "dsortJobId", "startedAt", "outputTemplate", "finished", "copyOnly")  # a split's
REBALANCE_POLL = 5.0  # seconds between looks while a dSort attempt waits for AIS's rebalance to end


def step(p: Pass) -> Decision | None:
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
    recorded = own_record(p.prev, split, owner.generation, owner.version)
    what = "dSort" if split is None else f"dSort of split {split}"
    out_base = builders.output_base(spec, owner, split)
    state: dict[str, Any] = {}
    job = attempts.get(attempt)
    start_next = job is None
    outcome: Decision | None = None
    copied = append.copied(recorded, attempt)
    if copied is not None:  # a split of an Append refresh whose output is the published one's copies, done
        template = naming.output_template(naming.attempt_base(out_base, copied["attempt"]))
        state, start_next = {**copied, "outputTemplate": template}, False
        st.steps[SHUFFLED] = StepState(True, "Shuffled", f"split {split}: the published version's shards copied")
    elif job is not None:
        state = {"version": owner.version, "attempt": attempt, "dsortJobId": job.id}
        if recorded.get("attempt") == attempt:
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
                wait = failures.backoff_seconds(attempt - base) - seconds_since(job.ended_at, p.now)
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
        state = {
            "version": owner.version,
            "attempt": nxt,
            "startedAt": p.now,
            "outputTemplate": naming.output_template(naming.attempt_base(out_base, nxt)),
        }
        request = _dsort_request(p, track, nxt, dict(recorded))
        if request is None:  # an Append refresh added nothing to this split: its copies are the whole output
            state["copyOnly"] = True
            msg = f"split {split}: copying the published version's shuffled shards (no sample was added to it)"
            st.steps[SHUFFLED] = StepState(False, "Copying", msg)
            outcome = p.working(Phase.SHUFFLING, "Copying", msg)
        else:
            p.decision.actions.append(StartDsort(request, split, dict(recorded)))
            st.steps[SHUFFLED] = StepState(False, "Shuffling", f"starting {what} attempt {nxt - base}/{budget}")
            outcome = p.working(Phase.SHUFFLING, "Shuffling", f"starting {what} (attempt {nxt - base}/{budget})")
    if split is None or outcome is not None:  # the top-level fields show the output being shuffled
        st.dsort_job_id, st.shuffle_version = state.get("dsortJobId"), state.get("version")
        st.shuffle_attempt, st.shuffle_started_at = state.get("attempt"), state.get("startedAt")
        st.output_template = state.get("outputTemplate")
    if split is not None:
        st.splits = st.splits or {}
        # every key, absent ones as None: the status is merge-patched, and a key left out would outlive its attempt
        st.splits.setdefault(split, {})["shuffle"] = {k: state.get(k) for k in SHUFFLE_KEYS}
    return outcome


def _dsort_request(p: Pass, track: Track, attempt: int, recorded: dict[str, Any]) -> dict[str, Any] | None:
    """The attempt's dSort request: of every converted shard of the output, or with `refreshMode: Append` of
    the new ones only, after the copies of the published version's shuffled shards (`core.append`); None when
    the copies are the whole output (a split the refresh added nothing to)."""
    spec, owner, split = p.spec, p.owner, track.split
    assert spec.shuffle is not None
    attempt_base = naming.attempt_base(builders.output_base(spec, owner, split), attempt)
    how = append.plan_track(p, track, attempt_base) if append.wanted(p) else None
    what = "dSort" if split is None else f"dSort of split {split}"
    if isinstance(how, append.Appending):
        b = spec.shuffle.output_bucket
        only = not how.new_shards
        p.decision.actions.append(CopyObjects(b.name, b.provider, how.copies, split, only, recorded))
        if only:
            p.decision.events.append(Event("Normal", "ShuffleMode", (
                f"split {split}: no sample was added; the {len(how.copies)} shuffled shards of version "
                f"{how.published} are copied, no dSort")))  # fmt: skip
            return None
        p.decision.events.append(Event("Normal", "ShuffleMode", (
            f"{what} attempt {attempt}: appending {how.new_samples} new samples ({len(how.new_shards)} converted "
            f"shards) to the {how.kept_samples} of version {how.published}, whose {len(how.copies)} shuffled shards "
            "are copied")))  # fmt: skip
        return builders.build_dsort_spec(spec, owner, how.new_shards, how.member_bytes, how.tar_bytes, attempt, split)
    if how is not None and p.obs.published is not None:
        p.decision.events.append(Event("Normal", "ShuffleMode", f"{what} attempt {attempt}: every sample is "
                                       f"shuffled again (refreshMode Append does not apply: {how})"))  # fmt: skip
    return builders.build_dsort_spec(
        spec, owner, track.shards, track.written.member_bytes, track.tar_bytes, attempt, split
    )


def own_record(previous: dict[str, Any], split: str | None, generation: int, version: str) -> dict[str, Any]:
    """An output's shuffle record (the top level's, or its split's) in the previous status if it is the
    version's, else empty.

    A record names its version: one written ahead of a pass's other fields (`record_first`, before a dSort
    starts) is the version's even while the rest of the status, `observedGeneration` too, is still about an
    earlier generation's. A record written before records named their version is the version's when the whole
    status was about it.
    """
    if split is None:
        record = previous.get("shuffle") or {}
    else:
        record = ((previous.get("splits") or {}).get(split) or {}).get("shuffle") or {}
    if record.get("version"):
        return dict(record) if record["version"] == version else {}
    about = previous.get("observedGeneration") == generation and building_version(previous) in (None, version)
    return dict(record) if about else {}


def lost_dsort_attempt(
    previous: dict[str, Any],
    record: dict[str, Any],
    observed: dict[int, DsortJob],
    problems: tuple[str, ...] = (),
    split: str | None = None,
) -> tuple[int, DsortJob] | None:
    """The dSort attempt the output's record (`own_record`) names as started but AIS no longer knows, as a job
    that ended.

    AIS answers a dSort start with a job id even when its targets refused the job (a target above its
    capacity high watermark refuses every new dSort), and a job is gone after every target that ran it
    restarted. Without this the attempt would be started again under the same number, forever and outside
    the budget. An attempt already recorded as shuffled counts as finished (its output is still verified).
    """
    shuffle = record
    if shuffle.get("copyOnly") and shuffle.get("finished"):
        return None  # a split's copies, done (`append.copied`); copies cut short are a lost attempt like any
    attempt, job_id = shuffle.get("attempt"), shuffle.get("dsortJobId")
    if not attempt or not (job_id or shuffle.get("startedAt")):
        return None  # (an attempt is recorded before it starts: without a job id, the pass stopped in between)
    attempt = int(attempt)
    if attempt in observed or attempt < max(observed, default=0):
        return None
    if split is not None:
        shuffled = bool(record.get("finished"))
    else:  # the top level records no end: the Shuffled condition does, when the status is about the same version
        about = record.get("version") in (None, building_version(previous))
        conditions = previous.get("conditions") or [] if about else []
        shuffled = any(c.get("type") == SHUFFLED and c.get("status") == "True" for c in conditions)
    why = "AIS no longer knows the job (its targets refused it at the start, or restarted since)"
    if not job_id:
        why = "no dSort job of this attempt is known (refused at the start, or the operator stopped before it knew)"
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


def dsort_progress(job: DsortJob) -> dict[str, Any]:
    """dSort's own counters: input shards extracted, then output shards created."""
    if job.to_create:
        summary = f"dSort created {job.created_shards}/{job.to_create} shards"
        percent = 50 + job.created_shards * 50 // max(1, job.to_create)
    else:
        summary = f"dSort extracted {job.extracted_shards}/{job.input_shards} shards"
        percent = job.extracted_shards * 50 // max(1, job.input_shards)
    return {"summary": summary, "percent": min(percent, 100)}
