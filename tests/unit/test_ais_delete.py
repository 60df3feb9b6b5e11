"""Deletes through AIS's multi-object delete jobs, in batches, falling back to one DELETE per object; and
server-side copies."""

from __future__ import annotations

from typing import Any

import pytest

from sharded_dataset_operator.clients import ais_objects as ais_module
from sharded_dataset_operator.clients.ais import AccessDenied, Ais, AisUnavailable
from sharded_dataset_operator.core.model import AisJob


class FakeBucket:
    """What `Ais` uses of an SDK bucket for deletes: `objects(obj_names=...).delete()` and `object(n).delete()`."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def objects(self, obj_names: list[str]) -> Any:
        cluster = self.cluster

        class Group:
            def delete(self) -> str:
                if cluster.refuse_jobs:
                    raise AccessDenied("HTTP 403: no")
                cluster.jobs.append(list(obj_names))
                return f'"job-{len(cluster.jobs)}"'

        return Group()

    def object(self, name: str) -> Any:
        cluster = self.cluster

        class Obj:
            def delete(self) -> None:
                cluster.single.append(name)

        return Obj()


class FakeCluster:
    def __init__(self) -> None:
        self.jobs: list[list[str]] = []
        self.single: list[str] = []
        self.refuse_jobs = False
        self.polls: dict[str, int] = {}
        self.ending: dict[int, AisJob | Exception | None] = {}  # job number -> what its status ends as

    def status(self, job_id: str) -> AisJob | None:
        self.polls[job_id] = self.polls.get(job_id, 0) + 1
        if self.polls[job_id] < 3:  # running for two polls
            return AisJob(job_id, False, False)
        end = self.ending.get(int(job_id.removeprefix("job-")), AisJob(job_id, True, False))
        if isinstance(end, Exception):
            raise end
        return end


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[Ais, FakeCluster]:
    fake = FakeCluster()
    ais = Ais("http://127.0.0.1:9")
    monkeypatch.setattr(ais, "_bucket", lambda name, provider: FakeBucket(fake))
    monkeypatch.setattr(ais, "job_status", fake.status)
    monkeypatch.setattr(ais_module.time, "sleep", lambda s: None)
    return ais, fake


def names(n: int) -> list[str]:
    return [f"v-{i:05d}.tar" for i in range(n)]


def test_many_names_are_deleted_by_multi_object_jobs_of_at_most_a_batch_each(
    cluster: tuple[Ais, FakeCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    ais, fake = cluster
    monkeypatch.setattr(ais_module, "MULTI_DELETE_BATCH", 10)
    assert ais.delete_objects("out", names(25)) == 25
    assert [len(j) for j in fake.jobs] == [10, 10, 5]
    assert [n for j in fake.jobs for n in j] == names(25)
    assert fake.single == []
    assert fake.polls == {"job-1": 3, "job-2": 3, "job-3": 3}  # each job waited for until it finished


def test_a_few_names_are_deleted_one_by_one(cluster: tuple[Ais, FakeCluster]) -> None:
    ais, fake = cluster
    few = names(ais_module.MULTI_DELETE_FROM - 1)
    assert ais.delete_objects("out", few) == len(few)
    assert fake.jobs == [] and fake.single == few


@pytest.mark.parametrize(
    "ending",
    [
        AisJob("job-2", True, True, "aborted"),
        AisJob("job-2", True, False, "t[x]: ais://out/v-00012.tar does not exist"),
        None,  # AIS no longer knows the job
        AccessDenied("HTTP 403: may not see the cluster's jobs"),
    ],
    ids=["aborted", "error", "unknown", "status-denied"],
)
def test_a_job_that_does_not_end_cleanly_has_its_names_deleted_one_by_one(
    cluster: tuple[Ais, FakeCluster], monkeypatch: pytest.MonkeyPatch, ending: AisJob | Exception | None
) -> None:
    ais, fake = cluster
    monkeypatch.setattr(ais_module, "MULTI_DELETE_BATCH", 10)
    fake.ending[2] = ending
    assert ais.delete_objects("out", names(25)) == 25
    assert len(fake.jobs) == 3
    assert fake.single == names(25)[10:20]  # only the second job's names, which nothing says are gone


def test_a_token_that_may_not_start_jobs_deletes_one_by_one(cluster: tuple[Ais, FakeCluster]) -> None:
    ais, fake = cluster
    fake.refuse_jobs = True
    assert ais.delete_objects("out", names(40)) == 40
    assert fake.jobs == [] and fake.single == names(40)


def test_a_job_that_never_finishes_is_an_outage_not_a_success(
    cluster: tuple[Ais, FakeCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    ais, fake = cluster
    monkeypatch.setattr(fake, "status", lambda job_id: AisJob(job_id, False, False))
    monkeypatch.setattr(ais, "job_status", fake.status)
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(ais_module.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(AisUnavailable, match="ran over"):
        ais.delete_objects("out", names(20))
    assert fake.single == []


class CopyingBucket:
    """What `Ais.copy_objects` uses of an SDK bucket: `object(src).copy(object(dst))`, here with a dict store."""

    def __init__(self, store: dict[str, bytes], fail: Exception | None = None) -> None:
        self.store, self.fail = store, fail

    def object(self, name: str) -> Any:
        bucket = self

        class Obj:
            def copy(self, to: Any) -> None:
                if bucket.fail is not None:
                    raise bucket.fail
                if name not in bucket.store:
                    from aistore.sdk.errors import ErrObjNotFound

                    raise ErrObjNotFound(404, f"{name} does not exist", "", "")
                bucket.store[to.name] = bucket.store[name]

        o = Obj()
        o.name = name  # type: ignore[attr-defined]
        return o


def test_copies_are_made_inside_ais_and_a_missing_source_or_an_outage_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from sharded_dataset_operator.clients.ais import MissingObject

    store = {f"old-{i}.tar": bytes([i]) for i in range(5)}
    ais = Ais("http://127.0.0.1:9")
    monkeypatch.setattr(ais, "_bucket", lambda name, provider: CopyingBucket(store))
    pairs = [(f"old-{i}.tar", f"new-k{i:06d}.tar") for i in range(5)]
    assert ais.copy_objects("b", pairs) == 5
    assert all(store[d] == store[s] for s, d in pairs)
    with pytest.raises(MissingObject, match=r"ais://b/gone\.tar not found"):
        ais.copy_objects("b", [("gone.tar", "x.tar")])
    import requests

    monkeypatch.setattr(ais, "_bucket", lambda name, provider: CopyingBucket(store, requests.ConnectionError("down")))
    with pytest.raises(AisUnavailable, match="down"):
        ais.copy_objects("b", pairs)
