"""The decision core: every pipeline step derived from observed state."""

from __future__ import annotations

from typing import Any

import pytest

from sharded_dataset_operator import reconcile
from sharded_dataset_operator.builders import ConverterDefaults, Owner
from sharded_dataset_operator.model import DsortJob, Entry, JobState
from sharded_dataset_operator.reconcile import (
    CleanupArtifacts,
    CreateJob,
    DeleteJobs,
    DeleteObjects,
    EnsureBucket,
    Observed,
    StartDsort,
    WriteIndex,
    count_samples,
    decide,
)
from sharded_dataset_operator.spec import parse_spec
from sharded_dataset_operator.status import Phase

NOW = "2026-11-23T10:00:00Z"
UID = "5f3a9c1e-0000-4000-8000-000000000001"
OWNER = Owner(name="pets", namespace="ml", uid=UID, generation=3)
DEFAULTS = ConverterDefaults(image="img:dev")
BASE = "samples-5f3a9c1e-g3-"
OUT = "shuffled-5f3a9c1e-g3-"


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


def report(worker: int, written: int, shards: int = 1, digest: str = "d1", gen: int = 3) -> dict[str, Any]:
    return {
        "worker": worker,
        "generation": gen,
        "listingDigest": digest,
        "written": written,
        "shards": [{"name": f"{BASE}w{worker:04d}-{i:05d}.tar", "samples": 1, "bytes": 10} for i in range(shards)],
        "skipped": {"missing:cls": 2},
        "rejectedFiles": {"invalid-key": 1},
        "examples": {"missing:cls": ["a", "b"]},
    }


def finished_dsort(**over: Any) -> DsortJob:
    fields: dict[str, Any] = dict(
        id="srt-1",
        description="sds:ml/pets:5f3a9c1e:g3",
        finished=True,
        aborted=False,
        errors=(),
        extracted_records=5,
        created_shards=2,
    )
    fields.update(over)
    return DsortJob(**fields)


def listing(shards: dict[str, list[str]], prefix: str = OUT) -> list[Entry]:
    entries = []
    for shard, keys in shards.items():
        entries.append(Entry(f"{prefix}{shard}.tar", 1000))
        for k in keys:
            entries.append(Entry(f"{prefix}{shard}.tar/{k}.image.jpg", 10))
            entries.append(Entry(f"{prefix}{shard}.tar/{k}.cls", 1))
    return entries


def kinds(decision: reconcile.Decision) -> list[type]:
    return [type(a) for a in decision.actions]


def test_fresh_resource_creates_bucket_and_job() -> None:
    d = decide(spec(), OWNER, Observed(previous={}), DEFAULTS, NOW)
    assert kinds(d) == [EnsureBucket, CreateJob]
    assert d.status.phase == Phase.CONVERTING
    job = next(a for a in d.actions if isinstance(a, CreateJob)).manifest
    assert job["metadata"]["name"] == "pets-convert-g3"
    assert [e.reason for e in d.events] == ["Converting"]
    st = d.status.to_dict([], NOW)
    conds = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conds["Ready"] == ("False", "Converting")
    assert conds["Reconciling"] == ("True", "Converting")
    assert conds["Stalled"] == ("False", "Healthy")
    assert st["observedGeneration"] == 3
    assert st["artifacts"][0]["locations"][0] == {"bucket": "out", "provider": "ais", "prefix": BASE}


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
    obs = Observed(previous={"observedGeneration": 3, "phase": "Converting"}, job=JobState("pets-convert-g3", 3,
                   active=1, succeeded=1))  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.actions == [] and d.events == []
    assert d.status.phase == Phase.CONVERTING and d.status.workers_succeeded == 1


