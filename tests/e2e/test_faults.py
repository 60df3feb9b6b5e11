"""Faults as weather. Each case injects one real fault into the local cluster (an AIS node pod killed: its
process SIGKILLed and the pod deleted or restarted in place; a converter pod deleted or OOM-killed; the
operator killed between an AIS side effect and the status write) and ends Ready with exactly the complete
samples, read back byte for byte with webdataset, or Failed with the reason a user needs. Cases that do not
share a fault run their datasets side by side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Ais
from sharded_dataset_operator.core import failures, naming
from sharded_dataset_operator.pods.common import RESTART_SLACK, cluster_disturbed, restarted
from sharded_dataset_operator.runner import failpoints

from .conftest import OPERATOR_NS, Kube, unique, wait_until
from .faults import above_high_watermark, node_down, nodes_down
from .test_operator import (
    RawDataset,
    assert_complete_samples,
    check_index,
    condition,
    dataset,
    expected_skips,
    raw_dataset,
    read_shards,
    wait_phase,
    wait_ready,
)

pytestmark = pytest.mark.e2e
STALL_AFTER = 20  # the fault suite's operator reports Stalled after 20 s without AIS (default 120 s)
SHUFFLE = {"algorithm": "shuffle", "seed": "2023", "outputShardSize": "8MiB"}


@pytest.fixture(scope="module")
def fault_operator(kube: Kube, operator: Any) -> Iterator[None]:
    """The operator with failpoints armed and a short stall threshold; the previous settings restored after."""
    dep = f"deployment/{operator['metadata']['name']}"

    def set_env(*assignments: str) -> None:
        kube.run("-n", OPERATOR_NS, "set", "env", dep, *assignments)
        kube.run("-n", OPERATOR_NS, "rollout", "status", dep, "--timeout=180s")

    set_env("SDS_FAILPOINTS=1", f"SDS_STALL_AFTER_SECONDS={STALL_AFTER}")
    try:
        yield
    finally:
        set_env("SDS_FAILPOINTS-", "SDS_STALL_AFTER_SECONDS=120")


def spec_for(name: str, ns: str, raw: RawDataset, out: str, **over: Any) -> dict[str, Any]:
    """A dataset whose converted and shuffled shards live under prefixes of its own in the shared bucket."""
    output = {"bucket": out, "prefix": f"{name}-", "maxSamplesPerShard": 50, **over.pop("output", {})}
    output = {k: v for k, v in output.items() if v is not None}
    shuffle = {**SHUFFLE, "outputPrefix": f"{name}-shuffled-", **over.pop("shuffle", {})}
    conversion = {"workers": 2, **over.pop("conversion", {})}
    return dataset(name, ns, raw.bucket, out, output=output, shuffle=shuffle, conversion=conversion, **over)


def assert_ready_exact(
    kube: Kube, ais: Ais, ns: str, name: str, raw: RawDataset, out: str, tmp: Path, timeout: float = 600
) -> dict[str, Any]:
    """Ready, the counts exact, and the shards in the index hold every complete sample once, byte for byte."""
    obj = wait_ready(kube, ns, name, timeout=timeout)
    st = obj["status"]
    assert st["samples"]["written"] == len(raw.manifest["complete"])
    assert st["samples"]["skippedByReason"] == expected_skips(raw)
    shards = check_index(ais, obj, out, f"{name}-shuffled-index.json")
    (tmp / name).mkdir()
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shards], tmp / name))
    assert condition(obj, "Stalled")["status"] == "False" and "outage" not in st
    return obj


def mark(what: str, since: float) -> None:
    """A line for the fault table in the closing note (shown with `pytest -s`)."""
    print(f"[faults] {what}: {time.monotonic() - since:.1f} s")


def converted_shards(ais: Ais, bucket: str, name: str) -> list[str]:
    if not ais.bucket_exists(bucket):  # the planner creates it
        return []
    # converted shards are named by unit: <prefix><uid16>-u<unit id>-<part>.tar
    names = [e.name for e in ais.list_objects(bucket, prefix=f"{name}-") if e.name.endswith(".tar")]
    return [n for n in names if n[len(name) + 1 :].partition("-")[2].startswith("u")]


def wait_converting_with_shards(kube: Kube, ais: Ais, ns: str, name: str, out: str) -> str:
    """Block until the first converted shard is in AIS; return the phase at that moment."""
    wait_until(lambda: converted_shards(ais, out, name), 300, f"{name}'s first converted shard", interval=0.2)
    phase: str = ((kube.get("sds", name, ns) or {}).get("status") or {}).get("phase", "")
    return phase


def wait_dsort_running(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        obj = kube.get("sds", name, namespace)
        st = (obj or {}).get("status") or {}
        return obj if st.get("phase") == "Shuffling" and (st.get("shuffle") or {}).get("dsortJobId") else None

    obj: dict[str, Any] = wait_until(running, 300, f"{name} to run dSort", interval=0.2)
    return obj


def target_killed_during_dsort(kube: Kube, ais: Ais, endpoint: str, namespace: str, name: str) -> bool:
    """Kill ais-target-0 for 5 s while the dataset's dSort job runs; False when the job had finished before the kill
    could land (a small dSort can end within the status round trip), which leaves nothing to test."""
    obj = wait_dsort_running(kube, namespace, name)
    job_id = obj["status"]["shuffle"]["dsortJobId"]
    job = ais.dsort_job(job_id)
    if job is not None and job.finished and not job.aborted:
        return False
    with node_down(kube, endpoint, "ais-target-0"):
        time.sleep(5)
    return True


def apply_with_dsort_fault(
    kube: Kube, ais: Ais, endpoint: str, namespace: str, make: Any, tries: int = 3
) -> tuple[str, str]:
    """Apply `make(name, out)` and kill a target during its dSort; a run whose dSort ended before the kill is
    deleted and done again under a new name (at most `tries` times). Returns (name, out) of the faulted run."""
    for i in range(tries):
        name, out = ("weather" if i == 0 else f"weather-{i}"), unique("fault")
        obj = make(name, out)
        name = obj["metadata"]["name"]
        kube.apply(obj)
        if target_killed_during_dsort(kube, ais, endpoint, namespace, name):
            return name, out
        print(f"[faults] {name}: dSort finished before the kill; again")
        kube.run("delete", "sds", name, "-n", namespace, "--timeout=120s")
    raise AssertionError(f"dSort finished before the target could be killed, {tries} times")


def request_retry(kube: Kube, namespace: str, name: str, value: str) -> None:
    """Ask for a retry of a Failed run the documented way, and wait until the operator has taken it."""
    kube.run("-n", namespace, "annotate", "--overwrite", "sds", name, f"{failures.RETRY_ANNOTATION}={value}")

    def handled() -> bool:
        status = (kube.get("sds", name, namespace) or {}).get("status") or {}
        return (status.get("retry") or {}).get("request") == value

    wait_until(handled, 60, f"the retry request {value!r} to be handled")


def test_target_killed_during_dsort_is_retried_to_ready_and_a_spent_budget_fails_until_retry_requested(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    endpoint = cluster_env["AIS_ENDPOINT"]
    raw = raw_dataset(ais, cluster_env, 1500)
    shuffle = {**SHUFFLE, "outputPrefix": "shuffled-"}

    # 1. budget of 5 attempts: the fault costs an attempt, the run ends Ready with exact samples
    t0 = time.monotonic()
    weather, out = apply_with_dsort_fault(
        kube, ais, endpoint, namespace,
        lambda name, out: dataset(name, namespace, raw.bucket, out, conversion={"workers": 2},
                                  shuffle={**shuffle, "maxAttempts": 5}),
    )  # fmt: skip
    obj = wait_ready(kube, namespace, weather, timeout=600)
    mark("target killed during dSort: apply -> Ready", t0)
    st = obj["status"]
    assert st["shuffle"]["attempt"] >= 2, st["shuffle"]
    assert st["samples"]["written"] == len(raw.manifest["complete"])
    events = kube.events(namespace, weather)
    retries = [e["message"] for e in events if e["reason"] == "ShuffleRetry"]
    assert any(m.startswith("dSort attempt 2/5 after:") for m in retries), retries  # Events come unordered
    shards = check_index(ais, obj, out, "shuffled-index.json")
    assert all(s["url"].startswith(f"shuffled-{naming.uid_tag(obj['metadata']['uid'])}-g1-a") for s in shards)
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shards], tmp_path))
    # nothing of the aborted attempt is left
    attempt = st["shuffle"]["attempt"]
    listed = [e.name for e in ais.list_objects(out, prefix="shuffled-") if e.name.endswith(".tar")]
    assert listed and all(f"-a{attempt}-" in n for n in listed), listed

    # 2. budget of 1: the same fault fails the run, saying so; a retry request then brings it to Ready
    t0 = time.monotonic()
    kube.apply(dataset("strict", namespace, raw.bucket, out, conversion={"workers": 2},
                       output={"bucket": out, "prefix": "strict-", "maxSamplesPerShard": 100},
                       shuffle={**shuffle, "outputPrefix": "strict-shuffled-", "maxAttempts": 1}))  # fmt: skip
    assert target_killed_during_dsort(kube, ais, endpoint, namespace, "strict"), "dSort ended before the kill"
    failed = wait_phase(kube, namespace, "strict", ("Failed", "Ready"), timeout=300)
    mark("target killed during dSort, maxAttempts 1: apply -> Failed", t0)
    assert failed["status"]["phase"] == "Failed", failed["status"]
    assert failed["status"]["message"].startswith("dSort attempt 1/1"), failed["status"]["message"]
    request_retry(kube, namespace, "strict", "1")
    again = wait_ready(kube, namespace, "strict", timeout=600)
    mark("target killed during dSort, maxAttempts 1: apply -> Failed -> retry -> Ready", t0)
    assert again["status"]["retry"]["request"] == "1"
    assert again["status"]["samples"]["written"] == len(raw.manifest["complete"])
    shards = check_index(ais, again, out, "strict-shuffled-index.json")
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shards], tmp_path))
    assert "RetryRequested" in {e["reason"] for e in kube.events(namespace, "strict")}


def test_every_target_restarted_during_dsort_waits_for_them_then_counts_the_lost_job_and_ends_ready(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], fault_operator: None, tmp_path: Path
) -> None:
    """Both targets killed mid-dSort: while they are away the operator waits (AISUnavailable, the attempt kept);
    once they are back without the job (a running job lives only in their memory, and the proxy lists no job
    at all), that attempt counts as ended and the next one runs to Ready."""
    endpoint = cluster_env["AIS_ENDPOINT"]
    raw = raw_dataset(ais, cluster_env, 1500)
    out = unique("restart")
    t0 = time.monotonic()
    kube.apply(spec_for("restart", namespace, raw, out))
    first = wait_dsort_running(kube, namespace, "restart")["status"]["shuffle"]
    with nodes_down(kube, endpoint, ["ais-target-0", "ais-target-1"]):

        def waiting() -> dict[str, Any] | None:
            obj = kube.get("sds", "restart", namespace) or {}
            conditions = (obj.get("status") or {}).get("conditions") or []
            return obj if any(c.get("reason") == "AISUnavailable" for c in conditions) else None

        during = wait_until(waiting, 30, "the operator to wait for the targets")["status"]
        assert during["shuffle"]["attempt"] == 1 and during["phase"] == "Shuffling", during
        time.sleep(5)
    obj = assert_ready_exact(kube, ais, namespace, "restart", raw, out, tmp_path)
    mark("every target restarted during dSort: apply -> Ready", t0)
    assert obj["status"]["shuffle"]["attempt"] == 2 and obj["status"]["shuffle"]["dsortJobId"] != first["dsortJobId"]
    retries = [e["message"] for e in kube.events(namespace, "restart") if e["reason"] == "ShuffleRetry"]
    assert len(retries) == 1 and "dSort attempt 2/3 after: AIS no longer knows the job" in retries[0], retries


def test_a_target_restarted_in_place_counts_as_the_clusters_in_the_workers_check(
    kube: Kube, cluster_env: dict[str, str]
) -> None:
    """What a converter worker compares when it fails: a target whose process restarted (the kubelet restarts
    the container in place; on the host network it is back at its address) shows a later start time, from the
    uptime AIS reports, so the failure is the cluster's even when the cluster map did not move."""
    endpoint = cluster_env["AIS_ENDPOINT"]
    ais = Ais(endpoint)
    before = ais.membership()
    assert before is not None and before.answering == before.targets == 2, before
    assert len(before.started) == 2 and all(at > 0 for _, at in before.started), before
    with node_down(kube, endpoint, "ais-target-1", delete_pod=False):
        time.sleep(RESTART_SLACK + 1)
    after = ais.membership()
    assert after is not None and after.answering == after.targets == 2, after
    gone = restarted(before, after)
    assert len(gone) == 1 and cluster_disturbed(before, after), (before, after)
    # the target left alone reads the same start time (within the slack), and nothing else changed
    kept = dict(after.started)
    assert [tid for tid, at in before.started if abs(kept[tid] - at) <= RESTART_SLACK] == [
        tid for tid, _ in before.started if tid not in gone
    ]


