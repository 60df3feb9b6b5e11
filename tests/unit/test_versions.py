"""The version lifecycle: build beside the published version, publish by one PUT, retain, delete."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sharded_dataset_operator.core import naming, versions
from sharded_dataset_operator.core.actions import CleanupArtifacts, WriteIndex
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.decision import decide
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.records import artifact_record
from sharded_dataset_operator.core.status import Phase
from sharded_dataset_operator.core.versions import IndexInfo, parse_duration, plan_retention

from .test_reconcile import DEFAULTS, NOW, OUT, OWNER, UID, converted, dsort, kinds, listing, spec

LATER = "2026-11-23T10:30:00Z"
MUCH_LATER = "2026-11-23T11:00:01Z"


def index_body(
    version: str, generation: int, published_at: str, samples: int = 5, uid: str = UID, refresh: str = ""
) -> dict[str, Any]:
    owner = Owner("pets", "ml", uid, generation, refresh)
    record = artifact_record(spec(), owner) | {"version": version}
    return {
        "__kind__": "wids-shard-index-v1",
        "info": {
            "uid": uid,
            "version": version,
            "generation": generation,
            "refresh": refresh,
            "publishedAt": published_at,
            "samples": samples,
            "versionIndex": f"ais://out/shuffled-5f3a9c1e00004000-{version}-index.json",
            "artifacts": record,
        },
        "shardlist": [{"url": "a.tar", "nsamples": samples, "filesize": 100}],
    }


def info(version: str, generation: int, published_at: str, refresh: str = "") -> IndexInfo:
    parsed = IndexInfo.from_index(index_body(version, generation, published_at, refresh=refresh), UID)
    assert parsed is not None
    return parsed


def record(version: str) -> dict[str, Any]:
    return {"version": version, "generation": int(version[1:].split("r")[0]), "locations": []}


# ------------------------------------------------------------------------------------------ pure rules


def test_version_ids_derive_from_generation_and_refresh_value() -> None:
    assert naming.version_id(4) == "g4"
    refreshed = naming.version_id(4, "2026-12-01")
    assert refreshed.startswith("g4r") and len(refreshed) == 11
    assert refreshed == naming.version_id(4, "2026-12-01") != naming.version_id(4, "2026-12-02")
    assert Owner("pets", "ml", UID, 4, "2026-12-01").version == refreshed
    assert naming.generation_base("s-", UID, refreshed) == f"s-5f3a9c1e00004000-{refreshed}-"
    assert naming.job_name("pets", refreshed, "plan") == f"pets-plan-{refreshed}"


def test_the_refresh_annotation_wants_a_new_version_and_its_absence_wants_nothing_new() -> None:
    published = info(naming.version_id(4, "a"), 4, NOW, refresh="a")
    assert versions.desired_refresh("b", 4, published) == "b"
    assert versions.desired_refresh(None, 4, published) == "a"  # removing the annotation rebuilds nothing
    assert versions.desired_refresh(None, 5, published) == ""  # a new generation: a plain build
    assert versions.desired_refresh(None, 4, None) == ""


def test_index_info_only_of_this_resource() -> None:
    assert IndexInfo.from_index(index_body("g2", 2, NOW, uid="someone-else"), UID) is None
    assert IndexInfo.from_index(None, UID) is None
    parsed = info("g2", 2, NOW)
    assert (parsed.version, parsed.samples, parsed.shards, parsed.bytes) == ("g2", 5, 1, 100)


def test_previous_versions_are_kept_for_the_retention_after_they_were_replaced() -> None:
    g1, g2 = info("g1", 1, "2026-11-23T08:00:00Z"), info("g2", 2, "2026-11-23T09:30:00Z")
    published = info("g3", 3, NOW)
    records = [record("g3"), record("g2"), record("g1")]
    # g1 was replaced by g2 at 09:30 (due 10:30), g2 by g3 at 10:00 (due 11:00)
    r = plan_retention("g3", published, records, {"g1": g1, "g2": g2}, NOW, 3600)
    assert [e["version"] for e in r.previous] == ["g1", "g2"]
    assert [e["deleteAfter"] for e in r.previous] == ["2026-11-23T10:30:00Z", "2026-11-23T11:00:00Z"]
    assert r.retire == [] and r.abandon == [] and r.next_deadline == 1800
    r = plan_retention("g3", published, records, {"g1": g1, "g2": g2}, LATER, 3600)
    assert [versions.record_version(x) for x in r.retire] == ["g1"]
    assert [e["version"] for e in r.previous] == ["g2"]
    r = plan_retention("g3", published, records, {"g2": g2}, MUCH_LATER, 3600)
    assert [versions.record_version(x) for x in r.retire] == ["g2"] and r.previous == []
    assert [versions.record_version(x) for x in r.abandon] == ["g1"]  # its own index already gone
    # 0s: deleted as soon as it is replaced
    r = plan_retention("g3", published, records[:2], {"g2": g2}, NOW, 0)
    assert [versions.record_version(x) for x in r.retire] == ["g2"]


def test_a_build_that_never_was_published_is_abandoned_and_the_wanted_and_published_are_kept() -> None:
    r = plan_retention("g5", info("g3", 3, NOW), [record("g5"), record("g4"), record("g3")], {}, NOW, 3600)
    assert [versions.record_version(x) for x in r.keep] == ["g5", "g3"]
    assert [versions.record_version(x) for x in r.abandon] == ["g4"]


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("30m", 1800), ("90s", 90), ("1h30m", 5400), ("0s", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1d", "h", "10", "-1s", "1h 30m"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=r"spec.output.retainPrevious"):
        parse_duration(text)


# ------------------------------------------------------------------------------------------ decisions


def published_g2(**over: Any) -> Observed:
    """Generation 3 is wanted; generation 2 is published (and its own index exists)."""
    obs = converted(**over)
    obs.published = info("g2", 2, "2026-11-23T09:00:00Z")
    obs.previous = obs.previous or {
        "observedGeneration": 3,
        "phase": "Converting",
        "artifacts": [artifact_record(spec(), OWNER), obs.published.record],
        "versions": {"building": {"version": "g3"}, "published": obs.published.summary()},
    }
    return obs


def conditions(d: Any) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in d.status.to_dict([], NOW)["conditions"]}


def test_while_a_new_version_builds_the_published_one_stays_ready() -> None:
    obs = published_g2(reports={})  # generation 3 is converting
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.CONVERTING
    c = conditions(d)
    assert c["Ready"] == ("True", "Serving") and c["UpToDate"] == ("False", "Converting")
    assert c["Reconciling"][0] == "True" and c["Stalled"][0] == "False"
    v = d.status.versions or {}
    assert v["published"]["version"] == "g2" and v["building"]["version"] == "g3"
    assert d.status.index_object == "ais://out/shuffled-index.json"
    assert not [a for a in d.actions if isinstance(a, CleanupArtifacts | WriteIndex)]  # g2 is untouched


def test_the_new_versions_planner_takes_over_from_the_published_version_only_where_its_shards_are() -> None:
    import json

    from sharded_dataset_operator.core.actions import CreateJob

    def planner_config(obs: Observed, **over: Any) -> dict[str, Any]:
        d = decide(spec(**over), OWNER, obs, DEFAULTS, NOW)
        (job,) = [a.manifest for a in d.actions if isinstance(a, CreateJob)]
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        return dict(json.loads(next(e["value"] for e in env if e["name"] == "SDS_CONVERTER_CONFIG")))

    out = planner_config(published_g2(plan=None, reports={}))["output"]
    assert out["previous"] == "samples-5f3a9c1e00004000-g2-plan.json"
    assert "previous" not in planner_config(Observed(previous={}))["output"]  # nothing published yet
    # the output moved to another bucket: the published version's shards are not where this one writes
    moved = planner_config(
        published_g2(plan=None, reports={}),
        output={"bucket": "elsewhere", "prefix": "samples-", "maxSamplesPerShard": 10},
    )
    assert "previous" not in moved["output"]


def test_a_failed_new_version_leaves_the_published_one_ready_and_says_both() -> None:
    obs = published_g2(plan={**converted().plan, "samples": 0})  # type: ignore[dict-item]
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "NoSamples"
    c = conditions(d)
    assert c["Ready"] == ("True", "Serving") and c["Stalled"] == ("True", "NoSamples")
    assert c["UpToDate"] == ("False", "NoSamples")
    assert "serving version g2" in (d.status.serving or "") and "g3" in (d.status.serving or "")
    assert not [a for a in d.actions if isinstance(a, CleanupArtifacts)]


def test_publishing_replaces_the_published_version_which_is_then_kept_for_its_retention() -> None:
    s = spec(output={"bucket": "out", "prefix": "samples-", "maxSamplesPerShard": 10, "retainPrevious": "30m"})
    obs = published_g2(dsort_attempts=dsort(), output=listing({"000000": ["a000", "a001", "a002", "b000", "b001"]}))
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.READY
    assert kinds(d)[-2:] == [WriteIndex, WriteIndex] and d.requeue == 1.0
    v = d.status.versions or {}
    assert v["published"]["version"] == "g3" and v["building"] is None
    assert v["previous"] == [
        {"version": "g2", "generation": 2, "index": "ais://out/shuffled-5f3a9c1e00004000-g2-index.json",
         "deleteAfter": LATER, "lastInUse": NOW},  # the stable index named it as this pass began
    ]  # fmt: skip
    assert d.record_first is not None and d.record_first["versions"] == {"previous": v["previous"]}  # before
    # the next pass: served from the stable index; g2 deleted once the 30 minutes are over
    after = copy.copy(obs)
    after.published = IndexInfo.from_index(d.actions[-1].body, UID)  # type: ignore[union-attr]
    after.version_indexes = {"g2": obs.published}  # type: ignore[dict-item]
    after.previous = d.status.to_dict([], NOW)
    after.output = None
    d2 = decide(s, OWNER, after, DEFAULTS, NOW)
    assert d2.status.phase == Phase.READY and not d2.need_output and d2.requeue == 1801.0
    assert not [a for a in d2.actions if isinstance(a, CleanupArtifacts | WriteIndex)]
    d3 = decide(s, OWNER, after, DEFAULTS, LATER)
    cleanups = [a for a in d3.actions if isinstance(a, CleanupArtifacts)]
    assert [(versions.record_version(a.record), a.retired) for a in cleanups] == [("g2", True)]
    assert "VersionDeleted" in [e.reason for e in d3.events]
    assert (d3.status.versions or {})["previous"] == []


def test_a_version_index_written_before_a_crash_is_copied_not_rewritten() -> None:
    obs = published_g2(dsort_attempts=dsort(), output=listing({"000000": ["a000", "a001", "a002", "b000", "b001"]}))
    earlier = index_body("g3", 3, "2026-11-23T09:59:00Z")
    obs.wanted_index = earlier
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    writes = [a for a in d.actions if isinstance(a, WriteIndex)]
    assert [(w.name, w.body) for w in writes] == [("shuffled-index.json", earlier)]
    assert (d.status.versions or {})["published"]["publishedAt"] == "2026-11-23T09:59:00Z"


def test_a_refresh_builds_a_new_version_of_the_same_generation() -> None:
    refreshed = Owner("pets", "ml", UID, 3, "monday")
    obs = Observed(previous={"observedGeneration": 3, "phase": "Ready"})
    obs.published = info("g3", 3, NOW)
    d = decide(spec(), refreshed, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.CONVERTING and d.status.reason == "Planning"
    planner = next(a for a in d.actions if hasattr(a, "manifest"))
    assert planner.manifest["metadata"]["name"] == f"pets-plan-{refreshed.version}"  # type: ignore[attr-defined]
    assert conditions(d)["Ready"] == ("True", "Serving")
    assert (d.status.versions or {})["building"]["refresh"] == "monday"
    assert OUT not in str(d.status.artifacts[0])  # type: ignore[index]


def test_a_pass_that_publishes_without_seeing_the_stable_index_counts_what_it_last_named_as_in_use() -> None:
    """Found by the soak (seeds 1125267, 1128348): a listing missed the stable index, and the pass published the
    new version anyway; the version the stable index still named got no `lastInUse` from that pass, so it was
    deleted `retainPrevious` after an earlier pass, before its readers had their time (promise P1)."""
    s = spec(output={"bucket": "out", "prefix": "samples-", "maxSamplesPerShard": 10, "retainPrevious": "30m"})
    obs = published_g2(dsort_attempts=dsort(), output=listing({"000000": ["a000", "a001", "a002", "b000", "b001"]}))
    g2 = obs.published
    assert g2 is not None
    obs.version_indexes = {"g2": g2}
    obs.published = None  # the stable index, still naming g2, is not seen in this pass
    d = decide(s, OWNER, obs, DEFAULTS, NOW)
    assert any(isinstance(a, WriteIndex) and a.publishes for a in d.actions)
    (g2_entry,) = (d.status.versions or {})["previous"]
    assert g2_entry["version"] == "g2" and g2_entry["lastInUse"] == NOW and g2_entry["deleteAfter"] == LATER
