"""The promises of README "What the operator promises" (issue 25), one focused test per problem found.

The seeded simulation (test_simulation.py) searches the interleavings; these pin each known problem down.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.ais import AccessDenied
from sharded_dataset_operator.core import actions, guard, naming, versions
from sharded_dataset_operator.core.actions import (
    CleanupArtifacts,
    CreateJob,
    DeleteJobs,
    DeletePrefix,
    Outcome,
    StartDsort,
    SweepUnits,
    WriteIndex,
)
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.decision import after_actions, decide
from sharded_dataset_operator.core.model import Entry, JobState
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.records import artifact_record
from sharded_dataset_operator.core.reuse import KeyDiff, encode_member
from sharded_dataset_operator.core.status import DatasetStatus, Phase
from sharded_dataset_operator.core.versions import IndexInfo, plan_retention
from sharded_dataset_operator.runner import executor, objcache, observation

from .test_reconcile import DEFAULTS, NOW, OWNER, UID, converted, dsort, listing, raw_spec, spec
from .test_versions import conditions, index_body, info, published_g2

FIVE = {"000000": ["a000", "a001", "a002", "b000", "b001"]}


def no_shuffle_spec() -> Any:
    from sharded_dataset_operator.core.spec import parse_spec

    raw = raw_spec()
    raw.pop("shuffle")
    return parse_spec(raw, name="pets", default_endpoint="http://ais:51080")


def published_with(samples: int, **over: Any) -> Observed:
    """g3 is built and verified (5 samples); g2, with `samples` samples, is published."""
    obs = published_g2(dsort_attempts=dsort(), output=listing(FIVE), **over)
    body = index_body("g2", 2, "2026-11-23T09:00:00Z", samples=samples)
    obs.published = IndexInfo.from_index(body, UID)
    return obs


# ------------------------------------------------------------------------------- 1: an empty source


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_plan_without_samples_is_never_published_shuffle_or_not(shuffle: bool) -> None:
    s = spec() if shuffle else no_shuffle_spec()
    obs = published_g2(plan={**converted().plan, "samples": 0}, reports={})  # type: ignore[dict-item]
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "NoSamples"
    assert "version g2 stays published" in d.status.message
    assert conditions(d)["Ready"] == ("True", "Serving")
    assert not [a for a in d.actions if isinstance(a, WriteIndex | CleanupArtifacts | SweepUnits)]


# ------------------------------------------------------------------------------- 2: a shrunken source


def test_a_version_that_drops_most_samples_is_held_with_the_numbers_and_the_published_one_serves() -> None:
    obs = published_with(50)
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "PublishHeld" and d.status.stalled
    assert "remove 45 of the published 50 samples" in d.status.message and "shardeddataset.dev/approve=g3" in (
        d.status.message
    )
    assert not [a for a in d.actions if isinstance(a, WriteIndex | CleanupArtifacts | SweepUnits)]
    c = conditions(d)
    assert c["Ready"] == ("True", "Serving") and c["Stalled"] == ("True", "PublishHeld")
    assert c["UpToDate"] == ("False", "PublishHeld")
    g = d.status.to_dict([], NOW)["publishGuard"]
    assert g == {"version": "g3", "held": True, "published": 50, "new": 5, "removed": 45, "added": 0, "maxRemoved": 5,
                 "splits": None, "approval": None}  # fmt: skip
    assert [e.reason for e in d.events] == ["PublishHeld"]
    obs.previous = d.status.to_dict([], NOW)
    again = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert again.status.reason == "PublishHeld" and again.events == []  # said once


def test_an_approval_of_another_version_is_ignored_with_an_event_and_the_right_one_publishes() -> None:
    obs = published_with(50)
    obs.approval = "g9"
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "PublishHeld"
    assert "ApprovalIgnored" in [e.reason for e in d.events]
    obs.previous = d.status.to_dict([], NOW)
    assert "ApprovalIgnored" not in [e.reason for e in decide(spec(), OWNER, obs, DEFAULTS, NOW).events]
    obs.approval = "g3"
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY
    assert [a.name for a in d.actions if isinstance(a, WriteIndex) and a.publishes] == ["shuffled-index.json"]
    assert "PublishApproved" in [e.reason for e in d.events]


@pytest.mark.parametrize(("max_removed", "held"), [("10%", True), ("100%", False), (45, False), (44, True)])
def test_the_guard_allows_what_spec_output_publish_guard_max_removed_says(max_removed: Any, held: bool) -> None:
    out = {"bucket": "out", "prefix": "samples-", "maxSamplesPerShard": 10, "publishGuard": {"maxRemoved": max_removed}}
    d = decide(spec(output=out), OWNER, published_with(50), DEFAULTS, NOW)
    assert (d.status.reason == "PublishHeld") is held, d.status.message


def test_the_planners_exact_count_beats_the_count_difference() -> None:
    """Half the published samples replaced by as many new ones: the counts are equal, the guard still holds."""
    obs = published_with(5)
    plan_name = obs.published.record["plan"]  # type: ignore[union-attr]
    obs.plan = {**(obs.plan or {}), "previousDiff": {"plan": plan_name, "removed": 3, "added": 3}}
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "PublishHeld" and "remove 3 of the published 5" in d.status.message
    obs.plan["previousDiff"]["plan"] = "another-plan.json"  # taken against another version: not used
    assert decide(spec(), OWNER, obs, DEFAULTS, NOW).status.phase == Phase.READY


def test_key_diff_counts_removed_and_added_per_split() -> None:
    old = [encode_member(k, 1, 0, s) for k, s in [("a", "x"), ("b", "x"), ("c", "y"), ("e", "y")]]
    diff = KeyDiff(iter(old))
    for key, split in [("b", "x"), ("c", "x"), ("d", "y")]:
        diff.see(key, split)
    got = diff.finish("p.json")
    assert (got["removed"], got["added"]) == (2, 1)  # a and e gone, d new
    assert got["removedBySplit"] == {"x": 1, "y": 2} and got["addedBySplit"] == {"x": 1, "y": 1}  # c moved y -> x


def test_a_split_that_loses_too_much_is_held_even_when_the_whole_is_within_the_guard() -> None:
    body = index_body("g2", 2, NOW, samples=100)
    body["info"]["splits"] = {"train": {"samples": 90}, "test": {"samples": 10}}
    published = IndexInfo.from_index(body, UID)
    assert published is not None
    verdict = guard.judge("g3", published, 92, {"train": 90, "test": 2}, None, "10%")
    assert verdict.held and not verdict.total.too_many and verdict.splits["test"].removed == 8
    assert "split test: 8 of 10 removed" in verdict.message()


# ------------------------------------------------------------------------------- 3: (tests/unit/test_splits.py)
# ------------------------------------------------------------------------------- 4: the sweep on a failed read


class Listed:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.size, self.checksum = name, len(data), f"{hash(data):x}"


class SweepAis:
    endpoint = "http://ais"

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.deleted: list[str] = []

    def list_pages(self, bucket: str, provider: str, prefix: str, **kw: Any) -> list[list[Listed]]:
        return [[Listed(n, d) for n, d in sorted(self.objects.items()) if n.startswith(prefix)]]

    def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> list[Entry]:
        return [Entry(n, len(d)) for n, d in sorted(self.objects.items()) if n.startswith(prefix)]

    def get(self, bucket: str, name: str, provider: str = "ais") -> bytes | None:
        return self.objects.get(name)

    def stream_lines(self, bucket: str, name: str, provider: str = "ais", missing_ok: bool = True) -> Any:
        from sharded_dataset_operator.clients.ais import MissingObject

        if name not in self.objects:
            if missing_ok:
                return iter(())
            raise MissingObject(name)
        return iter(self.objects[name].decode().splitlines())

    def delete_objects(self, bucket: str, names: list[str], provider: str = "ais") -> int:
        self.deleted += names
        return len(names)


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objcache, "CACHE", objcache.ObjectCache())
    monkeypatch.setattr(kube, "converter_pods", lambda *a: [])


@pytest.mark.parametrize("missing", ["plan", "unit table chunk"])
def test_a_sweep_that_cannot_read_a_live_plan_deletes_nothing_and_keeps_the_records(
    missing: str, fresh_cache: None
) -> None:
    record = artifact_record(spec(), OWNER)
    pool = record["pool"]["prefix"]
    objects = {f"{pool}0000000000000001-00.tar": b"x", f"{pool}0000000000000002-00.tar": b"y"}
    if missing == "unit table chunk":
        objects[record["plan"]] = json.dumps({"units": {"chunks": ["units-000.jsonl"]}}).encode()
    ais = SweepAis(objects)
    old = {**record, "version": "g2"}
    st = DatasetStatus(phase=Phase.READY, observed_generation=3, reason="Succeeded", message="", artifacts=[record])
    d = actions.Decision(status=st, actions=[SweepUnits("out", "ais", pool, live=(record,), restore=(old,))])
    d = after_actions(d, executor.execute(ais, d, OWNER))  # type: ignore[arg-type]
    assert ais.deleted == []
    assert [e.reason for e in d.events] == ["CleanupFailed"]
    assert ("nothing is swept" if missing == "plan" else "units-000.jsonl") in d.events[0].message
    assert [r["version"] for r in d.status.artifacts or []] == ["g3", "g2"]  # the deletion is tried again


# ------------------------------------------------------------------------------- 5: retry after ConversionIncomplete


def test_the_retry_after_conversion_incomplete_sets_the_failed_attempt_aside_and_converts_again() -> None:
    obs = converted()
    obs.reports[1]["written"] = 1  # a report that does not add up
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "ConversionIncomplete"
    obs.previous = d.status.to_dict([], NOW)
    obs.retry_request = "1"
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    base = "samples-5f3a9c1e00004000-g3-"
    assert [(type(a), getattr(a, "prefix", None)) for a in d.actions] == [
        (DeleteJobs, None),
        (DeletePrefix, f"{base}report-"),
        (DeletePrefix, f"{base}progress-"),
    ]
    # the next pass sees no reports (deleted) and the old Job gone: a new converter Job
    obs.previous, obs.reports, obs.job = d.status.to_dict([], NOW), {}, None
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert [type(a) for a in d.actions] == [CreateJob] and d.status.reason == "Converting"


# ------------------------------------------------------------------------------- 6: an early stop keeps the records


def test_a_pass_stopped_early_keeps_every_deletion_it_did_not_carry_out() -> None:
    old, older = {"version": "g1", "generation": 1}, {"version": "g2", "generation": 2}
    st = DatasetStatus(phase=Phase.SHUFFLING, observed_generation=3, reason="Shuffling", message="", artifacts=[{}])
    start = StartDsort({"input_format": {"objnames": ["x"]}})
    d = actions.Decision(
        status=st,
        actions=[start, CleanupArtifacts(old), SweepUnits("out", "ais", "p-", live=(), restore=(older,))],
    )
    d = after_actions(d, [Outcome(start, actions.DENIED, error="the token may not write")])
    assert d.status.reason == "AccessDenied" and d.status.stalled
    assert [r.get("version") for r in d.status.artifacts or []] == [None, "g1", "g2"]


def test_a_deletion_deferred_while_a_converter_runs_keeps_its_record_without_an_event() -> None:
    old = {"version": "g1", "generation": 1}
    st = DatasetStatus(phase=Phase.READY, observed_generation=3, reason="Succeeded", message="", artifacts=[{}])
    action = CleanupArtifacts(old)
    d = after_actions(actions.Decision(status=st, actions=[action]), [Outcome(action, actions.BUSY)])
    assert [r.get("version") for r in d.status.artifacts or []] == [None, "g1"] and d.events == []


# ------------------------------------------------------------------------------- 7: splits publish as one


def split_published(split_stables: dict[str, str | None]) -> tuple[Any, Observed]:
    from .test_splits import split_spec

    s = split_spec()
    owner2 = Owner("pets", "ml", UID, 2)
    body = index_body("g2", 2, "2026-11-23T09:00:00Z")
    body["info"]["artifacts"] = artifact_record(s, owner2)
    body["info"]["splits"] = {"trainval": {"samples": 3}, "test": {"samples": 2}}
    published = IndexInfo.from_index(body, UID)
    assert published is not None
    obs = Observed(previous={"observedGeneration": 2, "phase": "Ready"}, published=published)
    obs.split_stables = split_stables
    obs.split_sources = {("g2", k): {"info": {"uid": UID, "version": "g2", "split": k}}
                         for k, v in split_stables.items() if v != "g2"}  # fmt: skip
    return s, obs


def test_serving_puts_a_split_stable_index_behind_the_published_version_right() -> None:
    s, obs = split_published({"trainval": "g2", "test": "g1"})
    d = decide(s, Owner("pets", "ml", UID, 2), obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY
    writes = [(a.name, a.body["info"]["version"], a.guarded) for a in d.actions if isinstance(a, WriteIndex)]
    assert writes == [("shuffled-test-index.json", "g2", True)]


def test_a_version_a_split_stable_index_still_names_is_never_deleted() -> None:
    s, obs = split_published({"trainval": "g2", "test": "g1"})
    g1 = {**artifact_record(s, Owner("pets", "ml", UID, 1)), "version": "g1"}
    obs.previous = {"observedGeneration": 2, "phase": "Ready", "artifacts": [g1]}  # g1: no own index any more
    d = decide(s, Owner("pets", "ml", UID, 2), obs, DEFAULTS, NOW)
    assert not [a for a in d.actions if isinstance(a, CleanupArtifacts)]
    assert "g1" in [r.get("version") for r in d.status.artifacts or []]
    (kept,) = (d.status.versions or {})["previous"]
    assert kept["version"] == "g1" and kept["lastInUse"] == NOW and kept["deleteAfter"] == "2026-11-23T11:00:00Z"
    # the pass repairs the split's stable index: what readers leave then is known before it is written
    assert d.record_first is not None and d.record_first["versions"]["previous"] == [kept]
    obs.previous = {**d.status.to_dict([], NOW), **d.record_first}
    obs.split_stables = {"trainval": "g2", "test": "g2"}
    d = decide(s, Owner("pets", "ml", UID, 2), copy.deepcopy(obs), DEFAULTS, "2026-11-23T10:59:59Z")
    assert not [a for a in d.actions if isinstance(a, CleanupArtifacts)]  # its readers left it at 10:00
    d = decide(s, Owner("pets", "ml", UID, 2), obs, DEFAULTS, "2026-11-23T11:00:00Z")
    assert [a.record["version"] for a in d.actions if isinstance(a, CleanupArtifacts)] == ["g1"]


def test_a_version_is_kept_from_the_last_pass_a_split_stable_index_named_it_not_from_its_replacement() -> None:
    """A switch of the splits' stable indexes cut short and repaired by a later pass (at 09:30) moves their
    readers then, not when the replacing version was published (09:10): the version they leave is kept until
    the retention after its last use, also on the passes after the repair, which no longer see the use."""
    g1 = info("g1", 1, "2026-11-23T09:00:00Z")
    g2_body = index_body("g2", 2, "2026-11-23T09:10:00Z")
    g2_body["info"]["replaces"] = "g1"
    g2 = IndexInfo.from_index(g2_body, UID)
    assert g2 is not None
    records = [{"version": "g1", "generation": 1}]
    plain = plan_retention("g2", g2, records, {"g1": g1}, "2026-11-23T09:30:00Z", 600.0)
    assert [versions.record_version(x) for x in plain.retire] == ["g1"]  # 09:20 is past: the split's use aside
    r = plan_retention("g2", g2, records, {"g1": g1}, "2026-11-23T09:30:00Z", 600.0, in_use={"g1"})
    assert r.retire == [] and r.previous == [{"version": "g1", "generation": 1, "index": g1.index or None,
                                              "deleteAfter": "2026-11-23T09:40:00Z",
                                              "lastInUse": "2026-11-23T09:30:00Z"}]  # fmt: skip
    last = {"g1": "2026-11-23T09:30:00Z"}  # the pass after the repair: no index names g1 any more
    after = plan_retention("g2", g2, records, {"g1": g1}, "2026-11-23T09:31:00Z", 600.0, last_in_use=last)
    assert after.retire == [] and after.previous[0]["deleteAfter"] == "2026-11-23T09:40:00Z"
    assert after.previous[0]["lastInUse"] == "2026-11-23T09:30:00Z"  # carried on while it is kept
    done = plan_retention("g2", g2, records, {"g1": g1}, "2026-11-23T09:40:00Z", 600.0, last_in_use=last)
    assert [versions.record_version(x) for x in done.retire] == ["g1"]


# ------------------------------------------------------------------------------- P2: what cannot be seen is kept


def test_while_the_stable_index_the_status_saw_is_missing_nothing_is_deleted() -> None:
    obs = published_g2(reports={}, plan=None)
    g1 = {**artifact_record(spec(), Owner("pets", "ml", UID, 1)), "version": "g1"}  # never published: abandoned
    obs.previous["artifacts"].append(g1)
    assert [a.record["version"] for a in decide(spec(), OWNER, copy.deepcopy(obs), DEFAULTS, NOW).actions
            if isinstance(a, CleanupArtifacts)] == []  # fmt: skip  # the planner may still pick shards: none yet
    obs.plan = converted().plan
    d = decide(spec(), OWNER, copy.deepcopy(obs), DEFAULTS, NOW)
    assert [a.record["version"] for a in d.actions if isinstance(a, CleanupArtifacts)] == ["g1"]
    obs.published = None  # the listing missed the stable index the status saw naming g2
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert not [a for a in d.actions if isinstance(a, CleanupArtifacts | SweepUnits)]
    assert {"g1", "g2", "g3"} <= {r.get("version") for r in d.status.artifacts or []}
    assert "missing or unreadable" in (d.status.versions or {})["deletionsHeld"]


def test_a_kept_version_whose_own_index_is_not_seen_is_not_taken_for_never_published() -> None:
    published = info("g3", 3, NOW)
    records = [{"version": "g2", "generation": 2}, {"version": "g1", "generation": 1}]
    known = {"g2": "2026-11-23T10:30:00Z"}
    r = plan_retention("g3", published, records, {}, NOW, 3600.0, known)
    assert [x["version"] for x in r.keep] == ["g2"] and [x["version"] for x in r.abandon] == ["g1"]
    assert r.previous[0]["indexMissing"] and r.previous[0]["deleteAfter"] == "2026-11-23T10:30:00Z"
    later = plan_retention("g3", published, records, {}, "2026-11-23T10:31:00Z", 3600.0, known)
    assert [x["version"] for x in later.retire] == ["g2"]  # its retention is over: deleted (idempotent)


# ------------------------------------------------------------------------------- 9: not JSON at the index's name


def test_something_that_is_not_an_index_at_the_stable_index_name_is_an_output_conflict(fresh_cache: None) -> None:
    ais = SweepAis({"shuffled-index.json": b"<html>not json</html>"})
    obs = Observed(previous={})
    observation.observe_versions(ais, spec(), OWNER, obs)  # type: ignore[arg-type]
    assert obs.output_conflict and "not a ShardedDataset index" in obs.output_conflict
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "OutputConflict" and d.actions == []
    with pytest.raises(executor.OutputConflict, match="not a ShardedDataset index"):
        executor.parse_index(b"[1, 2]", "ais://out/shuffled-index.json")


def test_naming_of_the_attempt_objects() -> None:
    base = naming.uid_base("samples-", UID) + "g3-"
    assert naming.report_prefix(base) == naming.report_name(base, 0)[: len(naming.report_prefix(base))]
    assert naming.progress_name(base, 7).startswith(naming.progress_prefix(base))
    assert AccessDenied  # the tenancy tests cover a denied StartDsort end to end


# ------------------------------------------------------------------------------- found by the simulation


def test_splits_without_a_shuffle_are_verified_each_against_its_own_listing() -> None:
    """N1: both splits verify under the unit pool (one prefix); keyed by prefix, the second split was compared
    with the first split's listing and the run could never be Ready."""
    from sharded_dataset_operator.core.spec import parse_spec
    from sharded_dataset_operator.core.verify import OutputTally

    from .test_reconcile import totals, unit_shard

    raw = raw_spec(splits={"sets": [{"name": "trainval", "listFile": "tv.txt"}, {"name": "test", "listFile": "t.txt"}]})
    raw.pop("shuffle")
    s = parse_spec(raw, name="pets", default_endpoint="http://ais:51080")
    keys = {"trainval": ["a000", "a001", "a002"], "test": ["b000", "b001"]}
    reports = {}
    for w, split in enumerate(keys):
        shard = {"name": unit_shard(w, 0), "samples": len(keys[split]), "bytes": 10, "firstKey": keys[split][0],
                 "split": split, **totals(keys[split]).to_dict()}  # fmt: skip
        reports[w] = {"worker": w, "generation": 3, "written": len(keys[split]), "bytes": 10, "shards": [shard],
                      **totals(keys[split]).to_dict()}  # fmt: skip
    obs = converted(reports=reports)
    tallies = {}
    for w, split in enumerate(keys):
        name = reports[w]["shards"][0]["name"]
        tally = OutputTally("samples-5f3a9c1e00004000-u", frozenset({name}))
        tally.add(name, 1000, None)
        for k in keys[split]:
            tally.add(f"{name}/{k}.cls", 1)
            tally.add(f"{name}/{k}.image.jpg", 10)
        tallies[split] = tally
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and d.output_key == "trainval"
    obs.outputs["trainval"] = tallies["trainval"]
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.need_output and d.output_key == "test"  # the same prefix, its own listing
    assert d.output_prefix == "samples-5f3a9c1e00004000-u" and d.output_only == {reports[1]["shards"][0]["name"]}
    obs.outputs["test"] = tallies["test"]
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY, d.status.message