def test_target_killed_during_conversion_and_during_verification_ends_ready_with_exact_samples(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    endpoint = cluster_env["AIS_ENDPOINT"]
    raw = raw_dataset(ais, cluster_env, 1500)
    out = unique("weather")

    # the same dataset without a fault, for the time to Ready
    t0 = time.monotonic()
    kube.apply(spec_for("calm", namespace, raw, out, output={"maxSamplesPerShard": 20}))
    assert_ready_exact(kube, ais, namespace, "calm", raw, out, tmp_path)
    mark("no fault: apply -> Ready", t0)

    # conversion: the first shards are written, then a target goes away for 30 s (in CI a rejoin once took
    # that long). With no retries to spend, only a worker that hands a cluster fault over to a fresh pod
    # (exit 75, ignored by the podFailurePolicy) instead of failing it can reach Ready.
    t0 = time.monotonic()
    conv = spec_for("conv", namespace, raw, out, output={"maxSamplesPerShard": 20}, conversion={"retries": 0})
    kube.apply(conv)
    phase = wait_converting_with_shards(kube, ais, namespace, "conv", out)
    t1 = time.monotonic()
    with node_down(kube, endpoint, "ais-target-0"):
        time.sleep(30)
    mark("target killed during conversion: back in the cluster", t1)
    assert phase == "Converting", phase
    assert_ready_exact(kube, ais, namespace, "conv", raw, out, tmp_path)
    mark("target killed during conversion: apply -> Ready", t0)
    # the fault reached the workers, and each handed it over (exit 75) rather than failing (exit 1)
    codes = [t["exitCode"] for t in terminated(kube, namespace, "conv-convert-g1")]
    assert 75 in codes and set(codes) <= {0, 75}, codes

    # verification: dSort has just finished; the operator counts the output while a target is missing
    t0 = time.monotonic()
    kube.apply(spec_for("verify", namespace, raw, out))

    def dsort_done() -> bool:
        st = (kube.get("sds", "verify", namespace) or {}).get("status") or {}
        job_id = (st.get("shuffle") or {}).get("dsortJobId")
        job = ais.dsort_job(job_id) if job_id else None
        return bool(job and job.finished)

    wait_until(dsort_done, 300, "verify's dSort job to finish", interval=0.1)
    phase = ((kube.get("sds", "verify", namespace) or {}).get("status") or {}).get("phase")
    with node_down(kube, endpoint, "ais-target-1", delete_pod=False):  # the process alone: restarted in place
        time.sleep(5)
    assert phase == "Shuffling", phase  # not yet verified when the target went
    assert_ready_exact(kube, ais, namespace, "verify", raw, out, tmp_path)
    mark("target killed during verification: apply -> Ready", t0)


def test_proxy_down_for_a_minute_stalls_then_resumes_by_itself(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], fault_operator: None, tmp_path: Path
) -> None:
    endpoint = cluster_env["AIS_ENDPOINT"]
    raw = raw_dataset(ais, cluster_env, 1500)
    out = unique("outage")
    t0 = time.monotonic()
    kube.apply(spec_for("outage", namespace, raw, out, output={"maxSamplesPerShard": 20}))
    assert wait_converting_with_shards(kube, ais, namespace, "outage", out) == "Converting"
    started = time.monotonic()
    with node_down(kube, endpoint, "ais-proxy-0"):

        def stalled() -> dict[str, Any] | None:
            obj = kube.get("sds", "outage", namespace) or {}
            stall = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Stalled"), {})
            return obj if stall.get("status") == "True" else None

        obj = wait_until(stalled, 55, "the dataset to report Stalled while AIS is down")
        assert condition(obj, "Stalled")["reason"] == "AISUnavailable"
        assert obj["status"]["outage"]["reason"] == "AISUnavailable"
        assert obj["status"]["phase"] == "Converting"  # kept, not Failed
        time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    back = time.monotonic()
    assert_ready_exact(kube, ais, namespace, "outage", raw, out, tmp_path)
    mark("proxy down 60 s: proxy back -> Ready", back)
    mark("proxy down 60 s: apply -> Ready", t0)
    assert "AISUnavailable" in {e["reason"] for e in kube.events(namespace, "outage")}
    job = kube.get("job", "outage-convert-g1", namespace) or {}
    assert not (job.get("status") or {}).get("failedIndexes"), job.get("status")
    codes = [t["exitCode"] for t in terminated(kube, namespace, "outage-convert-g1")]
    print(f"[faults] proxy down 60 s: converter exit codes {sorted(codes)} (75: waited for AIS, not counted)")


