"""refreshMode Append: a refresh that only added samples shuffles the new ones and copies the published shards."""

from __future__ import annotations

from copy import deepcopy as copy_of
from typing import Any

import pytest

from sharded_dataset_operator.core import append, builders, naming
from sharded_dataset_operator.core.actions import (
    COPY_FAILED,
    CopyObjects,
    DeletePrefix,
    Outcome,
    StartDsort,
    WriteIndex,
)
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.decision import after_actions, decide
from sharded_dataset_operator.core.model import JobState
from sharded_dataset_operator.core.observed import Observed, PublishedShard
from sharded_dataset_operator.core.spec import parse_spec
from sharded_dataset_operator.core.status import Phase
from sharded_dataset_operator.core.versions import IndexInfo
from tests.unit.test_reconcile import (
    DEFAULTS,
    NOW,
    UID,
    finished_dsort,
    keys_of,
    listing,
    raw_spec,
    report,
    totals,
    unit_shard,
)

REFRESHED = Owner(name="pets", namespace="ml", uid=UID, generation=3, refresh="2026-12-05")
PUBLISHED_PLAN = "samples-5f3a9c1e00004000-g3-plan.json"
OLD = "shuffled-5f3a9c1e00004000-g3-a1-"


def append_spec(**over: Any) -> Any:
    raw = raw_spec(**over)
    raw["shuffle"] = {**raw["shuffle"], "refreshMode": "Append"}
    return _parse(raw)


def _parse(raw: dict[str, Any]) -> Any:
    return parse_spec(raw, name="pets", default_endpoint="http://ais:51080")


def published(generation: int = 3) -> IndexInfo:
    return IndexInfo("g3", generation, "", NOW, 5, 2, 2000, f"ais://out/{OLD[:-3]}index.json",
                     record={"version": "g3", "plan": PUBLISHED_PLAN})  # fmt: skip


def taken_over_records() -> list[dict[str, Any]]:
    """The published version's two units (worker 1's keys b000-b004 in two shards), taken over whole."""
    keys = keys_of(1, 5)
    return [
        {"name": unit_shard(1, 0), "samples": 3, "bytes": 3 * 2048, "firstKey": keys[0], "takenOver": True,
         **totals(keys[:3]).to_dict()},
        {"name": unit_shard(1, 1), "samples": 2, "bytes": 2 * 2048, "firstKey": keys[3], "takenOver": True,
         **totals(keys[3:]).to_dict()},
    ]  # fmt: skip


def refreshed(**units: Any) -> Observed:
    """The planner took over both units of g3 (5 samples) and cut one new unit (worker 0: a000-a002)."""
    reused = {
        "kind": "sds-reused-v1", "generation": 3, "units": 2, "shards": taken_over_records(), "written": 5,
        "bytes": 5 * 2048, "consumed": 5, "planFingerprint": 7, **totals(keys_of(1, 5)).to_dict(),
    }  # fmt: skip
    table = {"count": 3, "convert": 1, "convertSamples": 3, "reused": 2, "chunks": [], "fingerprint": 7 + 11,
             "previous": PUBLISHED_PLAN, "previousBroken": 0, "takenOver": 2, "previousUnits": 2, **units}  # fmt: skip
    new = {**report(0, 3), "planFingerprint": 11}
    return Observed(
        previous={"observedGeneration": 3, "phase": "Converting"},
        plan={"kind": "sds-plan-v1", "generation": 3, "samples": 8, "skipped": {}, "units": table},
        job=JobState("pets-convert-g3", 3, succeeded=1, complete=True),
        reports={0: new},
        reused=reused,
        published=published(),
        published_shards={
            "": [PublishedShard(f"{OLD}000001.tar", 2, 900), PublishedShard(f"{OLD}000000.tar", 3, 1000)]
        },
    )


def attempt_base(owner: Owner = REFRESHED, attempt: int = 1) -> str:
    return naming.attempt_base(builders.output_base(append_spec(), owner), attempt)