def test_a_new_versions_record_reaches_the_status_before_its_first_object_is_written() -> None:
    """N3: objects written before the version's record was saved (the pass then stopped and a newer spec
    superseded the version) were known to nobody and never deleted."""
    d = decide(spec(), OWNER, Observed(previous={}), DEFAULTS, NOW)
    assert [type(a) for a in d.actions] == [actions.EnsureBucket, CreateJob] and d.record_first
    saved = {"observedGeneration": 3, "artifacts": d.status.to_dict([], NOW)["artifacts"]}
    assert not decide(spec(), OWNER, Observed(previous=saved), DEFAULTS, NOW).record_first


def test_the_dsort_access_probe_of_a_split_is_written_among_that_splits_objects() -> None:
    """N4: with splits the probe was written outside every location of the version, and leaked."""
    from .test_splits import split_spec
    from .test_tenancy import ProbeAis

    class Names(ProbeAis):
        def put(self, bucket: str, name: str, *a: Any) -> None:
            self.calls.append(name)

    ais = Names("")
    executor.check_dsort_access(ais, split_spec(), OWNER, ["x.tar"], "test")  # type: ignore[arg-type]
    record = artifact_record(split_spec(), OWNER)
    probes = [c for c in ais.calls if "access-probe" in c]
    assert probes and all(any(loc["prefix"] in c for loc in record["locations"]) for c in probes), (
        probes,
        record["locations"],
    )