def test_pods_that_cannot_be_created_or_scheduled_are_stalled_saying_why_then_resume_by_themselves(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], fault_operator: None
) -> None:
    # First a ResourceQuota refuses every pod, then a nodeSelector no node matches keeps the planner pod
    # unscheduled. Each time the status says why (not "Planning" forever), and the run goes on by itself.
    raw = raw_dataset(ais, cluster_env, 200)
    kube.run("create", "quota", "no-pods", "--hard=pods=0", "-n", namespace)
    label = f"e2e.shardeddataset.dev/{namespace}"
    obj = dataset("unplaced", namespace, raw.bucket, unique("place"), shuffle=None)
    obj["spec"]["conversion"] = {"workers": 1, "nodeSelector": {label: "yes"}}
    kube.apply(obj)

    def stalled_with(text: str) -> dict[str, Any] | None:
        o = kube.get("sds", "unplaced", namespace)
        c = next((c for c in ((o or {}).get("status") or {}).get("conditions", []) if c["type"] == "Stalled"), {})
        return o if c.get("status") == "True" and text in c.get("message", "") else None

    refused = wait_until(lambda: stalled_with("exceeded quota"), 150, "Stalled: no pod could be created")
    stalled = condition(refused, "Stalled")
    assert stalled["reason"] == "PodsNotStarting", stalled
    assert stalled["message"].startswith("planner Job unplaced-plan-g1 cannot start: no pod could be created: "
                                         "FailedCreate: "), stalled  # fmt: skip
    assert refused["status"]["phase"] == "Converting" and condition(refused, "Ready")["status"] == "False"
    wait_until(
        lambda: any(e["reason"] == "PodsNotStarting" and e["type"] == "Warning"
                    for e in kube.events(namespace, "unplaced")), 30, "a PodsNotStarting Warning Event",
    )  # fmt: skip
    kube.run("delete", "quota", "no-pods", "-n", namespace)
    unplaced = wait_until(lambda: stalled_with("Unschedulable"), 180, "Stalled: the pod is unschedulable")
    stalled = condition(unplaced, "Stalled")
    assert stalled["reason"] == "PodsNotStarting", stalled
    assert "planner Job unplaced-plan-g1 cannot start: pod unplaced-plan-g1-" in stalled["message"], stalled
    assert "node affinity/selector" in stalled["message"], stalled
    node = kube.run("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").strip()
    kube.run("label", "node", node, f"{label}=yes")
    try:
        ready = wait_ready(kube, namespace, "unplaced")
    finally:
        kube.run("label", "node", node, f"{label}-", check=False)
    assert ready["metadata"]["generation"] == 1
    assert ready["status"]["samples"]["written"] == len(raw.manifest["complete"])
    assert condition(ready, "Stalled")["status"] == "False"