def test_a_refresh_that_only_added_samples_copies_the_published_shards_then_shuffles_the_new_ones() -> None:
    d = decide(append_spec(), REFRESHED, refreshed(), DEFAULTS, NOW)
    copy, start = [a for a in d.actions if isinstance(a, CopyObjects | StartDsort)]
    assert isinstance(copy, CopyObjects) and isinstance(start, StartDsort)
    assert d.actions.index(copy) < d.actions.index(start)  # a dSort job of the attempt means its copies are done
    base = attempt_base()
    assert copy.pairs == ((f"{OLD}000000.tar", f"{base}k000000.tar"), (f"{OLD}000001.tar", f"{base}k000001.tar"))
    assert (copy.bucket, copy.provider) == ("out", "ais")
    assert start.spec["input_format"]["objnames"] == [unit_shard(0, 0)]  # the new unit only
    assert start.spec["output_format"] == f"{base}%06d"
    assert any(e.reason == "ShuffleMode" and "appending 3 new samples" in e.message for e in d.events)


@pytest.mark.parametrize(
    ("units", "observed", "why"),
    [
        ({"previousBroken": 1}, {}, "1 unit(s) of version g3 lost or changed samples"),
        ({"takenOver": 1}, {}, "1 of 2 units of version g3 were taken over whole"),
        ({"previous": "elsewhere-plan.json"}, {}, "did not start from version g3's plan"),
        ({}, {"published": published(generation=2)}, "the spec changed since version g3"),
        ({}, {"published_shards": {}}, "the shard list of version g3 could not be read"),
        (
            {},
            {"published_shards": {"": [PublishedShard(f"{OLD}000000.tar", 4, 1000)]}},
            "version g3's shards hold 4 samples, the units taken over from it 5",
        ),
    ],
)
def test_anything_but_pure_additions_reshuffles_everything_and_says_why(
    units: dict[str, Any], observed: dict[str, Any], why: str
) -> None:
    obs = refreshed(**units)
    for k, v in observed.items():
        setattr(obs, k, v)
    d = decide(append_spec(), REFRESHED, obs, DEFAULTS, NOW)
    if d.status.phase == Phase.FAILED:  # a plan that does not add up fails before the shuffle: not this test
        pytest.fail(d.status.message)
    assert not any(isinstance(a, CopyObjects) for a in d.actions)
    start = next(a for a in d.actions if isinstance(a, StartDsort))
    assert start.spec["input_format"]["objnames"] == sorted([unit_shard(0, 0), unit_shard(1, 0), unit_shard(1, 1)])
    assert any(e.reason == "ShuffleMode" and why in e.message for e in d.events), [e.message for e in d.events]


def test_reshuffle_mode_shuffles_everything_without_an_event() -> None:
    s = _parse(raw_spec())
    d = decide(s, REFRESHED, refreshed(), DEFAULTS, NOW)
    assert not any(isinstance(a, CopyObjects) for a in d.actions)
    assert len(next(a for a in d.actions if isinstance(a, StartDsort)).spec["input_format"]["objnames"]) == 3
    assert not any(e.reason == "ShuffleMode" for e in d.events)


def test_a_failed_copy_starts_no_dsort_keeps_the_shuffle_record_and_warns() -> None:
    d = decide(append_spec(), REFRESHED, refreshed(), DEFAULTS, NOW)
    copy = next(a for a in d.actions if isinstance(a, CopyObjects))
    outcomes = [Outcome(a) for a in d.actions[: d.actions.index(copy)]]
    outcomes.append(Outcome(copy, COPY_FAILED, error="ais://out/x not found: not copied"))
    d = after_actions(d, outcomes)
    assert d.status.phase != Phase.FAILED
    assert d.status.shuffle_attempt is None and d.status.dsort_job_id is None  # no attempt counted
    assert any(e.type == "Warning" and e.reason == "CopyFailed" for e in d.events)
    assert d.requeue is not None and d.requeue >= 15.0


