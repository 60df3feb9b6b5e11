"""Every field the operator writes into the status is in the CRD's status schema: the API server prunes unknown
fields without a word, so a field missing there is a field users never see (publishGuard was, at first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sharded_dataset_operator.core.actions import Decision
from sharded_dataset_operator.core.status import DatasetStatus, Phase, StepState

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "shardeddatasets.shardeddataset.dev.yaml"


def status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def unknown(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """The paths in `value` the schema would prune."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                out += unknown(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                out += unknown(v, extra, f"{path}.{k}")
            else:
                out.append(f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += unknown(v, schema.get("items") or {}, f"{path}[{i}]")
    return out


def test_every_status_field_the_operator_writes_is_in_the_crd() -> None:
    st = DatasetStatus(phase=Phase.VERIFYING, observed_generation=3, reason="PublishHeld", message="held", stalled=True)
    st.steps = {"Converted": StepState(True, "Converted"), "Verified": StepState(True, "Verified")}
    st.artifacts = [{"version": "g3", "generation": 3, "refresh": "", "dsortDescription": "d", "plan": "p",
                     "pool": {"bucket": "b", "provider": "ais", "prefix": "x"},
                     "index": {"bucket": "b", "provider": "ais", "stable": "s", "versioned": "v",
                               "splits": {"t": {"stable": "s", "versioned": "v"}}},
                     "locations": [{"bucket": "b", "provider": "ais", "prefix": "x"}]}]  # fmt: skip
    st.versions = {
        "published": {"version": "g2", "generation": 2, "refresh": None, "index": "i", "samples": 5, "shards": 1,
                      "bytes": 9, "publishedAt": "2026-12-04T00:00:00Z", "indexMissing": True},
        "building": {"version": "g3", "generation": 3, "refresh": None, "phase": "Verifying", "reason": "PublishHeld"},
        "previous": [{"version": "g1", "generation": 1, "index": None, "deleteAfter": "2026-12-04T00:00:00Z",
                      "indexMissing": True}],
        "deletionsHeld": "why",
    }  # fmt: skip
    numbers = {"published": 10, "new": 2, "removed": 8, "added": 0, "maxRemoved": 1}
    st.publish_guard = {"version": "g3", "held": True, **numbers, "approval": "g9", "splits": {"t": numbers}}
    st.splits = {"t": {"samples": 2, "convertedShards": 1, "shards": 1, "bytes": 3, "index": "i", "versionIndex": "v",
                       "shuffle": {"attempt": 2, "dsortJobId": "j", "startedAt": "2026-12-04T00:00:00Z",
                                   "outputTemplate": "o", "finished": True}}}  # fmt: skip
    st.retry = {"request": "1", "shuffleAttemptBase": 1, "shuffleAttemptBases": {"t": 1}}
    st.progress = {"summary": "1%", "percent": 1, "samples": 1, "samplesPlanned": 9, "bytes": 1}
    st.serving = "serving g2"
    status = Decision(status=st).status.to_dict([], "2026-12-04T00:00:00Z")
    status["outage"] = {"reason": "AISUnavailable", "since": "2026-12-04T00:00:00Z"}
    assert unknown(status, status_schema(), "status") == []