def test_cleanup_deletes_the_splits_own_indexes_and_nothing_a_stable_index_names(fresh_cache: None) -> None:
    """N5: without a shuffle the splits' own indexes are outside the version's locations and were left; and the
    last look before deleting refuses a version a stable index names."""
    from .test_splits import split_spec

    s = split_spec()
    record = {**artifact_record(s, Owner("pets", "ml", UID, 2)), "version": "g2"}
    names = record["index"]["splits"]
    objects = {n["versioned"]: b"{}" for n in names.values()}
    objects[record["index"]["versioned"]] = b"{}"
    stable = record["index"]["stable"]
    objects[stable] = json.dumps({"info": {"uid": UID, "version": "g2"}}).encode()
    ais = SweepAis(objects)
    ais.delete_prefix = lambda *a, **k: 0  # type: ignore[attr-defined]
    ais.dsort_find = lambda regex: []  # type: ignore[attr-defined]
    in_use = (("out", "ais", stable),)
    with pytest.raises(executor.VersionInUse, match="named by ais://out/"):
        executor.cleanup_record(ais, record, UID, in_use=in_use)  # type: ignore[arg-type]
    assert ais.deleted == []
    objects[stable] = json.dumps({"info": {"uid": UID, "version": "g3"}}).encode()
    objcache.CACHE.evict(ais, "out", "ais", (stable,))  # type: ignore[arg-type]
    executor.cleanup_record(ais, record, UID, in_use=in_use)  # type: ignore[arg-type]
    assert sorted(ais.deleted) == sorted([*(n["versioned"] for n in names.values()), record["index"]["versioned"]])


