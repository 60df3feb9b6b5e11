"""Faults as weather: an AIS target killed during dSort is retried into Ready with exact samples; with a budget
of one attempt the run fails with the attempts in its message, and the retry annotation brings it to Ready."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Ais

from .conftest import Kube, unique, wait_until
from .faults import node_down
from .test_operator import (
    assert_complete_samples,
    check_index,
    dataset,
    raw_dataset,
    read_shards,
    wait_phase,
    wait_ready,
)

pytestmark = pytest.mark.e2e


def wait_dsort_running(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        obj = kube.get("sds", name, namespace)
        st = (obj or {}).get("status") or {}
        return obj if st.get("phase") == "Shuffling" and (st.get("shuffle") or {}).get("dsortJobId") else None

    obj: dict[str, Any] = wait_until(running, 300, f"{name} to run dSort", interval=0.2)
    return obj


def test_target_killed_during_dsort_is_retried_to_ready_and_a_spent_budget_fails_until_retry_requested(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    endpoint = cluster_env["AIS_ENDPOINT"]
    raw = raw_dataset(ais, cluster_env, 1500)
    out = unique("fault")
    shuffle = {"algorithm": "shuffle", "seed": "2023", "outputPrefix": "shuffled-", "outputShardSize": "8MiB"}

    # 1. budget of 5 attempts: the fault costs an attempt, the run ends Ready with exact samples
    kube.apply(dataset("weather", namespace, raw.bucket, out, conversion={"workers": 2},
                       shuffle={**shuffle, "maxAttempts": 5}))  # fmt: skip
    wait_dsort_running(kube, namespace, "weather")
    with node_down(endpoint, "target", "target1"):
        time.sleep(5)
    obj = wait_ready(kube, namespace, "weather", timeout=600)
    st = obj["status"]
    assert st["shuffle"]["attempt"] >= 2, st["shuffle"]
    assert st["samples"]["written"] == len(raw.manifest["complete"])
    events = kube.events(namespace, "weather")
    retries = [e["message"] for e in events if e["reason"] == "ShuffleRetry"]
    assert retries and "dSort attempt 2/5 after:" in retries[0], retries
    shards = check_index(ais, obj, out, "shuffled-index.json")
    assert all(s["url"].startswith(f"shuffled-{obj['metadata']['uid'].replace('-', '')[:8]}-g1-a") for s in shards)
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shards], tmp_path))
    # nothing of the aborted attempt is left
    attempt = st["shuffle"]["attempt"]
    listed = [e.name for e in ais.list_objects(out, prefix="shuffled-") if e.name.endswith(".tar")]
    assert listed and all(f"-a{attempt}-" in n for n in listed), listed

    # 2. budget of 1: the same fault fails the run, saying so; a retry request then brings it to Ready
    kube.apply(dataset("strict", namespace, raw.bucket, out, conversion={"workers": 2},
                       output={"bucket": out, "prefix": "strict-", "maxSamplesPerShard": 100},
                       shuffle={**shuffle, "outputPrefix": "strict-shuffled-", "maxAttempts": 1}))  # fmt: skip
    wait_dsort_running(kube, namespace, "strict")
    with node_down(endpoint, "target", "target1"):
        time.sleep(5)
    failed = wait_phase(kube, namespace, "strict", ("Failed", "Ready"), timeout=300)
    assert failed["status"]["phase"] == "Failed", failed["status"]
    assert failed["status"]["message"].startswith("dSort attempt 1/1"), failed["status"]["message"]
    kube.run("-n", namespace, "annotate", "sds", "strict", "shardeddataset.dev/retry=1")

    def retry_handled() -> bool:
        status = (kube.get("sds", "strict", namespace) or {}).get("status") or {}
        return (status.get("retry") or {}).get("request") == "1"

    wait_until(retry_handled, 60, "the retry request to be handled")
    again = wait_ready(kube, namespace, "strict", timeout=600)
    assert again["status"]["retry"]["request"] == "1"
    assert again["status"]["samples"]["written"] == len(raw.manifest["complete"])
    shards = check_index(ais, again, out, "strict-shuffled-index.json")
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shards], tmp_path))
    assert "RetryRequested" in {e["reason"] for e in kube.events(namespace, "strict")}
