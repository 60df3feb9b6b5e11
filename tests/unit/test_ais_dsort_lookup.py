"""A pass asks AIS for the details of running dSort jobs only: archived ones are remembered."""

from __future__ import annotations

from typing import Any

import pytest

from sharded_dataset_operator.clients import ais_cluster
from sharded_dataset_operator.clients.ais import Ais


class Response:
    def __init__(self, body: Any, status: int = 200) -> None:
        self.body, self.status_code, self.text = body, status, ""

    def json(self) -> Any:
        return self.body


def details(desc: str, finished: bool, records: int) -> dict[str, Any]:
    metrics = {
        "description": desc,
        "shard_creation": {"finished": finished, "created_count": 1, "to_create": 1},
        "local_extraction": {"extracted_record_count": records, "total_count": 2, "extracted_count": 2},
    }
    return {"t1": {"Metrics": metrics, "finish_time": "2026-12-04T10:00:00Z" if finished else None}}


@pytest.fixture
def ais(monkeypatch: pytest.MonkeyPatch) -> tuple[Ais, list[str], dict[str, bool]]:
    monkeypatch.setattr(ais_cluster, "ARCHIVED", ais_cluster.ArchivedJobs())
    client = Ais("http://127.0.0.1:9")
    asked: list[str] = []
    archived = {"srt-a": True, "srt-b": True, "srt-c": False}

    def rest(method: str, path: str, **kw: Any) -> Response:
        params = kw.get("params") or {}
        if "uuid" in params:
            asked.append(params["uuid"])
            return Response(details(f"sds ns/x {params['uuid']}", archived[params["uuid"]], 10))
        return Response(
            [{"id": i, "archived": a, "Metrics": {"description": f"sds ns/x {i}"}} for i, a in archived.items()]
        )

    monkeypatch.setattr(client, "_rest", rest)
    return client, asked, archived


def test_archived_jobs_are_asked_for_once_and_running_ones_on_every_pass(
    ais: tuple[Ais, list[str], dict[str, bool]],
) -> None:
    client, asked, archived = ais
    first = client.dsort_find("sds ns/x")
    assert asked == ["srt-a", "srt-b", "srt-c"]
    assert [j.extracted_records for j in first] == [10, 10, 10]
    asked.clear()
    again = client.dsort_find("sds ns/x")
    assert asked == ["srt-c"]  # only the running one
    assert again == first
    archived["srt-c"] = True  # it finishes: asked once more, then remembered
    asked.clear()
    assert [j.finished for j in client.dsort_find("sds ns/x")] == [True, True, True]
    assert asked == ["srt-c"]
    asked.clear()
    client.dsort_find("sds ns/x")
    assert asked == []


def test_the_memory_of_archived_jobs_is_bounded() -> None:
    from sharded_dataset_operator.core.model import DsortJob

    jobs = ais_cluster.ArchivedJobs(limit=3)
    for i in range(5):
        jobs.put("e", DsortJob(id=f"j{i}", description="", finished=True, aborted=False, errors=(),
                               extracted_records=0, created_shards=0))  # fmt: skip
    assert [jobs.get("e", f"j{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert jobs.get("other", "j4") is None  # per endpoint