def test_a_version_is_kept_from_when_the_stable_index_left_it_not_from_a_build_that_never_switched() -> None:
    """N2: a build whose own index was written but whose switch never happened counted as the replacement of
    the published version, which was then deleted before its retention ended."""
    g1 = info("g1", 1, "2026-11-23T09:00:00Z")
    never = IndexInfo.from_index(index_body("g2", 2, "2026-11-23T09:10:00Z") | {}, UID)
    switched_body = index_body("g3", 3, "2026-11-23T09:40:00Z")
    switched_body["info"]["replaces"] = "g1"
    never_body = index_body("g2", 2, "2026-11-23T09:10:00Z")
    never_body["info"]["replaces"] = "g1"
    never = IndexInfo.from_index(never_body, UID)
    published = IndexInfo.from_index(switched_body, UID)
    assert never is not None and published is not None
    records = [{"version": "g1", "generation": 1}]
    r = plan_retention("g3", published, records, {"g1": g1, "g2": never}, NOW, 3600.0)
    assert r.previous[0]["deleteAfter"] == "2026-11-23T10:40:00Z"  # 1 h after g3 switched, not after g2


def test_a_version_split_stable_indexes_still_named_is_kept_from_when_they_left_it() -> None:
    """Found by the soak (seeds 1018259, 1183075): the stable index left g1 for g2 at 09:10, but g2's switch of
    the split stable indexes was cut short, so they named g1 until g3 was published at 09:40. g1's retention ran
    from 09:10 and its units were swept while the splits' readers had just been using it."""
    g1 = info("g1", 1, "2026-11-23T09:00:00Z")
    g2_body = index_body("g2", 2, "2026-11-23T09:10:00Z")
    g2_body["info"]["replaces"] = "g1"
    g3_body = index_body("g3", 3, "2026-11-23T09:40:00Z")
    g3_body["info"] |= {"replaces": "g2", "replacesSplits": {"test": "g1", "trainval": "g1"}}
    g2, g3 = IndexInfo.from_index(g2_body, UID), IndexInfo.from_index(g3_body, UID)
    assert g2 is not None and g3 is not None and g3.replaces_splits == ("g1",)
    records = [{"version": "g2", "generation": 2}, {"version": "g1", "generation": 1}]
    r = plan_retention("g3", g3, records, {"g1": g1, "g2": g2}, "2026-11-23T09:41:00Z", 600.0)
    due = {e["version"]: e["deleteAfter"] for e in r.previous}
    assert due == {"g2": "2026-11-23T09:50:00Z", "g1": "2026-11-23T09:50:00Z"}  # not 09:20 for g1
    assert [versions.record_version(x) for x in r.retire] == []
    # without the splits' record, g1 would have been retired at once (what the soak saw)
    del g3_body["info"]["replacesSplits"]
    g3_plain = IndexInfo.from_index(g3_body, UID)
    plain = plan_retention("g3", g3_plain, records, {"g1": g1, "g2": g2}, "2026-11-23T09:41:00Z", 600.0)
    assert [versions.record_version(x) for x in plain.retire] == ["g1"]