def test_converter_pod_deleted_mid_slice_resumes_and_an_oom_kill_fails_with_a_clear_reason(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    endpoint = cluster_env["AIS_ENDPOINT"]
    big = raw_dataset(ais, cluster_env, 1200, sample_kib=400)  # ~490 MB: one worker needs several seconds
    out = unique("pods")
    # one sample whose image alone is larger than the OOM case's memory limit
    small = RawDataset(ais, endpoint, 100, seed=77)
    huge_key = sorted(small.manifest["complete"])[60]
    ais.put(small.bucket, f"images/{huge_key}.jpg", b"\xff" * (320 << 20))

    t0 = time.monotonic()
    kube.apply(spec_for("resumed", namespace, big, out, conversion={"workers": 1},
                        output={"maxShardSize": "16MiB", "maxSamplesPerShard": None}))  # fmt: skip
    kube.apply(spec_for("oom", namespace, small, out,
                        conversion={"workers": 1, "retries": 0, "resources": {"limits": {"memory": "192Mi"}}},
                        output={"maxSamplesPerShard": 10, "maxShardSize": "4MiB"}))  # fmt: skip

    # resumed: delete the worker's pod once its progress object records finished shards, mid-slice
    progress_name = None

    def progress() -> dict[str, Any] | None:
        nonlocal progress_name
        if progress_name is None and ais.bucket_exists(out):
            names = [e.name for e in ais.list_objects(out, prefix="resumed-") if e.name.endswith("progress-w0000.json")]
            progress_name = names[0] if names else None
        body = json.loads(ais.get(out, progress_name) or b"{}") if progress_name else {}
        done = int(body.get("samples") or 0)
        return body if body.get("shards") and 0.3 * int(body["partitionSamples"]) <= done else None

    at_kill = wait_until(progress, 300, "resumed's worker to record finished shards", interval=0.2)
    pods = kube.list("pods", namespace, "batch.kubernetes.io/job-name=resumed-convert-g1")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    kube.run("-n", namespace, "delete", "pod", pods[0]["metadata"]["name"], "--wait=false")
    obj = assert_ready_exact(kube, ais, namespace, "resumed", big, out, tmp_path)
    mark(f"converter pod deleted at {at_kill['samples']}/{at_kill['partitionSamples']}: apply -> Ready", t0)
    base = obj["status"]["artifacts"][0]["locations"][0]["prefix"]
    report = json.loads(ais.get(out, naming.report_name(base, 0)) or b"{}")
    assert report["resumedShards"] >= len(at_kill["shards"]) >= 1, (report["resumedShards"], at_kill)
    assert 0 < at_kill["samples"] < at_kill["partitionSamples"]

    # oom: the worker is OOM-killed reading the huge file; the run fails saying so, and counts nothing
    failed = wait_phase(kube, namespace, "oom", ("Failed", "Ready"), timeout=300)
    mark("converter OOM-killed: apply -> Failed", t0)
    st = failed["status"]
    assert st["phase"] == "Failed" and condition(failed, "Stalled")["reason"] == "ConversionFailed", st
    assert "OOM-killed at its memory limit 192Mi" in st["message"], st["message"]
    assert "spec.conversion.resources.limits.memory" in st["message"]
    assert not (st.get("samples") or {}).get("written") and not st.get("indexObject"), st
    assert ais.get(out, "oom-shuffled-index.json") is None


def test_operator_killed_after_starting_dsort_and_after_writing_the_index_loses_nothing(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], fault_operator: None, tmp_path: Path
) -> None:
    raw = raw_dataset(ais, cluster_env, 1500)
    out = unique("crash")
    points = {"crash-dsort": failpoints.AFTER_DSORT_START, "crash-index": failpoints.AFTER_INDEX_WRITE}
    restarts_before = operator_restarts(kube)
    # One after the other: the crash ends the whole operator, so a second dataset in flight would be cut at
    # an arbitrary point of its own (in CI once inside crash-dsort's dSort start, before its failpoint).
    for name, point in points.items():
        obj = spec_for(name, namespace, raw, out)
        obj["metadata"]["annotations"] = {failpoints.ANNOTATION: point}
        t0 = time.monotonic()
        kube.apply(obj)
        obj = assert_ready_exact(kube, ais, namespace, name, raw, out, tmp_path)
        mark(f"operator killed {point}: apply -> Ready", t0)
        assert obj["metadata"]["annotations"].get(failpoints.FIRED_ANNOTATION) == point  # the crash happened
        # one dSort job: the restarted operator found the running one instead of starting another
        desc = naming.dsort_description(namespace, name, obj["metadata"]["uid"], 1)
        assert len(ais.dsort_find(naming.dsort_regex(desc))) == 1
        assert obj["status"]["shuffle"]["attempt"] == 1
    assert operator_restarts(kube) >= restarts_before + 2

    # killed between publishing a new version and deleting the one it replaced (retainPrevious 0s): the next
    # operator deletes the old version exactly once and never publishes again
    obj = spec_for("crash-publish", namespace, raw, out, output={"retainPrevious": "0s"})
    kube.apply(obj)
    first = assert_ready_exact(kube, ais, namespace, "crash-publish", raw, out, tmp_path)
    tag = naming.uid_tag(first["metadata"]["uid"])
    obj["metadata"]["annotations"] = {failpoints.ANNOTATION: failpoints.AFTER_PUBLISH}
    obj["spec"]["shuffle"]["outputShardSize"] = "4MiB"
    t0 = time.monotonic()
    kube.apply(obj)
    (tmp_path / "again").mkdir()
    wait_until(lambda: not [e for e in ais.list_objects(out, prefix=f"crash-publish-shuffled-{tag}-g1-")], 300,
               "g1 deleted after the crash")  # fmt: skip
    second = wait_until(
        lambda: (
            (o := kube.get("sds", "crash-publish", namespace))
            and o["status"].get("observedGeneration") == 2
            and o["status"]["phase"] == "Ready"
            and not o["status"]["versions"]["previous"]
            and o
        ),
        120,
        "g2 Ready without previous versions",
    )
    mark("operator killed after publishing: spec change -> old version deleted", t0)
    assert second["metadata"]["annotations"].get(failpoints.FIRED_ANNOTATION) == failpoints.AFTER_PUBLISH
    deleted = [e for e in kube.events(namespace, "crash-publish") if e["reason"] == "VersionDeleted"]
    assert len(deleted) == 1 and sum(int(e.get("count") or 1) for e in deleted) == 1, deleted
    stable = json.loads(ais.get(out, "crash-publish-shuffled-index.json") or b"{}")
    own = json.loads(ais.get(out, f"crash-publish-shuffled-{tag}-g2-index.json") or b"{}")
    assert stable == own and stable["info"]["version"] == "g2"  # published once: the same body, same time
    assert second["status"]["versions"]["published"]["publishedAt"] == own["info"]["publishedAt"]
    shards = [s["url"] for s in stable["shardlist"]]
    assert_complete_samples(raw, read_shards(ais, out, shards, tmp_path / "again"))


