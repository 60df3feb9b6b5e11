"""Splits: one conversion, then per split its own dSort, verification and index; the version's index last."""

from __future__ import annotations

from typing import Any

import pytest

from sharded_dataset_operator.core import naming
from sharded_dataset_operator.core.actions import StartDsort, WriteIndex
from sharded_dataset_operator.core.decision import decide
from sharded_dataset_operator.core.model import DsortJob
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.records import artifact_record
from sharded_dataset_operator.core.spec import SpecError, parse_spec
from sharded_dataset_operator.core.status import Phase
from sharded_dataset_operator.core.verify import OutputTally, Totals
from sharded_dataset_operator.core.versions import record_problem

from .test_reconcile import DEFAULTS, NOW, OWNER, POOL, plan, raw_spec

SPLITS = {"sets": [{"name": "trainval", "listFile": "trainval.txt"}, {"name": "test", "listFile": "test.txt"}]}
TAG = naming.uid_tag(OWNER.uid)
KEYS = {"trainval": ["a000", "a001", "a002"], "test": ["b000", "b001"]}


def split_spec(**over: Any) -> Any:
    return parse_spec(raw_spec(splits=SPLITS, **over), name="pets", default_endpoint="http://ais:51080")


def record(split: str, keys: list[str], i: int) -> dict[str, Any]:
    t = Totals()
    for k in keys:
        t.add(f"{k}.cls", 1)
        t.add(f"{k}.image.jpg", 10)
    return {"name": f"{POOL}{split[0]}{i:015d}-00.tar", "unit": f"{split[0]}{i}", "part": 0, "last": True,
            "samples": len(keys), "bytes": 2048 * len(keys), "firstKey": keys[0], "split": split,
            **t.to_dict()}  # fmt: skip


def converted(**over: Any) -> Observed:
    shards = [record("trainval", KEYS["trainval"][:2], 0), record("trainval", KEYS["trainval"][2:], 1),
              record("test", KEYS["test"], 2)]  # fmt: skip
    total = Totals()
    for s in shards:
        total.merge(Totals.from_dict(s))
    report = {"worker": 0, "generation": 3, "written": 5, "bytes": 2048 * 5, "shards": shards, **total.to_dict()}
    fields: dict[str, Any] = dict(previous={"observedGeneration": 3, "phase": "Converting"}, plan=plan(5),
                                  reports={0: report})  # fmt: skip
    fields["plan"]["units"]["convert"] = 1
    fields.update(over)
    return Observed(**fields)


def job(split: str, attempt: int = 1, **over: Any) -> DsortJob:
    description = naming.dsort_description("ml", "pets", OWNER.uid, "g3", attempt, split)
    fields: dict[str, Any] = dict(id=f"srt-{split}", finished=True, aborted=False, errors=(), extracted_records=5,
                                  created_shards=1, description=description)  # fmt: skip
    fields.update(over)
    return DsortJob(**fields)


def listing(prefix: str, keys: list[str]) -> OutputTally:
    tally = OutputTally(prefix)
    tally.add(f"{prefix}000000.tar", 1000, {"type": "xxhash2", "value": "c"})
    for k in sorted(keys):
        tally.add(f"{prefix}000000.tar/{k}.cls", 1)
        tally.add(f"{prefix}000000.tar/{k}.image.jpg", 10)
    return tally


def test_each_split_is_shuffled_by_a_dsort_of_its_own_one_after_the_other() -> None:
    obs = converted()
    d = decide(split_spec(), OWNER, obs, DEFAULTS, NOW)
    (start,) = [a.spec for a in d.actions if isinstance(a, StartDsort)]
    assert start["description"] == f"sds:ml/pets:{TAG}:g3:s-trainval:a1"
    assert start["output_format"] == f"shuffled-trainval-{TAG}-g3-a1-%06d"
    assert start["input_format"]["objnames"] == [f"{POOL}t{i:015d}-00.tar" for i in (0, 1)]
    assert d.status.splits is not None and d.status.splits["trainval"]["shuffle"]["attempt"] == 1
    obs.previous = d.status.to_dict([], NOW)
    obs.split_attempts = {"trainval": {1: job("trainval")}, "test": {}}
    d = decide(split_spec(), OWNER, obs, DEFAULTS, NOW)
    (start,) = [a.spec for a in d.actions if isinstance(a, StartDsort)]
    assert start["description"] == f"sds:ml/pets:{TAG}:g3:s-test:a1"
    assert start["input_format"]["objnames"] == [f"{POOL}t{2:015d}-00.tar"]
    assert "test" in d.status.message