def test_a_dsort_attempt_is_recorded_before_it_starts_and_one_that_did_not_start_leaves_the_record() -> None:
    """Found by the soak: an attempt AIS forgot at once, the pass stopping before the job id was saved, was
    started again under the same number; a refused start overwrote the record of a lost attempt."""
    obs = converted()
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    (start,) = [a for a in d.actions if isinstance(a, StartDsort)]
    assert d.record_first is not None and d.record_first["shuffle"]["attempt"] == 1  # written before the start
    # the pass stopped after the start: the record without a job id, AIS knows no job of attempt 1
    obs.previous = {**d.status.to_dict([], NOW), **d.record_first}
    obs.previous["shuffle"]["startedAt"] = "2026-11-23T09:00:00Z"
    again = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    (start2,) = [a for a in again.actions if isinstance(a, StartDsort)]
    assert start2.spec["description"].endswith(":a2")
    assert any("no dSort job of this attempt" in e.message for e in again.events), again.events
    # attempt 2 refused by the token check: the record of (lost) attempt 1 stays, so the next start is a2 again
    after = after_actions(again, [Outcome(start2, actions.DENIED, error="no")])
    assert after.status.shuffle_attempt == 1 and after.status.reason == "AccessDenied"
    assert start.spec["description"].endswith(":a1")


