"""The decision core: every pipeline step derived from observed state."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from sharded_dataset_operator.core import actions, failures, shuffle, state
from sharded_dataset_operator.core.actions import (
    CleanupArtifacts,
    CreateJob,
    DeleteJobs,
    DeletePrefix,
    EnsureBucket,
    StartDsort,
    SweepUnits,
    WriteIndex,
)
from sharded_dataset_operator.core.builders import ConverterDefaults, Owner
from sharded_dataset_operator.core.conversion import conversion_progress
from sharded_dataset_operator.core.decision import decide
from sharded_dataset_operator.core.model import DsortJob, JobState, PodWait
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.spec import parse_spec
from sharded_dataset_operator.core.status import Phase
from sharded_dataset_operator.core.verify import OutputTally, Totals

NOW = "2026-11-23T10:00:00Z"
UID = "5f3a9c1e-0000-4000-8000-000000000001"
OWNER = Owner(name="pets", namespace="ml", uid=UID, generation=3)
DEFAULTS = ConverterDefaults(image="img:dev")
BASE = "samples-5f3a9c1e00004000-g3-"
POOL = "samples-5f3a9c1e00004000-u"
OUT = "shuffled-5f3a9c1e00004000-g3-"


def unit_shard(worker: int, i: int) -> str:
    """A converted shard's name; unit ids sort against the key order (worker 0 holds the first keys)."""
    return f"{POOL}{'f' if worker == 0 else '0'}{worker}{i:014d}-00.tar"


def raw_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"ais": {"bucket": "raw"}},
        "samples": {
            "fields": [{"pattern": "images/*.jpg", "name": "image.jpg"}],
            "labels": {"path": "list.txt", "name": "cls"},
        },
        "output": {"bucket": "out", "prefix": "samples-", "maxSamplesPerShard": 10},
        "conversion": {"workers": 2},
        "shuffle": {"seed": "1", "outputPrefix": "shuffled-", "outputShardSize": "1MiB"},
    }
    spec.update(over)
    return spec


def spec(**over: Any) -> Any:
    return parse_spec(raw_spec(**over), name="pets", default_endpoint="http://ais:51080")


KEYS = "abcdefghijklmnopqrstuvwxyz"


def keys_of(worker: int, written: int) -> list[str]:
    return [f"{KEYS[worker]}{i:03d}" for i in range(written)]


def totals(keys: list[str]) -> Totals:
    t = Totals()
    for k in keys:
        t.add(f"{k}.cls", 1)
        t.add(f"{k}.image.jpg", 10)
    return t


def report(worker: int, written: int, shards: int = 1, gen: int = 3) -> dict[str, Any]:
    return {
        "worker": worker,
        "generation": gen,
        "written": written,
        "bytes": 2048 * written,
        "shards": [
            {"name": unit_shard(worker, i), "samples": 1, "bytes": 10, "firstKey": f"{KEYS[worker]}{i:03d}"}
            for i in range(shards)
        ],
        **totals(keys_of(worker, written)).to_dict(),
    }


def plan(samples: int = 9, gen: int = 3) -> dict[str, Any]:
    return {
        "kind": "sds-plan-v1",
        "generation": gen,
        "samples": samples,
        "skipped": {"missing:cls": 2},
        "rejectedFiles": {"invalid-key": 1},
        "examples": {"missing:cls": ["a", "b"]},
        "units": {"count": 4, "convert": 4, "convertSamples": samples, "reused": 0, "chunks": []},
    }


def converted(**over: Any) -> Observed:
    """Both workers done: worker 0 wrote a000-a002, worker 1 b000-b001 (5 samples)."""
    fields: dict[str, Any] = dict(previous={}, plan=plan(5), reports={0: report(0, 3), 1: report(1, 2)})
    fields.update(over)
    return Observed(**fields)


def finished_dsort(**over: Any) -> DsortJob:
    fields: dict[str, Any] = dict(
        id="srt-1",
        description="sds:ml/pets:5f3a9c1e00004000:g3",
        finished=True,
        aborted=False,
        errors=(),
        extracted_records=5,
        created_shards=2,
    )
    fields.update(over)
    return DsortJob(**fields)


def dsort(attempt: int = 1, **over: Any) -> dict[int, DsortJob]:
    return {attempt: finished_dsort(description=f"sds:ml/pets:5f3a9c1e00004000:g3:a{attempt}", **over)}


def listing(shards: dict[str, list[str]], prefix: str = OUT, truncate: str = "") -> OutputTally:
    tally = OutputTally(prefix)
    for shard, keys in shards.items():
        tally.add(f"{prefix}{shard}.tar", 1000, {"type": "xxhash2", "value": f"c{shard}"})
        for k in sorted(keys):
            tally.add(f"{prefix}{shard}.tar/{k}.cls", 1)
            tally.add(f"{prefix}{shard}.tar/{k}.image.jpg", 9 if k == truncate else 10)
    return tally


def verify_twice(s: Any, obs: Observed) -> actions.Decision:
    """A mismatch is checked once more before it fails the run: the first pass retries, the second judges."""
    first = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert first.status.reason == "VerificationRetrying" and first.actions == [], first.status.message
    assert first.requeue == 20.0
    obs.previous = first.status.to_dict([], NOW)
    return decide(s, OWNER, obs, DEFAULTS, NOW)