def test_targets_over_their_capacity_watermark_fail_the_shuffle_saying_why_and_a_retry_is_ready(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """AIS answers a dSort start with a job id even when every target refused the job (here: over its capacity
    high watermark) and then no longer knows that job. Each such attempt must count: the budget ends in
    Failed, with the targets' own words, instead of a new dSort every second forever (seen in CI on a full
    disk). Once space is back, the retry annotation brings the run to Ready with exact samples."""
    raw = raw_dataset(ais, cluster_env, 300)
    out = unique("full")
    t0 = time.monotonic()
    with above_high_watermark(cluster_env["AIS_ENDPOINT"]):
        kube.apply(spec_for("full", namespace, raw, out, shuffle={"maxAttempts": 2}))
        failed = wait_phase(kube, namespace, "full", ("Failed", "Ready"), timeout=300)
        mark("targets over their high watermark: apply -> Failed", t0)
        st = failed["status"]
        assert st["phase"] == "Failed" and condition(failed, "Stalled")["reason"] == "ShuffleFailed", st
        assert st["message"].startswith("dSort attempt 2/2 (job "), st["message"]
        assert "AIS no longer knows the job" in st["message"] and "exceeded high watermark" in st["message"]
        assert st["shuffle"]["attempt"] == 2 and st["samples"]["written"] == len(raw.manifest["complete"])
        retries = [e["message"] for e in kube.events(namespace, "full") if e["reason"] == "ShuffleRetry"]
        assert len(retries) == 1 and "dSort attempt 2/2 after: AIS no longer knows" in retries[0], retries
        desc = naming.dsort_description(namespace, "full", failed["metadata"]["uid"], 1)
        assert ais.dsort_find(naming.dsort_regex(desc)) == []  # the refused jobs left nothing behind
    t1 = time.monotonic()
    request_retry(kube, namespace, "full", "space-freed")
    obj = assert_ready_exact(kube, ais, namespace, "full", raw, out, tmp_path)
    mark("targets over their high watermark: watermarks restored, retry -> Ready", t1)
    assert obj["status"]["shuffle"]["attempt"] == 3  # numbered after the refused ones: nothing is reused


def test_with_splits_a_dsort_job_refused_at_init_is_counted_per_split_until_shuffle_failed(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    """Issue 25, problem 3: a split's record never got its dSort job id, so a job AIS refused at init was
    started again as attempt 1 on every pass, forever. Now each refused attempt of the split counts."""
    from .test_splits import example_07

    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], 60, seed=54, sample_kib=4)
    out = unique("fullsplit")
    obj = example_07(namespace, raw.bucket, out)
    obj["metadata"]["name"] = "fullsplit"
    obj["spec"]["shuffle"]["maxAttempts"] = 2
    t0 = time.monotonic()
    with above_high_watermark(cluster_env["AIS_ENDPOINT"]):
        kube.apply(obj)
        failed = wait_phase(kube, namespace, "fullsplit", ("Failed", "Ready"), timeout=300)
    mark("splits, targets over their high watermark: apply -> Failed", t0)
    st = failed["status"]
    assert condition(failed, "Stalled")["reason"] == "ShuffleFailed", st
    assert "dSort of split trainval attempt 2/2" in st["message"] and "AIS no longer knows the job" in st["message"]
    shuffle = st["splits"]["trainval"]["shuffle"]
    assert shuffle["attempt"] == 2 and shuffle["dsortJobId"], shuffle
    retries = [e["message"] for e in kube.events(namespace, "fullsplit") if e["reason"] == "ShuffleRetry"]
    assert len(retries) == 1 and "dSort of split trainval attempt 2/2 after: AIS no longer knows" in retries[0]


def terminated(kube: Kube, namespace: str, job: str) -> list[dict[str, Any]]:
    """The `terminated` states of the containers of a Job's pods."""
    pods = kube.list("pods", namespace, f"batch.kubernetes.io/job-name={job}")
    statuses = [cs for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or []]
    return [cs["state"]["terminated"] for cs in statuses if "terminated" in cs.get("state", {})]


def operator_restarts(kube: Kube) -> int:
    pods = kube.list("pods", OPERATOR_NS, "app.kubernetes.io/component=operator")
    statuses = [cs for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or []]
    return sum(int(cs.get("restartCount") or 0) for cs in statuses)