def test_cleanup_aborts_the_running_dsort_job_of_every_split(fresh_cache: None) -> None:
    """Found by the soak: the jobs were looked up by attempt number, so of two splits' jobs of the same attempt
    one was kept running, and wrote its output after the version was deleted."""
    from sharded_dataset_operator.core.model import DsortJob

    from .test_splits import split_spec

    record = {**artifact_record(split_spec(), Owner("pets", "ml", UID, 2)), "version": "g2"}
    jobs = [DsortJob(f"j-{s}", f"{record['dsortDescription']}:s-{s}:a1", False, False, (), 0, 0) for s in ("a", "b")]
    ais = SweepAis({})
    aborted: list[str] = []
    ais.dsort_find = lambda regex: jobs  # type: ignore[attr-defined]
    ais.dsort_abort = aborted.append  # type: ignore[attr-defined]
    ais.delete_prefix = lambda *a, **k: 0  # type: ignore[attr-defined]
    executor.cleanup_record(ais, record, UID)  # type: ignore[arg-type]
    assert sorted(aborted) == ["j-a", "j-b"]


def test_no_version_is_deleted_while_the_wanted_versions_plan_is_not_seen() -> None:
    """Found by the soak: a plan a listing missed (PlanMissing) was taken for a version holding no units, and the
    sweep deleted the converted shards that version needed."""
    obs = published_g2(reports={}, plan=None)
    g1 = {**artifact_record(spec(), Owner("pets", "ml", UID, 1)), "version": "g1"}
    obs.previous["artifacts"].append(g1)
    obs.planner = JobState("pets-plan-g3", 3, succeeded=1, complete=True, completed_at=0.0)
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.reason == "PlanMissing" and d.status.phase == Phase.FAILED
    assert not [a for a in d.actions if isinstance(a, CleanupArtifacts | SweepUnits)]
    assert "no plan yet" in (d.status.versions or {})["deletionsHeld"]