def test_failed_job_fails_with_the_converter_message() -> None:
    job = JobState("pets-convert-g3", 3, failed=1, failed_reason="FailedIndexes", failed_message="[worker 1] boom")
    d = decide(spec(), OWNER, Observed(previous={}, job=job), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.stalled
    assert "boom" in d.status.message and d.requeue is None
    assert d.events[0].reason == "ConversionFailed"


def test_completed_conversion_starts_dsort_with_the_reported_shards() -> None:
    obs = Observed(
        previous={"observedGeneration": 3, "phase": "Converting"},
        job=JobState("pets-convert-g3", 3, succeeded=2, complete=True),
        reports={0: report(0, 5, shards=2), 1: report(1, 4)},
    )
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert kinds(d) == [StartDsort]
    dsort = next(a for a in d.actions if isinstance(a, StartDsort)).spec
    assert dsort["input_format"]["objnames"] == [f"{BASE}w0000-00000.tar", f"{BASE}w0000-00001.tar",
                                                 f"{BASE}w0001-00000.tar"]  # fmt: skip
    assert dsort["description"] == "sds:ml/pets:5f3a9c1e:g3"
    assert d.status.phase == Phase.SHUFFLING
    assert (d.status.samples_written, d.status.samples_skipped, d.status.samples_total) == (9, 2, 11)
    assert d.status.shards_converted == 3


def test_job_gone_but_reports_complete_does_not_rerun_conversion() -> None:
    obs = Observed(previous={}, reports={0: report(0, 5), 1: report(1, 4)}, dsort=finished_dsort(finished=False))
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert CreateJob not in kinds(d)
    assert d.status.phase == Phase.SHUFFLING and d.status.dsort_job_id == "srt-1"


def test_reports_of_another_generation_do_not_count() -> None:
    obs = Observed(previous={}, job=JobState("pets-convert-g3", 3, active=2), reports={0: report(0, 5, gen=2)})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.CONVERTING and d.status.samples_written == 0


def test_workers_that_saw_different_listings_fail() -> None:
    obs = Observed(previous={}, reports={0: report(0, 5, digest="a"), 1: report(1, 4, digest="b")})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "SourceChanged"


def test_aborted_dsort_fails_with_its_errors() -> None:
    obs = Observed(previous={}, reports={0: report(0, 5), 1: report(1, 4)},
                   dsort=finished_dsort(finished=False, aborted=True, errors=("out of space",)))  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and "out of space" in d.status.message


def test_finished_dsort_asks_for_the_output_listing_then_verifies_and_indexes() -> None:
    obs = Observed(previous={"observedGeneration": 3, "phase": "Shuffling"},
                   reports={0: report(0, 3), 1: report(1, 2)}, dsort=finished_dsort())  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and d.actions == [] and d.status.phase == Phase.VERIFYING
    obs.output = listing({"000000": ["a", "b", "c"], "000001": ["d", "e"]})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY and d.requeue is None
    index = next(a for a in d.actions if isinstance(a, WriteIndex))
    assert (index.bucket, index.name) == ("out", "shuffled-index.json")
    assert [(s["url"], s["nsamples"]) for s in index.body["shardlist"]] == [
        (f"{OUT}000000.tar", 3),
        (f"{OUT}000001.tar", 2),
    ]
    assert d.status.index_object == "ais://out/shuffled-index.json"
    assert d.status.shards_output == 2
    st = d.status.to_dict([], NOW)
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Ready": "True", "Reconciling": "False", "Stalled": "False",
        "Converted": "True", "Shuffled": "True", "Verified": "True",
    }  # fmt: skip
    assert st["completionTime"] == NOW


def test_verification_catches_missing_samples() -> None:
    obs = Observed(previous={}, reports={0: report(0, 3), 1: report(1, 2)}, dsort=finished_dsort(),
                   output=listing({"000000": ["a", "b", "c"]}))  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "VerificationFailed"
    assert "hold 3 samples but the converters wrote 5" in d.status.message
    assert WriteIndex not in kinds(d)


def test_delete_input_removes_converted_shards_after_verification() -> None:
    s = spec(shuffle={"seed": "1", "outputPrefix": "shuffled-", "deleteInput": True})
    obs = Observed(previous={}, reports={0: report(0, 1), 1: report(1, 1)}, dsort=finished_dsort(),
                   output=listing({"000000": ["a", "b"]}))  # fmt: skip
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    deletes = [a for a in d.actions if isinstance(a, DeleteObjects)]
    assert len(deletes) == 1 and deletes[0].names == (f"{BASE}w0000-00000.tar", f"{BASE}w0001-00000.tar")


def test_without_shuffle_the_converted_shards_are_verified_and_indexed() -> None:
    s = spec(shuffle=None)
    obs = Observed(previous={}, reports={0: report(0, 2), 1: report(1, 1)})
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and StartDsort not in kinds(d)
    obs.output = listing({"w0000-00000": ["a", "b"], "w0001-00000": ["c"], "w0009-00000": ["stale"]}, BASE)
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY, d.status.message
    index = next(a for a in d.actions if isinstance(a, WriteIndex))
    assert index.name == "samples-index.json"
    assert len(index.body["shardlist"]) == 2  # only the shards the converters reported


def test_new_generation_cleans_up_the_previous_ones() -> None:
    old = {"generation": 2, "locations": [{"bucket": "out", "prefix": "samples-5f3a9c1e-g2-"}]}
    obs = Observed(previous={"observedGeneration": 2, "phase": "Ready", "artifacts": [old]},
                   stale_jobs=["pets-convert-g2"])  # fmt: skip
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert kinds(d)[:2] == [DeleteJobs, CleanupArtifacts]
    assert d.status.artifacts is not None and [r["generation"] for r in d.status.artifacts] == [3]
    assert d.status.start_time == NOW


def test_no_complete_samples_fails_instead_of_shuffling_nothing() -> None:
    obs = Observed(previous={}, reports={0: report(0, 0, shards=0), 1: report(1, 0, shards=0)})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "NoSamples"
    assert "missing:cls: a, b" in d.status.message


def test_fail_turns_a_decision_into_a_failure() -> None:
    obs = Observed(previous={}, reports={0: report(0, 5), 1: report(1, 4)})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    reconcile.fail(d, "ShuffleRejected", "bad spec")
    assert d.actions == [] and d.status.phase == Phase.FAILED and d.events[-1].reason == "ShuffleRejected"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([Entry("p-0.tar", 5), Entry("p-0.tar/a.jpg", 1), Entry("p-0.tar/a.cls", 1)], {"p-0.tar": (1, 5)}),
        ([Entry("p-0.tar/d/a.jpg", 1), Entry("p-0.tar/e/a.jpg", 1)], {"p-0.tar": (2, 0)}),
        ([Entry("q-0.tar/a.jpg", 1)], {}),
        ([Entry("p-index.json", 9)], {}),
    ],
)
def test_count_samples(entries: list[Entry], expected: dict[str, tuple[int, int]]) -> None:
    assert count_samples(entries, "p-") == expected