def test_every_split_is_verified_and_indexed_and_the_split_stable_indexes_follow_the_switch() -> None:
    obs = converted(split_attempts={"trainval": {1: job("trainval")}, "test": {1: job("test")}})
    s = split_spec()
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and d.output_prefix == f"shuffled-trainval-{TAG}-g3-a1-"
    obs.outputs[d.output_key] = listing(d.output_prefix, KEYS["trainval"])
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and d.output_prefix == f"shuffled-test-{TAG}-g3-a1-"
    obs.outputs[d.output_key] = listing(d.output_prefix, KEYS["test"])
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY, d.status.message
    writes = [(a.name, a.publishes, a.guarded) for a in d.actions if isinstance(a, WriteIndex)]
    assert writes == [
        (f"shuffled-trainval-{TAG}-g3-index.json", False, False),
        (f"shuffled-test-{TAG}-g3-index.json", False, False),
        (f"shuffled-{TAG}-g3-index.json", False, False),
        ("shuffled-index.json", True, False),  # the switch
        ("shuffled-trainval-index.json", False, True),  # then the splits' stable indexes, never ahead of it
        ("shuffled-test-index.json", False, True),
    ]
    bodies = {a.name: a.body for a in d.actions if isinstance(a, WriteIndex)}
    test_index = bodies["shuffled-test-index.json"]
    assert test_index["info"]["split"] == "test" and test_index["info"]["samples"] == 2
    assert [x["url"] for x in test_index["shardlist"]] == [f"shuffled-test-{TAG}-g3-a1-000000.tar"]
    main = bodies["shuffled-index.json"]
    assert main["shardlist"] == [] and main["info"]["samples"] == 5
    assert main["info"]["splits"]["trainval"]["index"] == "ais://out/shuffled-trainval-index.json"
    st = d.status.to_dict([], NOW)
    assert st["splits"]["trainval"]["samples"] == 3 and st["splits"]["test"]["shards"] == 1
    assert st["versions"]["published"]["shards"] == 2 and st["samples"]["written"] == 5


def test_a_split_without_samples_and_a_report_of_an_unknown_split_fail() -> None:
    obs = converted()
    obs.reports[0]["shards"] = [s for s in obs.reports[0]["shards"] if s["split"] == "trainval"]
    obs.reports[0]["written"] = 3
    obs.plan["samples"] = 3  # type: ignore[index]
    d = decide(split_spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "SplitEmpty" and "split test" in d.status.message
    obs = converted()
    obs.reports[0]["shards"][2]["split"] = "other"
    d = decide(split_spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "ConversionIncomplete" and "other" in d.status.message


def test_a_lost_dsort_job_of_a_split_is_an_ended_attempt_of_that_split() -> None:
    """Issue 25, problem 3: the status the operator itself writes (not a hand-made record) must let the next
    pass see that AIS dropped the split's job; then the attempts are counted up to ShuffleFailed."""
    from sharded_dataset_operator.core.actions import Outcome
    from sharded_dataset_operator.core.decision import after_actions

    previous: dict[str, Any] = {}
    starts = []
    for n in range(1, 6):
        d = decide(split_spec(), OWNER, converted(previous=previous, split_attempts={"trainval": {}}), DEFAULTS, NOW)
        started = [a for a in d.actions if isinstance(a, StartDsort)]
        if not started:
            break
        starts.append(started[0].spec["description"].rsplit(":", 1)[1])
        d = after_actions(d, [Outcome(started[0], result=f"srt-{n}")])  # AIS answered with an id, then forgot it
        previous = d.status.to_dict([], NOW)
        assert previous["splits"]["trainval"]["shuffle"]["dsortJobId"] == f"srt-{n}"
        previous["splits"]["trainval"]["shuffle"]["startedAt"] = "2026-11-23T09:00:00Z"  # the backoff has passed
    assert starts == ["a1", "a2", "a3"]  # maxAttempts 3: never attempt 1 again and again
    assert d.status.reason == "ShuffleFailed" and "AIS no longer knows the job" in d.status.message


def test_the_versions_record_names_every_splits_output_and_indexes_and_is_trusted() -> None:
    r = artifact_record(split_spec(), OWNER)
    prefixes = [loc["prefix"] for loc in r["locations"]]
    assert f"shuffled-trainval-{TAG}-g3-" in prefixes and f"shuffled-test-{TAG}-g3-" in prefixes
    assert r["index"]["splits"]["test"] == {"stable": "shuffled-test-index.json",
                                            "versioned": f"shuffled-test-{TAG}-g3-index.json"}  # fmt: skip
    assert record_problem(r, OWNER.namespace, OWNER.name, OWNER.uid) is None
    r["index"]["splits"]["test"]["versioned"] = "team-b-index.json"
    assert record_problem(r, OWNER.namespace, OWNER.name, OWNER.uid) is not None


@pytest.mark.parametrize(
    ("splits", "problem"),
    [
        ({"sets": [{"name": "a", "listFile": "a.txt"}]}, "between 2 and 8"),
        ({"sets": [{"name": "a", "listFile": "a.txt"}, {"name": "a", "listFile": "b.txt"}]}, "unique"),
        ({"sets": [{"name": "a", "listFile": "a.txt"}, {"name": "b", "listFile": "a.txt"}]}, "one per split"),
        ({"sets": [{"name": "A", "listFile": "a.txt"}, {"name": "b", "listFile": "b.txt"}]}, r"sets\[0\]\.name"),
        ({**SPLITS, "rest": "test"}, "unique"),
    ],
)
def test_bad_splits_name_the_field(splits: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        parse_spec(raw_spec(splits=splits), name="pets", default_endpoint="http://ais:51080")


def test_an_output_conflict_keeps_the_versions_artifacts_record_not_a_splits_shuffle_record() -> None:
    """Found by the soak: under an output conflict the record kept for the version was the last split's shuffle
    record (a variable reused), which, once shuffle records named their version, took the place of the
    version's own record in `status.artifacts`; its objects were then never deleted (P6)."""
    first = decide(split_spec(), OWNER, converted(), DEFAULTS, NOW)
    prev = first.status.to_dict([], NOW)
    assert prev["splits"]["trainval"]["shuffle"]["version"] == OWNER.version
    obs = converted(previous=prev, output_conflict="ais://out/x-index.json is not a ShardedDataset index")
    d = decide(split_spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "OutputConflict"
    assert d.status.artifacts == [artifact_record(split_spec(), OWNER)]
