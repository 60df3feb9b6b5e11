"""Shared clusters: what a dataset's status, index or reports can claim is checked before the operator acts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import AccessDenied, Membership
from sharded_dataset_operator.core import decision, versions
from sharded_dataset_operator.core.actions import CleanupArtifacts, CreateJob, WriteIndex
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.decision import decide
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.records import artifact_record
from sharded_dataset_operator.core.status import Phase
from sharded_dataset_operator.pods.common import cluster_disturbed
from sharded_dataset_operator.runner import executor, objcache, observation
from sharded_dataset_operator.runner.settings import from_env

from .test_reconcile import DEFAULTS, NOW, OWNER, converted, report, spec


def test_a_record_of_this_resource_is_trusted_and_a_forged_one_says_why_not() -> None:
    good = artifact_record(spec(), OWNER)
    assert versions.record_problem(good, OWNER.namespace, OWNER.name, OWNER.uid) is None

    def forged(path: tuple[str, ...], value: Any) -> str | None:
        r = copy.deepcopy(good)
        target: Any = r
        for key in path[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(path[-1]) if isinstance(target, list) else path[-1]] = value
        return versions.record_problem(r, OWNER.namespace, OWNER.name, OWNER.uid)

    assert "does not end in" in (forged(("locations", "0", "prefix"), "other-team-") or "")
    assert "does not end in" in (forged(("locations", "1", "prefix"), "") or "")  # "" would delete a bucket
    assert "pool prefix" in (forged(("pool", "prefix"), "shared-") or "")
    assert "not a version id" in (forged(("version",), "g3-x") or "")
    assert "own index" in (forged(("index", "versioned"), "their-index.json") or "")
    assert "dSort description" in (forged(("dsortDescription",), "sds:team-b/pets:00000000:g1") or "")
    other = Owner("pets", "team-b", "0badc0de-0000-4000-8000-000000000000", OWNER.generation)
    assert versions.record_problem(good, other.namespace, other.name, other.uid) is not None


def test_a_forged_artifacts_record_is_refused_with_an_event_and_never_deleted() -> None:
    forged = artifact_record(spec(), OWNER) | {"version": "g1", "generation": 1}
    forged["locations"] = [{"bucket": "team-b", "provider": "ais", "prefix": "data/"}]
    obs = converted(previous={"observedGeneration": 3, "phase": "Converting", "artifacts": [forged]})
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert "ArtifactsRefused" in {e.reason for e in d.events}
    assert not [a for a in d.actions if isinstance(a, CleanupArtifacts)]
    assert all(r.get("version") != "g1" for r in d.status.artifacts or [])


def test_the_stable_index_of_another_resource_is_never_taken() -> None:
    mine = {"info": {"uid": OWNER.uid, "namespace": "ml", "resource": "pets"}}
    assert versions.index_owner_conflict(None, "ml", "pets", OWNER.uid) is None
    assert versions.index_owner_conflict(mine, "ml", "pets", OWNER.uid) is None
    earlier = {"info": {"uid": "an-earlier-uid", "namespace": "ml", "resource": "pets"}}
    assert versions.index_owner_conflict(earlier, "ml", "pets", OWNER.uid) is None  # deleted with Retain, recreated
    theirs = {"info": {"uid": "b-uid", "namespace": "team-b", "resource": "pets"}}
    msg = versions.index_owner_conflict(theirs, "ml", "pets", OWNER.uid) or ""
    assert "ShardedDataset team-b/pets (uid b-uid)" in msg
    assert "something other than a ShardedDataset" in (versions.index_owner_conflict({}, "ml", "pets", "u") or "")


def test_an_output_conflict_stalls_without_any_action() -> None:
    obs = Observed(previous={}, output_conflict="the output's stable index is already written by X")
    d = decide(spec(), OWNER, obs, DEFAULTS, NOW)
    assert d.status.phase == Phase.PENDING and d.status.reason == "OutputConflict" and d.status.stalled
    assert d.actions == [] and [e.reason for e in d.events] == ["OutputConflict"]


def test_reports_naming_shards_outside_the_resources_pool_fail_the_conversion() -> None:
    bad = report(1, 2)
    bad["shards"][0]["name"] = "team-b-data/secret.tar"
    d = decide(spec(), OWNER, converted(reports={0: report(0, 3), 1: bad}), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "ConversionIncomplete"
    assert (
        "outside this resource's converted shards" in d.status.message and "team-b-data/secret.tar" in d.status.message
    )
    assert CreateJob not in [type(a) for a in d.actions]


def test_endpoints_are_allowed_by_the_operator_setting_and_the_admin_token_is_read_from_its_file(
    tmp_path: Path,
) -> None:
    plain = from_env({"SDS_AIS_ENDPOINT": "http://ais-proxy.ais:51080"})
    assert plain.endpoint_allowed("http://ais-proxy.ais:51080/") and not plain.endpoint_allowed("http://evil:80")
    listed = from_env({"SDS_AIS_ENDPOINT": "http://a:1", "SDS_ALLOWED_ENDPOINTS": "http://a:1, http://b:2"})
    assert listed.endpoint_allowed("http://b:2") and not listed.endpoint_allowed("http://c:3")
    token = tmp_path / "token"
    s = from_env({"SDS_AIS_ADMIN_TOKEN_FILE": str(token)})
    assert s.admin_token() is None  # the Secret is not mounted (yet)
    token.write_text("abc\n")
    assert s.admin_token() == "abc"
    assert from_env({}).admin_token() is None


def test_a_token_that_may_not_see_the_cluster_map_is_not_taken_for_an_outage() -> None:
    hidden = Membership(version=0, targets=0, answering=0)
    assert not cluster_disturbed(hidden, hidden)
    assert cluster_disturbed(hidden, None)  # AIS unreachable still is one


class ProbeAis:
    endpoint = "http://ais"

    def __init__(self, refuse: str) -> None:
        self.refuse, self.calls = refuse, []  # type: list[str]

    def _step(self, what: str) -> None:
        self.calls.append(what)
        if what == self.refuse:
            raise AccessDenied("HTTP 403: insufficient permissions")

    def list_objects(self, *a: Any) -> list[Any]:
        self._step("list")
        return []

    def read_first_byte(self, *a: Any) -> bool:
        self._step("read")
        return True

    def put(self, *a: Any) -> None:
        self._step("put")

    def delete_objects(self, *a: Any) -> int:
        self._step("delete")
        return 1

    def get(self, *a: Any) -> bytes | None:
        return json.dumps({"info": {"uid": "b-uid", "namespace": "team-b", "resource": "pets"}}).encode()


@pytest.mark.parametrize("refuse", ["list", "read", "put", "delete"])
def test_dsort_starts_only_after_the_datasets_own_token_proved_it_may_read_and_write(refuse: str) -> None:
    ais = ProbeAis(refuse)
    with pytest.raises(AccessDenied, match="no dSort was started") as e:
        executor.check_dsort_access(ais, spec(), OWNER, ["samples-5f3a9c1e00004000-uabc-00.tar"])  # type: ignore[arg-type]
    assert {"list": "list ais://out/", "read": "read ais://out/", "put": "write ais://out/shuffled-",
            "delete": "delete ais://out/shuffled-"}[refuse] in str(e.value)  # fmt: skip
    executor.check_dsort_access(ProbeAis(""), spec(), OWNER, ["x.tar"])  # type: ignore[arg-type]


def test_publishing_over_another_resources_index_is_refused_at_the_last_moment() -> None:
    from sharded_dataset_operator.core.actions import Decision
    from sharded_dataset_operator.core.status import DatasetStatus

    ais = ProbeAis("")
    st = DatasetStatus(phase=Phase.READY, observed_generation=3, reason="Succeeded", message="")
    d = Decision(status=st, actions=[WriteIndex("out", "ais", "shuffled-index.json", {"info": {}}, publishes=True)])
    with pytest.raises(executor.OutputConflict, match="team-b/pets"):
        executor.execute(ais, d, OWNER)  # type: ignore[arg-type]
    assert "put" not in ais.calls


def test_tokens_never_reach_messages_or_the_log() -> None:
    import logging

    from sharded_dataset_operator.clients.ais import redact
    from sharded_dataset_operator.main import RedactTokens

    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZW5hbnQifQ.c2lnbmF0dXJlLXBhcnQ"
    text = f'invalid token [err: token revoked]: {jwt}"'
    assert redact(text) == 'invalid token [err: token revoked]: <token>"'
    try:
        raise RuntimeError(text)
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", (text,), sys.exc_info())
    assert RedactTokens().filter(record)
    line = logging.Formatter().format(record)
    assert jwt not in line and "<token>" in line and "RuntimeError" in line


def test_a_dsort_the_datasets_token_may_not_feed_stalls_the_pass_and_is_never_started() -> None:
    from sharded_dataset_operator.core.actions import Decision, StartDsort
    from sharded_dataset_operator.core.status import DatasetStatus

    st = DatasetStatus(phase=Phase.SHUFFLING, observed_generation=3, reason="Shuffling", message="starting dSort")
    request = {"input_format": {"objnames": ["samples-5f3a9c1e00004000-uabc-00.tar"]}}
    d = Decision(status=st, actions=[StartDsort(request)])
    outcomes = executor.execute(ProbeAis("put"), d, OWNER, spec=spec())  # type: ignore[arg-type]  # no dsort_start
    d = decision.after_actions(d, outcomes)
    assert d.status.stalled and d.status.reason == "AccessDenied" and "no dSort was started" in d.status.message
    assert d.requeue == 60.0 and [e.reason for e in d.events] == ["AccessDenied"]


class ListingAis:
    endpoint = "http://ais"

    def __init__(self, entries: list[tuple[str, int]]) -> None:
        self.entries, self.gets = entries, []  # type: list[tuple[str, int]], list[str]

    def list_pages(self, *a: Any, **kw: Any) -> list[list[Any]]:
        from types import SimpleNamespace

        return [[SimpleNamespace(name=n, size=size, checksum=f"c{size}") for n, size in self.entries]]

    def get(self, bucket: str, name: str, provider: str = "ais") -> bytes:
        self.gets.append(name)
        return json.dumps({"worker": 0}).encode()


def test_objects_too_large_or_too_many_are_a_failure_of_the_dataset_and_are_never_read() -> None:
    cache = objcache.ObjectCache(max_bytes=1000, max_objects=3)
    ok = ListingAis([("b-report-w0000.json", 999)])
    assert cache.read(ok, "out", "ais", "b-report-")["b-report-w0000.json"] == {"worker": 0}  # type: ignore[arg-type]
    big = ListingAis([("b-report-w0000.json", 10), ("b-report-w0099.json", 80 * 2**20)])
    with pytest.raises(objcache.LimitExceeded, match=r"b-report-w0099.json is 83886080 bytes.*not read"):
        cache.read(big, "out", "ais", "b-report-")  # type: ignore[arg-type]
    assert big.gets == []
    many = ListingAis([(f"b-progress-w{i:04d}.json", 10) for i in range(4)])
    with pytest.raises(objcache.LimitExceeded, match="more than 3 objects"):
        cache.read(many, "out", "ais", "b-progress-")  # type: ignore[arg-type]
    assert many.gets == []


def test_only_objects_naming_a_valid_worker_count_as_a_workers() -> None:
    objects = {"a": {"worker": 1}, "b": {"worker": "1"}, "c": {"worker": -1}, "d": {}, "e": {"worker": 10**9}}
    assert observation.by_worker(objects) == {1: {"worker": 1}}


def test_one_namespace_holds_at_most_its_share_of_the_pass_threads() -> None:
    import asyncio

    from sharded_dataset_operator.runner import handlers
    from sharded_dataset_operator.runner.settings import SETTINGS

    async def scenario() -> list[str]:
        order: list[str] = []
        release = asyncio.Event()

        async def stalling(ns: str) -> None:
            async with handlers._slot(ns):
                order.append(f"{ns} in")
                await release.wait()

        async def quick(ns: str) -> None:
            async with handlers._slot(ns):
                order.append(f"{ns} in")

        stalled = [asyncio.create_task(stalling("team-a")) for _ in range(SETTINGS.workers_per_namespace + 1)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(quick("team-b"), 1.0)  # not held up by team-a's stalled passes
        order.append("team-a waiting: " + str(sum(not t.done() for t in stalled)))
        release.set()
        await asyncio.gather(*stalled)
        return order

    order = asyncio.run(scenario())
    share = SETTINGS.workers_per_namespace
    assert order[: share + 1] == ["team-a in"] * share + ["team-b in"]
    assert order[share + 1] == f"team-a waiting: {share + 1}" and order.count("team-a in") == share + 1


def test_a_spec_tolerating_control_plane_taints_fails_before_any_pod() -> None:
    bad = spec(conversion={"workers": 2, "tolerations": [{"key": "node-role.kubernetes.io/control-plane"}]})
    d = decide(bad, OWNER, Observed(previous={}), DEFAULTS, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "PlacementNotAllowed"
    assert "spec.conversion.tolerations[0]" in d.status.message and not d.actions


def test_records_of_versions_written_with_32_bit_names_are_still_this_resources() -> None:
    legacy = artifact_record(spec(), OWNER)
    legacy = json.loads(json.dumps(legacy).replace("5f3a9c1e00004000", "5f3a9c1e"))
    assert "5f3a9c1e-g3-" in legacy["locations"][0]["prefix"]
    assert versions.record_problem(legacy, OWNER.namespace, OWNER.name, OWNER.uid) is None
    mixed = copy.deepcopy(legacy)
    mixed["locations"][0]["prefix"] = "samples-0badc0de-g3-"
    assert versions.record_problem(mixed, OWNER.namespace, OWNER.name, OWNER.uid) is not None


def test_deleting_a_prefix_holds_one_batch_of_names_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from sharded_dataset_operator.clients.ais import Ais
    from sharded_dataset_operator.core.model import Entry

    objects = {f"v-{i:05d}": 1 for i in range(25)} | {"v-index.json": 1}
    held: list[int] = []
    ais = Ais("http://127.0.0.1:9")
    monkeypatch.setattr(ais, "list_objects", lambda b, p, prefix: (Entry(n, 1) for n in sorted(objects)))

    def delete(bucket: str, names: list[str], provider: str = "ais") -> int:
        held.append(len(names))
        for n in names:
            objects.pop(n)
        return len(names)

    monkeypatch.setattr(ais, "delete_objects", delete)
    assert ais.delete_prefix("out", "v-", keep=frozenset({"v-index.json"}), batch=10) == 25
    assert held == [10, 10, 5] and list(objects) == ["v-index.json"]