def test_a_dsort_attempt_recorded_ahead_of_a_status_about_an_earlier_generation_is_still_counted() -> None:
    """Found by the soak (seed 1109393): the spec changed, and the operator stopped after each dSort start, so
    only the record written ahead of the start (`record_first`) was saved. The rest of the status, its
    `observedGeneration` too, still spoke of the earlier generation, so the record was taken for another
    version's and attempt 1 was started again, 4 times, outside the budget. A record names its version."""
    obs = converted()
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.record_first is not None and d.record_first["shuffle"]["version"] == OWNER.version
    earlier = d.status.to_dict([], NOW)
    earlier["observedGeneration"] = OWNER.generation - 1
    earlier["versions"] = {**(earlier.get("versions") or {}), "building": {"version": "g1"}}
    earlier["conditions"] = [{"type": "Shuffled", "status": "True"}]  # the earlier generation's, not this one's
    obs.previous = {**earlier, **d.record_first}
    obs.previous["shuffle"]["startedAt"] = "2026-11-23T09:00:00Z"
    again = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    (start,) = [a for a in again.actions if isinstance(a, StartDsort)]
    assert start.spec["description"].endswith(":a2")
    assert any("no dSort job of this attempt" in e.message for e in again.events), again.events
    # a record of another version says nothing about this one, whatever the rest of the status says
    obs.previous = {**d.status.to_dict([], NOW), **d.record_first}
    obs.previous["shuffle"] = {**obs.previous["shuffle"], "version": "g1", "startedAt": "2026-11-23T09:00:00Z"}
    other = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    (first,) = [a for a in other.actions if isinstance(a, StartDsort)]
    assert first.spec["description"].endswith(":a1")
