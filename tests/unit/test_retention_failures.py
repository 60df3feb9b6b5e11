"""A version's deletion that AIS refuses never holds back publishing, and is tried again (executor.execute)."""

from __future__ import annotations

from typing import Any

import pytest

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.ais import AccessDenied
from sharded_dataset_operator.core.actions import CleanupArtifacts, Decision, SweepUnits, WriteIndex
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.decision import after_actions
from sharded_dataset_operator.core.model import Entry
from sharded_dataset_operator.core.status import DatasetStatus, Phase
from sharded_dataset_operator.runner import executor

OWNER = Owner(name="pets", namespace="ml", uid="5f3a9c1e-0000-4000-8000-000000000001", generation=3)
OLD = {
    "version": "g2",
    "generation": 2,
    "locations": [{"bucket": "out", "provider": "ais", "prefix": "s-5f3a9c1e00004000-g2-"}],
    "index": {"bucket": "out", "provider": "ais", "stable": "i.json", "versioned": "s-5f3a9c1e00004000-g2-index.json"},
}


class RefusingAis:
    """Writes work; deleting (listing the version's objects) is refused, as with an expired token."""

    endpoint = "http://ais"

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.objects = {"s-5f3a9c1e00004000-g2-plan.json": b"{}", "s-5f3a9c1e00004000-g2-index.json": b"{}"}
        self.puts: list[str] = []

    def put(self, bucket: str, name: str, data: bytes, provider: str = "ais") -> None:
        self.puts.append(name)
        self.objects[name] = data

    def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> list[Entry]:
        if self.refuse:
            raise AccessDenied("HTTP 401: token expired")
        return [Entry(n, len(d)) for n, d in sorted(self.objects.items()) if n.startswith(prefix)]

    def get(self, bucket: str, name: str, provider: str = "ais") -> bytes | None:
        return self.objects.get(name)

    def list_pages(self, *a: Any, **kw: Any) -> list[list[Any]]:
        return []

    def delete_prefix(self, bucket: str, prefix: str, provider: str = "ais", keep: frozenset[str] = frozenset()) -> int:
        names = [e.name for e in self.list_objects(bucket, provider, prefix) if e.name not in keep]
        return self.delete_objects(bucket, names, provider)

    def delete_objects(self, bucket: str, names: list[str], provider: str = "ais") -> int:
        for n in names:
            self.objects.pop(n, None)
        return len(names)

    def dsort_find(self, regex: str) -> list[Any]:
        return []


def decision() -> Decision:
    st = DatasetStatus(phase=Phase.READY, observed_generation=3, reason="Succeeded", message="", artifacts=[{}])
    return Decision(
        status=st,
        actions=[
            WriteIndex("out", "ais", "i.json", {"info": {}}, publishes=True),
            CleanupArtifacts(record=OLD, retired=True),
            SweepUnits("out", "ais", "s-5f3a9c1e00004000-u", live=(), restore=(OLD,)),
        ],
    )


@pytest.fixture(autouse=True)
def no_converter_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "converter_pods", lambda *a: [])


def test_a_refused_deletion_keeps_the_record_posts_an_event_and_publishing_happened() -> None:
    ais = RefusingAis(refuse=True)
    d = decision()
    d = after_actions(d, executor.execute(ais, d, OWNER))  # type: ignore[arg-type]
    assert ais.puts == ["i.json"]  # published all the same
    assert [e.reason for e in d.events] == ["CleanupFailed", "CleanupFailed"]
    assert "token expired" in d.events[0].message and "g2" in d.events[0].message
    assert [r.get("version") for r in d.status.artifacts or []] == [None, "g2"]  # tried again next pass


def test_an_accepted_deletion_removes_the_version_and_its_own_index_last() -> None:
    ais = RefusingAis(refuse=False)
    d = decision()
    d = after_actions(d, executor.execute(ais, d, OWNER))  # type: ignore[arg-type]
    assert d.events == [] and [r.get("version") for r in d.status.artifacts or []] == [None]
    assert "s-5f3a9c1e00004000-g2-plan.json" not in ais.objects
    assert "s-5f3a9c1e00004000-g2-index.json" not in ais.objects