def kinds(decision: actions.Decision) -> list[type]:
    return [type(a) for a in decision.actions]


def test_fresh_resource_creates_bucket_and_the_planner() -> None:
    d = decide(spec(), OWNER, Observed(previous={}), DEFAULTS, NOW)
    assert kinds(d) == [EnsureBucket, CreateJob]
    assert d.status.phase == Phase.CONVERTING and d.status.reason == "Planning"
    job = next(a for a in d.actions if isinstance(a, CreateJob)).manifest
    assert job["metadata"]["name"] == "pets-plan-g3" and job["spec"]["completions"] == 1
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "planner"
    assert [e.reason for e in d.events] == ["Planning"]
    st = d.status.to_dict([], NOW)
    conds = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conds["Ready"] == ("False", "Planning")
    assert conds["Reconciling"] == ("True", "Planning")
    assert conds["Stalled"] == ("False", "Healthy")
    assert st["observedGeneration"] == 3
    assert st["artifacts"][0]["locations"][0] == {"bucket": "out", "provider": "ais", "prefix": BASE}


def test_plan_written_starts_the_converters_with_the_plan_counts() -> None:
    obs = Observed(previous={}, plan=plan(9), planner=JobState("pets-plan-g3", 3, succeeded=1, complete=True))
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert kinds(d) == [CreateJob]
    job = next(a for a in d.actions if isinstance(a, CreateJob)).manifest
    assert job["metadata"]["name"] == "pets-convert-g3" and job["spec"]["completions"] == 2
    assert (d.status.samples_total, d.status.samples_skipped) == (11, 2)
    assert d.status.skipped_by_reason == {"missing:cls": 2} and d.status.rejected_files == {"invalid-key": 1}
    assert d.status.progress is not None and d.status.progress["percent"] == 0


def test_failed_planner_fails_with_its_message() -> None:
    job = JobState("pets-plan-g3", 3, failed=1, failed_reason="FailedIndexes", failed_message="listing broke")
    d = decide(spec(), OWNER, Observed(previous={}, planner=job), DEFAULTS, NOW)
    assert (
        d.status.phase == Phase.FAILED and d.status.reason == "PlanningFailed" and "listing broke" in d.status.message
    )