def test_the_copies_and_the_new_shards_are_verified_together_and_the_index_says_appended() -> None:
    obs = refreshed()
    obs.previous = {"observedGeneration": 3, "phase": "Shuffling"}
    obs.dsort_attempts = {1: finished_dsort(description=f"sds:ml/pets:5f3a9c1e00004000:{REFRESHED.version}:a1")}
    d = decide(append_spec(), REFRESHED, obs, DEFAULTS, NOW)
    assert d.need_output and d.output_prefix == attempt_base()
    base = attempt_base()
    old = {"k000000": keys_of(1, 5)[:3], "k000001": keys_of(1, 5)[3:]}
    obs.output = listing({"000000": keys_of(0, 3), **old}, prefix=base)
    d = decide(append_spec(), REFRESHED, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY, d.status.message
    index = next(a for a in d.actions if isinstance(a, WriteIndex) and a.publishes)
    assert index.body["info"]["appended"] == {"to": "g3", "keptShards": 2}
    assert index.body["info"]["samples"] == 8 and len(index.body["shardlist"]) == 3
    # a copy short of one sample is caught as any short output is
    obs.output = listing({"000000": keys_of(0, 3), **{**old, "k000001": keys_of(1, 5)[3:4]}}, prefix=base)
    obs.previous = d.status.to_dict([], NOW) | {"phase": "Verifying"}
    d = decide(append_spec(), REFRESHED, obs, DEFAULTS, NOW)
    assert d.status.phase != Phase.READY and "hold 7 samples" in d.status.message


def test_kept_names_are_numbered_in_name_order_and_recognised() -> None:
    base = attempt_base()
    assert append.kept_name(base, 7) == f"{base}k000007.tar"
    assert append.is_kept(base, f"{base}k000007.tar") and not append.is_kept(base, f"{base}000007.tar")


def test_the_published_shards_are_resolved_as_readers_resolve_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from sharded_dataset_operator.runner import observation

    stable = {"shardlist": [{"url": "shuffled-x-g3-a1-000000.tar", "nsamples": 3, "filesize": 10},
                            {"url": "s3://elsewhere/x.tar", "nsamples": 1, "filesize": 1}]}  # fmt: skip
    info = IndexInfo("g3", 3, "", NOW, 4, 2, 11, "ais://out/ds/shuffled-x-g3-index.json")
    assert observation.published_shards(None, info, stable, "ml") == {  # type: ignore[arg-type]
        "": [PublishedShard("ds/shuffled-x-g3-a1-000000.tar", 3, 10)]
    }
    split_index = {"shardlist": [{"url": "train-a1-000000.tar", "nsamples": 2, "filesize": 5}]}
    reads: list[tuple[str, str, str]] = []

    def read_json(ais: Any, bucket: str, provider: str, name: str, namespace: str = "") -> Any:
        reads.append((bucket, provider, name))
        return split_index if name.endswith("train-index.json") else None

    monkeypatch.setattr(observation, "read_json", read_json)
    info.splits.update({"train": {"versionIndex": "ais://out/ds/train-index.json"},
                        "val": {"versionIndex": "ais://out/ds/val-index.json"}})  # fmt: skip
    shards = observation.published_shards(None, info, None, "ml")  # type: ignore[arg-type]
    assert shards == {"train": [PublishedShard("ds/train-a1-000000.tar", 2, 5)]}  # val unreadable: left out
    assert reads == [("out", "ais", "ds/train-index.json"), ("out", "ais", "ds/val-index.json")]


def split_refresh() -> Observed:
    """Splits: trainval gained a002 (a new unit), test gained nothing; g3's units were taken over whole."""
    from .test_splits import KEYS, record

    kept = [{**record("trainval", KEYS["trainval"][:2], 0), "takenOver": True},
            {**record("test", KEYS["test"], 2), "takenOver": True}]  # fmt: skip
    new = record("trainval", KEYS["trainval"][2:], 1)
    reused = {"kind": "sds-reused-v1", "generation": 3, "units": 2, "shards": kept, "written": 4, "bytes": 4 * 2048,
              "consumed": 4, "planFingerprint": 7, **_sum(kept).to_dict()}  # fmt: skip
    table = {"count": 3, "convert": 1, "convertSamples": 1, "reused": 2, "chunks": [], "fingerprint": 18,
             "previous": PUBLISHED_PLAN, "previousBroken": 0, "takenOver": 2, "previousUnits": 2}  # fmt: skip
    report = {"worker": 0, "generation": 3, "written": 1, "bytes": 2048, "shards": [new], "planFingerprint": 11,
              **_sum([new]).to_dict()}  # fmt: skip
    old = {s: f"shuffled-{s}-5f3a9c1e00004000-g3-a1-000000.tar" for s in ("trainval", "test")}
    return Observed(
        previous={"observedGeneration": 3, "phase": "Converting"},
        plan={"kind": "sds-plan-v1", "generation": 3, "samples": 5, "skipped": {}, "units": table},
        reports={0: report},
        reused=reused,
        published=published(),
        published_shards={
            "trainval": [PublishedShard(old["trainval"], 2, 99)],
            "test": [PublishedShard(old["test"], 2, 99)],
        },
    )


def _sum(records: list[dict[str, Any]]) -> Any:
    from sharded_dataset_operator.core.verify import Totals

    t = Totals()
    for r in records:
        t.merge(Totals.from_dict(r))
    return t


def split_job(split: str, attempt: int = 1) -> Any:
    desc = naming.dsort_description("ml", "pets", UID, REFRESHED.version, attempt, split)
    return finished_dsort(id=f"srt-{split}", description=desc)


def test_a_split_the_refresh_added_nothing_to_is_copied_without_a_dsort_and_verified() -> None:
    from .test_splits import KEYS, SPLITS
    from .test_splits import listing as split_listing

    raw = raw_spec(splits=SPLITS)
    raw["shuffle"] = {**raw["shuffle"], "refreshMode": "Append"}
    s = _parse(raw)
    obs = split_refresh()
    d = decide(s, REFRESHED, obs, DEFAULTS, NOW)
    (copy,) = [a for a in d.actions if isinstance(a, CopyObjects)]
    (start,) = [a for a in d.actions if isinstance(a, StartDsort)]
    assert (copy.split, copy.only) == ("trainval", False) and len(start.spec["input_format"]["objnames"]) == 1
    # trainval shuffled; test: the copies alone, no dSort, recorded before they are made
    obs.previous = after_actions(d, [Outcome(a, result="srt-trainval") for a in d.actions]).status.to_dict([], NOW)
    obs.split_attempts = {"trainval": {1: split_job("trainval")}, "test": {}}
    d = decide(s, REFRESHED, obs, DEFAULTS, NOW)
    (copy,) = [a for a in d.actions if isinstance(a, CopyObjects)]
    test_base = naming.attempt_base(builders.output_base(s, REFRESHED, "test"), 1)
    assert (copy.split, copy.only, copy.pairs) == ("test", True, ((obs.published_shards["test"][0].name,
                                                                   f"{test_base}k000000.tar"),))  # fmt: skip
    assert not any(isinstance(a, StartDsort) for a in d.actions) and d.status.reason == "Copying"
    assert d.record_first is not None and d.record_first["splits"]["test"]["shuffle"]["copyOnly"] is True
    crashed = copy_of({**obs.previous, "splits": {**obs.previous["splits"], **d.record_first["splits"]}})
    # the copy failed: nothing counted, tried again
    again = decide(s, REFRESHED, obs, DEFAULTS, NOW)
    (retry,) = [a for a in again.actions if isinstance(a, CopyObjects)]
    failed = after_actions(again, [Outcome(retry, COPY_FAILED, error="AIS at x: 503")])
    assert (failed.status.splits or {})["test"]["shuffle"]["attempt"] is None
    # the copy done: the split is shuffled, then verified from its copies like any output
    done = after_actions(d, [Outcome(copy)])
    obs.previous = done.status.to_dict([], NOW)
    assert obs.previous["splits"]["test"]["shuffle"]["finished"] is True
    d = decide(s, REFRESHED, obs, DEFAULTS, NOW)
    assert d.need_output and d.output_prefix == naming.attempt_base(builders.output_base(s, REFRESHED, "trainval"), 1)
    train = split_listing(d.output_prefix, KEYS["trainval"])
    obs.outputs[d.output_key] = train
    d = decide(s, REFRESHED, obs, DEFAULTS, NOW)
    assert d.need_output and d.output_prefix == test_base
    tally = split_listing(test_base, [])
    tally.add(f"{test_base}k000000.tar", 1000, {"type": "xxhash2", "value": "c"})
    for k in KEYS["test"]:
        tally.add(f"{test_base}k000000.tar/{k}.cls", 1)
        tally.add(f"{test_base}k000000.tar/{k}.image.jpg", 10)
    obs.outputs[d.output_key] = tally
    d = decide(s, REFRESHED, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY, d.status.message
    # a copy cut short by a crash (recorded, never marked done) is an ended attempt: deleted, then copied again
    obs.previous, obs.outputs = crashed, {}
    d = decide(s, REFRESHED, obs, DEFAULTS, NOW)
    assert d.status.reason == "ShuffleRetrying" and not d.actions  # after the backoff
    d = decide(s, REFRESHED, obs, DEFAULTS, "2026-11-23T10:05:00Z")
    (copy,) = [a for a in d.actions if isinstance(a, CopyObjects)]
    assert copy.only and copy.pairs[0][1].startswith(naming.attempt_base(builders.output_base(s, REFRESHED, "test"), 2))
    assert any(isinstance(a, DeletePrefix) and a.prefix == test_base for a in d.actions)