def test_missing_source_is_stalled_and_creates_nothing() -> None:
    obs = Observed(previous={}, source_problem="source bucket ais://raw not found")
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.actions == []
    assert d.status.phase == Phase.PENDING and d.status.stalled
    st = d.status.to_dict([], NOW)
    stalled = next(c for c in st["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "SourceNotFound")
    assert next(c for c in st["conditions"] if c["type"] == "Reconciling")["status"] == "False"
    assert [e.type for e in d.events] == ["Warning"]
    # the same stall observed again does not post another Event
    again = decide(spec(), OWNER, Observed(previous=st, source_problem="x"), DEFAULTS, NOW)
    assert again.events == []


def test_running_job_reports_progress_without_actions() -> None:
    converting = {"type": "Reconciling", "status": "True", "reason": "Converting"}
    obs = Observed(
        previous={"observedGeneration": 3, "phase": "Converting", "conditions": [converting]},
        plan=plan(9),
        job=JobState("pets-convert-g3", 3, active=1, succeeded=1),
        reports={1: report(1, 4)},
        progress={0: {"worker": 0, "generation": 3, "samples": 2, "bytes": 100}},
    )
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.actions == [] and d.events == []
    assert d.status.phase == Phase.CONVERTING and d.status.workers_succeeded == 1
    assert d.status.progress == {"summary": "66%", "percent": 66, "samples": 6, "samplesPlanned": 9,
                                 "bytes": 100 + 4 * 2048}  # fmt: skip
    assert "6/9 samples" in d.status.message


def test_workers_waiting_for_the_source_are_stalled_until_they_convert_again() -> None:
    waiting = {"reason": "SourceUnavailable", "message": "S3 does not answer", "since": "2026-12-04T10:00:00Z"}
    obs = Observed(
        previous={"observedGeneration": 3, "phase": "Converting"},
        plan=plan(9),
        job=JobState("pets-convert-g3", 3, active=2),
        progress={0: {"worker": 0, "generation": 3, "samples": 2, "bytes": 100, "waiting": waiting},
                  1: {"worker": 1, "generation": 3, "samples": 1, "bytes": 50}},
    )  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.actions == [] and d.status.phase == Phase.CONVERTING and d.status.stalled
    assert (
        d.status.reason == "SourceUnavailable" and "since 2026-12-04T10:00:00Z: S3 does not answer" in d.status.message
    )
    assert [e.reason for e in d.events] == ["SourceUnavailable"]
    del obs.progress[0]["waiting"]  # the next pod converts again: its progress write drops the mark
    again = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert not again.status.stalled and again.status.reason == "Converting"
    obs.progress[0]["waiting"], obs.progress[0]["generation"] = waiting, 2  # an older version's mark: not ours
    assert not decide(spec(), OWNER, obs, DEFAULTS, NOW).status.stalled


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("step", ["planner", "converter"])
def test_pods_that_cannot_start_are_said_after_the_grace_stalled_after_stall_after_and_resume(step: str) -> None:
    def blocked_for(seconds: float) -> PodWait:
        return PodWait("pets-x-0-abcde", "Unschedulable", "0/1 nodes are available:\n 1 Insufficient memory.",
                       _epoch(NOW) - seconds)  # fmt: skip

    creating = PodWait("pets-x-1-fghij", "ContainerCreating", "", _epoch(NOW) - 300)
    job = JobState(f"pets-{step}-g3", 3, active=2)
    previous = {"observedGeneration": 3, "phase": "Converting"}
    obs = Observed(previous=previous, planner=job) if step == "planner" else Observed(previous, plan=plan(9), job=job)
    working = "Planning" if step == "planner" else "Converting"
    defaults = dataclasses.replace(DEFAULTS, pod_stall_after=120.0)
    why = (f"{step} Job pets-{step}-g3 cannot start: pod pets-x-0-abcde: Unschedulable: "
           "0/1 nodes are available: 1 Insufficient memory.")  # fmt: skip

    def decide_with(*waits: PodWait, prev: dict[str, Any] | None = None) -> actions.Decision:
        setattr(obs, "planner" if step == "planner" else "job", dataclasses.replace(job, waits=waits))
        obs.previous = prev or previous
        return decide(spec(), OWNER, obs, defaults, NOW)

    # a normal start, and a wait within the grace (a claim still binding): working, nothing said
    for waits in ((), (creating,), (blocked_for(29), creating)):
        d = decide_with(*waits)
        assert not d.status.stalled and d.status.reason == working, waits
    # past the grace: said (Reconciling, a Normal Event on the change), not yet Stalled
    d = decide_with(creating, blocked_for(31))
    assert d.actions == [] and d.status.phase == Phase.CONVERTING and not d.status.stalled
    assert (d.status.reason, d.status.message) == (state.POD_BLOCKED, why)
    assert [(e.type, e.reason) for e in d.events] == [("Normal", state.POD_BLOCKED)]
    # past the operator's stall threshold: Stalled, a Warning Event once
    d = decide_with(creating, blocked_for(121))
    assert d.actions == [] and d.status.stalled and (d.status.reason, d.status.message) == (state.POD_BLOCKED, why)
    assert [(e.type, e.reason) for e in d.events] == [("Warning", state.POD_BLOCKED)]
    stalled_before = {**previous, "conditions": [{"type": "Stalled", "status": "True", "reason": state.POD_BLOCKED}]}
    assert decide_with(blocked_for(500), prev=stalled_before).events == []
    # the pod runs: working again
    d = decide_with(prev=stalled_before)
    assert not d.status.stalled and d.status.reason == working


def test_blocked_pods_are_named_by_the_longest_blocked_and_counted() -> None:
    now = _epoch(NOW)
    waits = [
        PodWait("c-1", "ImagePullBackOff", 'Back-off pulling image "fn:v2"', now - 40),
        PodWait("c-0", "CreateContainerConfigError", 'secret "ais-token" not found', now - 90),
        PodWait("c-2", "PodInitializing", "", now - 900),  # a normal start
    ]
    assert failures.pods_blocked(waits, NOW) == (
        'pod c-0: CreateContainerConfigError: secret "ais-token" not found (and 1 more pod(s))',
        90.0,
    )
    assert failures.pods_blocked(waits[:1], NOW) == ('pod c-1: ImagePullBackOff: Back-off pulling image "fn:v2"', 40.0)
    unknown = failures.pods_blocked([*waits, PodWait("c-3", "ErrImageNeverPull", "", None)], NOW)
    assert unknown is not None and unknown[0].startswith("pod c-3: ErrImageNeverPull (and 2 more")  # long past
    assert unknown[1] > 10**9
    assert failures.pods_blocked(waits[2:], NOW) is None and failures.pods_blocked([], NOW) is None
    quota = (
        'Error creating: pods "c-0" is forbidden: exceeded quota: q, requested: pods=1, used: pods=0, limited: pods=0'
    )
    refused = PodWait("", "FailedCreate", quota, now - 31)  # no pod exists: the Job controller's Event
    assert failures.pods_blocked([refused], NOW) == (f"no pod could be created: FailedCreate: {quota}", 31.0)


def test_a_failed_pods_tagged_reason_is_the_status_reason() -> None:
    msg = "[worker 0, exit 3] [SourceChanged] s3://raw/images/a.jpg disappeared during conversion"
    job = JobState("pets-convert-g3", 3, failed=1, failed_reason="FailedIndexes", failed_message=msg)
    d = decide(spec(), OWNER, Observed(previous={}, plan=plan(), job=job), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "SourceChanged" and "a.jpg" in d.status.message
    denied = JobState("pets-plan-g3", 3, failed=1, failed_reason="FailedIndexes",
                      failed_message="[worker 0, exit 3] [AccessDenied] the bucket's backend refused")  # fmt: skip
    d = decide(spec(), OWNER, Observed(previous={}, planner=denied), DEFAULTS, NOW)
    assert d.status.reason == "AccessDenied"


def test_progress_aggregation() -> None:
    p = plan(10)
    # a worker's report replaces its progress object; other generations' progress is ignored
    progress = {
        0: {"generation": 3, "samples": 3, "bytes": 30},
        1: {"generation": 3, "samples": 1, "bytes": 10},
        2: {"generation": 2, "samples": 7, "bytes": 70},
    }
    got = conversion_progress(p, progress, {1: {"written": 4, "bytes": 40}}, 3)
    assert (got["samples"], got["bytes"], got["percent"], got["summary"]) == (7, 70, 70, "70%")
    done = conversion_progress(p, {}, {0: {"written": 6, "bytes": 1}, 1: {"written": 4, "bytes": 1}}, 3)
    assert done["percent"] == 100
    assert conversion_progress(plan(0), {}, {}, 3)["percent"] == 100


def test_failed_job_fails_with_the_converter_message() -> None:
    job = JobState("pets-convert-g3", 3, failed=1, failed_reason="FailedIndexes", failed_message="[worker 1] boom")
    d = decide(spec(), OWNER, Observed(previous={}, plan=plan(), job=job), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.stalled
    assert "boom" in d.status.message and d.requeue is None
    assert d.events[0].reason == "ConversionFailed"


def test_completed_conversion_starts_dsort_with_the_reported_shards() -> None:
    obs = Observed(
        previous={"observedGeneration": 3, "phase": "Converting"},
        plan=plan(9),
        job=JobState("pets-convert-g3", 3, succeeded=2, complete=True),
        reports={0: report(0, 5, shards=2), 1: report(1, 4)},
    )
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert kinds(d) == [StartDsort]
    dsort = next(a for a in d.actions if isinstance(a, StartDsort)).spec
    assert dsort["input_format"]["objnames"] == sorted([unit_shard(0, 0), unit_shard(0, 1), unit_shard(1, 0)])
    assert dsort["description"] == "sds:ml/pets:5f3a9c1e00004000:g3:a1"
    assert dsort["output_format"] == f"{OUT}a1-%06d"
    # 1 MiB of tar bytes asked for as member bytes: 9 samples hold 99 member bytes in 9 * 2048 tar bytes
    assert dsort["output_shard_size"] == str(2**20 * 99 // (9 * 2048))
    assert d.status.phase == Phase.SHUFFLING
    assert (d.status.samples_written, d.status.samples_skipped, d.status.samples_total) == (9, 2, 11)
    assert d.status.shards_converted == 3


def test_converters_writing_less_than_the_plan_fail() -> None:
    d = decide(spec(), OWNER, converted(plan=plan(6)), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "ConversionIncomplete"


def test_units_that_do_not_cover_the_plan_exactly_fail_even_with_the_right_count() -> None:
    covering = plan(5)
    covering["units"]["fingerprint"] = (2**64 - 5 + 9) % 2**64
    reports = {0: {**report(0, 3), "planFingerprint": 2**64 - 5}, 1: {**report(1, 2), "planFingerprint": 9}}
    d = decide(spec(), OWNER, converted(plan=covering, reports=reports), DEFAULTS, NOW)
    assert d.status.phase == Phase.SHUFFLING  # the sum is taken mod 2^64
    reports[1]["planFingerprint"] = 10  # e.g. a unit converted twice and another one left out: same count
    d = decide(spec(), OWNER, converted(plan=covering, reports=reports), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "ConversionIncomplete"
    assert "do not hold exactly the planned samples" in d.status.message


def test_job_gone_but_reports_complete_does_not_rerun_conversion() -> None:
    d = decide(spec(), OWNER, converted(dsort_attempts=dsort(finished=False, input_shards=4, extracted_shards=1)),
               DEFAULTS, NOW)  # fmt: skip
    assert CreateJob not in kinds(d)
    assert d.status.phase == Phase.SHUFFLING and d.status.dsort_job_id == "srt-1"
    assert d.status.progress is not None and d.status.progress["summary"] == "dSort extracted 1/4 shards"


def test_reports_of_another_generation_do_not_count() -> None:
    obs = Observed(previous={}, plan=plan(), job=JobState("pets-convert-g3", 3, active=2),
                   reports={0: report(0, 5, gen=2)})  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.CONVERTING and d.status.samples_written == 0


def test_a_plan_of_another_generation_does_not_count() -> None:
    d = decide(spec(), OWNER, Observed(previous={}, plan=plan(gen=2)), DEFAULTS, NOW)
    assert d.status.reason == "Planning" and kinds(d) == [EnsureBucket, CreateJob]


def test_aborted_dsort_fails_with_its_errors() -> None:
    obs = converted(dsort_attempts=dsort(finished=False, aborted=True, errors=("out of space",)))
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and "out of space" in d.status.message


def test_finished_dsort_asks_for_the_output_listing_then_verifies_and_indexes() -> None:
    obs = converted(previous={"observedGeneration": 3, "phase": "Shuffling"}, dsort_attempts=dsort())
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and d.actions == [] and d.status.phase == Phase.VERIFYING
    assert d.output_prefix == f"{OUT}a1-" and d.output_from_bytes  # members of 1 and 10 bytes: read the shards
    obs.output = listing({"000000": ["a000", "b001", "a002"], "000001": ["b000", "a001"]})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY and d.requeue is None, d.status.message
    # published: the version's own index first, then the stable index, a copy of it (the switch)
    versioned, index = [a for a in d.actions if isinstance(a, WriteIndex)]
    assert (versioned.bucket, versioned.name) == ("out", f"{OUT}index.json")
    assert (index.bucket, index.name) == ("out", "shuffled-index.json")
    assert index.body == versioned.body and kinds(d)[-2:] == [WriteIndex, WriteIndex]
    info = index.body["info"]
    assert (info["version"], info["publishedAt"], info["versionIndex"]) == ("g3", NOW, f"ais://out/{OUT}index.json")
    assert info["artifacts"]["locations"][0]["prefix"] == BASE
    assert [(s["url"], s["nsamples"], s["checksum"]) for s in index.body["shardlist"]] == [
        (f"{OUT}000000.tar", 3, {"type": "xxhash2", "value": "c000000"}),
        (f"{OUT}000001.tar", 2, {"type": "xxhash2", "value": "c000001"}),
    ]
    assert d.status.index_object == "ais://out/shuffled-index.json"
    assert d.status.shards_output == 2
    st = d.status.to_dict([], NOW)
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Ready": "True", "Reconciling": "False", "Stalled": "False", "UpToDate": "True",
        "Converted": "True", "Shuffled": "True", "Verified": "True",
    }  # fmt: skip
    assert st["completionTime"] == NOW
    assert st["versions"]["published"]["version"] == "g3" and st["versions"]["building"] is None


@pytest.mark.parametrize(
    ("shards", "truncate", "problem"),
    [
        ({"000000": ["a000", "a001", "a002", "b000"]}, "", "hold 4 samples but the converters wrote 5"),
        (
            {"000000": ["a000", "a001", "a002", "b000", "b001"]},
            "b001",
            "hold 54 member bytes but the converters wrote 55",
        ),
        ({"000000": ["a000", "a001", "a002", "b000", "x001"]}, "", "fingerprint mismatch"),
    ],
)
def test_verification_catches_missing_truncated_and_foreign_samples(
    shards: dict[str, list[str]], truncate: str, problem: str
) -> None:
    obs = converted(dsort_attempts=dsort(), output=listing(shards, truncate=truncate))
    d = verify_twice(spec(), obs)
    assert d.status.phase == Phase.FAILED and d.status.reason == "VerificationFailed"
    assert problem in d.status.message
    assert WriteIndex not in kinds(d)


def test_verification_catches_a_missing_member() -> None:
    tally = listing({"000000": ["a000", "a001", "a002", "b000"]})
    tally.add(f"{OUT}000000.tar/b001.cls", 1)  # b001 lost its image
    d = verify_twice(spec(), converted(dsort_attempts=dsort(), output=tally))
    assert d.status.reason == "VerificationFailed" and "members" in d.status.message


def test_delete_input_removes_converted_shards_after_verification() -> None:
    s = spec(shuffle={"seed": "1", "outputPrefix": "shuffled-", "deleteInput": True})
    obs = converted(dsort_attempts=dsort(), output=listing({"000000": ["a000", "a001", "a002", "b000", "b001"]}))
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    sweeps = [a for a in d.actions if isinstance(a, SweepUnits)]
    assert [(x.pool, x.live) for x in sweeps] == [("samples-5f3a9c1e00004000-u", ())]  # no other version holds them


def test_without_shuffle_the_converted_shards_are_verified_and_indexed() -> None:
    s = spec(shuffle=None)
    obs = converted()
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and StartDsort not in kinds(d)
    assert d.output_prefix == POOL and d.output_only == {unit_shard(0, 0), unit_shard(1, 0)}
    shard = {w: unit_shard(w, 0).removeprefix(POOL).removesuffix(".tar") for w in (0, 1)}
    obs.output = listing({shard[1]: ["b000", "b001"], shard[0]: ["a000", "a001", "a002"]}, POOL)
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY, d.status.message
    versioned, index = [a for a in d.actions if isinstance(a, WriteIndex)]
    assert (versioned.name, index.name) == (f"{BASE}index.json", "samples-index.json")
    # the converted shards are key ranges: listed in key order, not by name
    assert [s["url"] for s in index.body["shardlist"]] == [unit_shard(0, 0), unit_shard(1, 0)]
    # a shard nobody reported fails verification instead of being indexed
    obs.output = listing({shard[1]: ["b000", "b001"], shard[0]: ["a000", "a001", "a002"], "09": []}, POOL)
    d = verify_twice(s, obs)
    assert d.status.reason == "VerificationFailed" and "3 shards" in d.status.message


def test_a_new_generation_deletes_builds_that_were_never_published() -> None:
    old = {"generation": 2, "locations": [{"bucket": "out", "prefix": "samples-5f3a9c1e00004000-g2-"}]}
    obs = Observed(previous={"observedGeneration": 2, "phase": "Converting", "artifacts": [old]},
                   stale_jobs=["pets-convert-g2"])  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    # while the new version's planner may still pick converted shards to reuse, nothing is deleted
    assert kinds(d)[0] == DeleteJobs and CleanupArtifacts not in kinds(d)
    assert d.status.artifacts is not None and [r["generation"] for r in d.status.artifacts] == [3, 2]
    assert d.status.start_time == NOW
    pooled = {**old, "pool": {"bucket": "out", "prefix": "samples-5f3a9c1e00004000-u"}}
    obs = Observed(previous={"observedGeneration": 3, "phase": "Converting", "artifacts": [pooled]}, plan=plan(9))
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert kinds(d)[-2:] == [CleanupArtifacts, SweepUnits]
    assert d.status.artifacts is not None and [r["generation"] for r in d.status.artifacts] == [3]
    sweep = d.actions[-1]
    assert isinstance(sweep, SweepUnits) and [r["generation"] for r in sweep.live] == [3]


def test_no_complete_samples_fails_before_converting() -> None:
    d = decide(spec(), OWNER, Observed(previous={}, plan=plan(0)), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "NoSamples"
    assert "missing:cls: a, b" in d.status.message and CreateJob not in kinds(d)


def test_fail_turns_a_decision_into_a_failure() -> None:
    d = decide(spec(), OWNER, converted(), DEFAULTS, NOW)
    state.fail(d, "ShuffleRejected", "bad spec")
    assert d.actions == [] and d.status.phase == Phase.FAILED and d.events[-1].reason == "ShuffleRejected"


def aborted(attempt: int, error: str = "recv-srt: unexpected EOF", ended_at: float | None = None) -> DsortJob:
    return finished_dsort(id=f"srt-{attempt}", description=f"sds:ml/pets:5f3a9c1e00004000:g3:a{attempt}",
                          finished=False, aborted=True, errors=(error,), ended_at=ended_at)  # fmt: skip


def test_dsort_aborted_by_a_node_fault_is_retried_with_its_partial_output_deleted() -> None:
    d = decide(spec(), OWNER, converted(dsort_attempts={1: aborted(1)}), DEFAULTS, NOW)
    assert d.status.phase == Phase.SHUFFLING and d.status.reason == "Shuffling"
    assert kinds(d) == [DeletePrefix, StartDsort]
    delete = next(a for a in d.actions if isinstance(a, DeletePrefix))
    assert (delete.bucket, delete.prefix) == ("out", f"{OUT}a1-")
    start = next(a for a in d.actions if isinstance(a, StartDsort)).spec
    assert start["description"].endswith(":a2") and start["output_format"] == f"{OUT}a2-%06d"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "ShuffleRetry"), ("Normal", "Shuffling")]
    assert "dSort attempt 2/3 after: recv-srt: unexpected EOF" in d.events[0].message
    assert (d.status.shuffle_attempt, d.status.shuffle_max_attempts) == (2, 3)


def test_no_dsort_attempt_starts_while_ais_rebalances_and_the_wait_spends_none() -> None:
    moving = ("rebalance[g7]",)
    # the first attempt waits: nothing is started or deleted, the status says why, the pass looks again soon
    d = decide(spec(), OWNER, converted(rebalancing=moving), DEFAULTS, NOW)
    assert d.actions == [] and d.status.phase == Phase.SHUFFLING and d.status.reason == "WaitingForRebalance"
    assert "AIS is rebalancing (rebalance[g7]): dSort attempt 1/3 waits for it" in d.status.message
    assert d.requeue == shuffle.REBALANCE_POLL and d.status.shuffle_attempt is None
    # after an aborted attempt: its output is left until the next one starts, and no attempt is spent
    d = decide(spec(), OWNER, converted(dsort_attempts={1: aborted(1)}, rebalancing=moving), DEFAULTS, NOW)
    assert d.actions == [] and d.status.reason == "WaitingForRebalance" and "attempt 2/3" in d.status.message
    # the rebalance over: attempt 2 starts as it would have
    d = decide(spec(), OWNER, converted(dsort_attempts={1: aborted(1)}), DEFAULTS, NOW)
    assert kinds(d) == [DeletePrefix, StartDsort] and d.status.shuffle_attempt == 2
    # a running attempt is not disturbed by a rebalance (AIS aborts it if it must; that attempt then counts)
    d = decide(spec(), OWNER, converted(dsort_attempts=dsort(finished=False), rebalancing=moving), DEFAULTS, NOW)
    assert d.actions == [] and d.status.reason == "Shuffling"


def test_a_retry_waits_for_its_backoff() -> None:
    just_now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp() - 2  # NOW minus 2 s
    obs = converted(dsort_attempts={1: aborted(1, ended_at=just_now), 2: aborted(2, ended_at=just_now)})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.actions == [] and d.status.reason == "ShuffleRetrying"
    assert d.requeue is not None and 7 <= d.requeue <= 8  # 10 s after the 2nd failure, 2 s already passed
    assert "dSort attempt 2/3" in d.status.message and "retrying in 8s" in d.status.message


def test_dsort_retries_stop_at_the_budget_and_on_permanent_errors() -> None:
    obs = converted(dsort_attempts={1: aborted(1), 2: aborted(2), 3: aborted(3, "read tcp: connection reset")})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "ShuffleFailed"
    assert "dSort attempt 3/3 (job srt-3) aborted: read tcp: connection reset" in d.status.message
    d = decide(spec(), OWNER, converted(dsort_attempts={1: aborted(1, "duplicated record a000")}), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and "attempt 1/3" in d.status.message
    one = spec(shuffle={"seed": "1", "outputPrefix": "shuffled-", "maxAttempts": 1})
    d = decide(one, OWNER, converted(dsort_attempts={1: aborted(1)}), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and "attempt 1/1" in d.status.message


def started(attempt: int, seconds_ago: float, **conditions: str) -> dict[str, Any]:
    """A previous status that recorded starting dSort `attempt` (job srt-<attempt>) `seconds_ago`."""
    at = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp() - seconds_ago
    return {
        "observedGeneration": 3,
        "phase": "Shuffling",
        "shuffle": {"dsortJobId": f"srt-{attempt}", "attempt": attempt,
                    "startedAt": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "conditions": [{"type": t, "status": v} for t, v in conditions.items()],
    }  # fmt: skip


CAPACITY = "target t1: low on free space: used capacity 91% exceeded high watermark(90%)"


def test_a_recorded_dsort_job_that_ais_no_longer_knows_is_an_ended_attempt() -> None:
    obs = converted(previous=started(1, 10), capacity_problems=(CAPACITY,))
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert kinds(d) == [DeletePrefix, StartDsort]
    start = next(a for a in d.actions if isinstance(a, StartDsort)).spec
    assert start["description"].endswith(":a2")
    retry = d.events[0]
    assert (retry.reason, retry.message.split(":")[0]) == ("ShuffleRetry", "dSort attempt 2/3 after")
    assert "AIS no longer knows the job" in retry.message and CAPACITY in retry.message
    assert (d.status.shuffle_attempt, d.status.shuffle_started_at) == (2, NOW)
    # within its backoff (5 s after the first): wait, do not start again
    d = decide(spec(), OWNER, converted(previous=started(1, 2)), DEFAULTS, NOW)
    assert d.actions == [] and d.status.reason == "ShuffleRetrying" and d.requeue == pytest.approx(3.0)
    # the last attempt of the budget: Failed, with what the targets said
    obs = converted(previous=started(3, 60), dsort_attempts={1: aborted(1), 2: aborted(2)},
                    capacity_problems=(CAPACITY,))  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "ShuffleFailed"
    assert d.status.message.startswith("dSort attempt 3/3 (job srt-3) aborted: AIS no longer knows the job")
    assert CAPACITY in d.status.message
    # a retry request starts a fresh budget after the lost attempt, not under its number
    prev = d.status.to_dict([], NOW)
    obs = converted(previous=prev, dsort_attempts={1: aborted(1), 2: aborted(2)}, retry_request="r1")
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.retry == {"request": "r1", "shuffleAttemptBase": 3}


def test_a_lost_record_is_only_the_latest_attempt_of_this_generation() -> None:
    # the job is listed: nothing is lost
    d = decide(spec(), OWNER, converted(previous=started(1, 10), dsort_attempts=dsort(finished=False)), DEFAULTS, NOW)
    assert d.actions == [] and d.status.reason == "Shuffling"
    assert d.status.shuffle_started_at == started(1, 10)["shuffle"]["startedAt"]  # carried while it runs
    # a record of another generation says nothing about this one
    other = {**started(1, 10), "observedGeneration": 2}
    d = decide(spec(), OWNER, converted(previous=other), DEFAULTS, NOW)
    assert kinds(d) == [StartDsort] and d.status.shuffle_attempt == 1 and not d.events[:-1]
    # an attempt that had finished stays finished: its output is verified, not shuffled again
    d = decide(spec(), OWNER, converted(previous=started(1, 10, Shuffled="True")), DEFAULTS, NOW)
    assert d.actions == [] and d.need_output and d.output_prefix == f"{OUT}a1-"


def test_a_dsort_that_ais_drops_on_every_start_spends_the_budget_then_fails() -> None:
    """The loop seen with a full disk: AIS returns a job id, its targets refuse the job, nothing is listed."""
    t0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()
    prev: dict[str, Any] = {"observedGeneration": 3, "phase": "Converting"}
    starts, clock, d = 0, 0.0, None
    for _ in range(200):
        now = datetime.fromtimestamp(t0 + clock, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        d = decide(spec(), OWNER, converted(previous=prev, capacity_problems=(CAPACITY,)), DEFAULTS, now)
        starts += sum(isinstance(a, StartDsort) for a in d.actions)
        job_id = f"srt-{starts}" if any(isinstance(a, StartDsort) for a in d.actions) else prev["shuffle"]["dsortJobId"]
        d.status.dsort_job_id = job_id  # what after_actions records after AIS answered with an id
        prev = d.status.to_dict(prev.get("conditions") or [], now)
        if d.requeue is None:
            break
        clock += max(1.0, d.requeue)
    assert d is not None and d.status.phase == Phase.FAILED and d.status.reason == "ShuffleFailed"
    assert starts == 3 and 14 <= clock <= 20  # backoff 5 s, then 10 s
    assert "dSort attempt 3/3" in d.status.message and CAPACITY in d.status.message


def test_retry_annotation_restarts_the_failed_step_once() -> None:
    failed = decide(spec(), OWNER, converted(dsort_attempts={1: aborted(1, "duplicated record a000")}), DEFAULTS, NOW)
    prev = failed.status.to_dict([], NOW)
    assert prev["phase"] == "Failed"
    d = decide(spec(), OWNER, converted(previous=prev, dsort_attempts={1: aborted(1, "duplicated record a000")},
                                        retry_request="1"), DEFAULTS, NOW)  # fmt: skip
    assert d.status.reason == "Retrying" and [e.reason for e in d.events] == ["RetryRequested"]
    assert d.status.retry == {"request": "1", "shuffleAttemptBase": 1}
    prev = d.status.to_dict(prev["conditions"], NOW)
    # next pass: a fresh budget after the attempts made before the request
    d = decide(spec(), OWNER, converted(previous=prev, dsort_attempts={1: aborted(1, "duplicated record a000")},
                                        retry_request="1"), DEFAULTS, NOW)  # fmt: skip
    start = next(a for a in d.actions if isinstance(a, StartDsort)).spec
    assert start["description"].endswith(":a2") and "starting dSort (attempt 1/3)" in d.status.message
    assert d.status.retry == {"request": "1", "shuffleAttemptBase": 1}


def test_retry_annotation_after_a_failed_conversion_replaces_the_job() -> None:
    job = JobState("pets-convert-g3", 3, failed=1, failed_reason="FailedIndexes", failed_message="boom")
    prev = decide(spec(), OWNER, Observed(previous={}, plan=plan(), job=job), DEFAULTS, NOW).status.to_dict([], NOW)
    d = decide(spec(), OWNER, Observed(previous=prev, plan=plan(), job=job, retry_request="x"), DEFAULTS, NOW)
    assert [a.names for a in d.actions if isinstance(a, DeleteJobs)] == [("pets-convert-g3",)]
    prev = d.status.to_dict(prev["conditions"], NOW)
    deleting = JobState("pets-convert-g3", 3, failed=1, failed_reason="FailedIndexes", deleting=True)
    d = decide(spec(), OWNER, Observed(previous=prev, plan=plan(), job=deleting, retry_request="x"), DEFAULTS, NOW)
    assert d.status.phase == Phase.CONVERTING and d.actions == []
    d = decide(spec(), OWNER, Observed(previous=prev, plan=plan(), retry_request="x"), DEFAULTS, NOW)
    assert kinds(d) == [CreateJob]


def test_failure_classification() -> None:
    assert failures.classify_dsort_abort(["recv-srt-x sbr_proto_hdr: unexpected EOF"]) == failures.TRANSIENT
    assert failures.classify_dsort_abort([]) == failures.TRANSIENT
    assert failures.classify_dsort_abort(["dial tcp 10.0.0.1: connection refused"]) == failures.TRANSIENT
    assert failures.classify_dsort_abort(["duplicated record key a"]) == failures.PERMANENT
    assert [failures.backoff_seconds(n) for n in range(6)] == [0, 5, 10, 20, 40, 80]
    assert failures.backoff_seconds(30) == 120


def test_reports_missing_after_the_job_completed_wait_for_a_grace_period_then_fail() -> None:
    now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()
    recent = JobState("pets-convert-g3", 3, succeeded=2, complete=True, completed_at=now - 30)
    obs = Observed(previous={}, plan=plan(9), job=recent, reports={0: report(0, 5)})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.CONVERTING and d.status.reason == "ReportsPending" and d.actions == []
    old = JobState("pets-convert-g3", 3, succeeded=2, complete=True, completed_at=now - 600)
    d = decide(spec(), OWNER, Observed(previous={}, plan=plan(9), job=old, reports={0: report(0, 5)}), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "ReportMissing" and "[1]" in d.status.message


def test_plan_missing_after_the_planner_completed_waits_a_grace_period_then_fails() -> None:
    now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()
    recent = JobState("pets-plan-g3", 3, succeeded=1, complete=True, completed_at=now - 10)
    d = decide(spec(), OWNER, Observed(previous={}, planner=recent), DEFAULTS, NOW)
    assert d.status.reason == "PlanPending" and d.actions == [] and d.status.phase == Phase.CONVERTING
    old = JobState("pets-plan-g3", 3, succeeded=1, complete=True, completed_at=now - 600)
    d = decide(spec(), OWNER, Observed(previous={}, planner=old), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "PlanMissing"


def test_transform_skips_count_with_the_plan_and_a_transform_that_left_nothing_fails() -> None:
    skipped = {**report(1, 2), "skippedByReason": {"transform-dropped": 1, "transform-error:KeyError": 2}}
    obs = converted(plan=plan(8), reports={0: report(0, 3), 1: skipped})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.SHUFFLING, d.status.message  # 5 written + 3 skipped = the plan's 8
    assert d.status.skipped_by_reason == {"missing:cls": 2, "transform-dropped": 1, "transform-error:KeyError": 2}
    assert (d.status.samples_written, d.status.samples_skipped, d.status.samples_total) == (5, 5, 10)
    d = decide(spec(), OWNER, converted(plan=plan(9), reports={0: report(0, 3), 1: skipped}), DEFAULTS, NOW)
    assert d.status.reason == "ConversionIncomplete" and "3 skipped by the transform" in d.status.message
    nothing = {**report(0, 0, shards=0), "skippedByReason": {"transform-error:OSError": 4},
               "firstTransformError": "a001: OSError: truncated"}  # fmt: skip
    d = decide(spec(), OWNER, converted(plan=plan(4), reports={0: nothing, 1: report(1, 0, shards=0)}), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "TransformFailed"
    assert d.status.message == "the transform left no sample; first error: sample a001: OSError: truncated"
