"""Benchmark scenario 4 (bench/run.py, see bench/README.md): a whole ShardedDataset, apply -> Ready.

A ShardedDataset like examples/01-oxford-pets.yaml in namespace `bench` (4 workers, shuffle to 100 MiB shards,
`deletionPolicy: Delete`); the status and the converter Job are polled every 0.2 s, every phase and condition
transition is recorded, the run is split into stages and the operator process's CPU is read from /proc.

Imports only the standard library at top level (see bench/common.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
from typing import Any

from common import (
    GROUP,
    MIB,
    NAMESPACE,
    PLURAL,
    POLL_S,
    VERSION,
    Result,
    drop_bucket,
    dsort_times,
    example_spec,
    get_dataset,
    log,
    operator_pid,
    settle,
    wait_gone,
)

OUT_BUCKET = "bench-out"
RESOURCE_NAME = "bench-pets"


def cpu_s(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def measure_resource(endpoint: str, raw: str, timeout: float, last: bool = True) -> Result:
    from kubernetes import client as k8s
    from kubernetes import config as kcfg
    from kubernetes.client.rest import ApiException

    kcfg.load_kube_config()
    core, batch, custom = k8s.CoreV1Api(), k8s.BatchV1Api(), k8s.CustomObjectsApi()

    def get_sds() -> dict[str, Any] | None:
        return get_dataset(custom, NAMESPACE, RESOURCE_NAME)

    def read_job(name: str) -> Any:
        """The Job, or None while it does not exist."""
        try:
            return batch.read_namespaced_job(name, NAMESPACE)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    try:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
    except ApiException as e:
        if e.status != 409:
            raise
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            core.read_namespaced_service_account("default", NAMESPACE)
            break
        except ApiException:
            time.sleep(0.5)
    if get_sds() is not None:
        log("removing a leftover bench resource")
        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, RESOURCE_NAME)
        wait_gone(get_sds, 180)
    drop_bucket(endpoint, OUT_BUCKET)

    pid = operator_pid()
    log(f"operator pid on the host: {pid}")
    c0 = cpu_s(pid)
    time.sleep(5.0)
    idle_cpu_pct = (cpu_s(pid) - c0) / 5.0 * 100

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ShardedDataset",
        "metadata": {"name": RESOURCE_NAME, "namespace": NAMESPACE},
        "spec": example_spec(raw, OUT_BUCKET),
    }
    ticks: list[tuple[float, int | None, float]] = []  # (time, operator pid, its cpu seconds)
    pids: list[int | None] = [pid]

    def tick(t: float) -> None:
        nonlocal pid
        c = cpu_s(pid)
        if c != c:  # nan: the operator process went away (restarted); follow the new one
            pid = operator_pid()
            c = cpu_s(pid)
            if pid not in pids:
                pids.append(pid)
        ticks.append((t, pid, c))

    transitions: list[Result] = []
    marks: dict[str, float] = {}
    last_phase: str | None = None
    last_conds: dict[str, str] = {}
    obj: dict[str, Any] | None = None
    job: Any = None
    job_name: str | None = None

    settle()
    t_apply = time.time()
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
    tick(t_apply)
    try:
        while time.time() - t_apply < timeout:
            now = time.time()
            tick(now)
            obj = get_sds()
            st = (obj or {}).get("status") or {}
            gen_ok = obj is not None and st.get("observedGeneration") == obj["metadata"]["generation"]
            phase = st.get("phase") if gen_ok else None
            if phase != last_phase:
                transitions.append({"t_s": round(now - t_apply, 3), "phase": phase})
                last_phase = phase
            for c in st.get("conditions") or []:
                if last_conds.get(c["type"]) != c["status"]:
                    transitions.append({"t_s": round(now - t_apply, 3), "condition": c["type"], "status": c["status"]})
                    last_conds[c["type"]] = c["status"]
            job_name = (st.get("conversion") or {}).get("jobName") or job_name or f"{RESOURCE_NAME}-convert-g1"
            if "job_done" not in marks:
                job = read_job(job_name)
                if job is not None:
                    marks.setdefault("job_seen", now)
                    if (job.status.active or 0) > 0:
                        marks.setdefault("job_active", now)
                    if any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or []):
                        marks["job_done"] = now
                        marks["job_start_status"] = job.status.start_time.timestamp()
                        marks["job_completion_status"] = job.status.completion_time.timestamp()
            if "plan_done" not in marks:
                planner = read_job(f"{RESOURCE_NAME}-plan-g1")
                if planner is not None:
                    marks.setdefault("plan_seen", now)
                    if any(c.type == "Complete" and c.status == "True" for c in planner.status.conditions or []):
                        marks["plan_done"] = now
            if (st.get("shuffle") or {}).get("dsortJobId"):
                marks.setdefault("dsort_id_seen", now)
            if phase in ("Ready", "Failed"):
                marks["ready"] = now
                break
            time.sleep(max(0.0, POLL_S - (time.time() - now)))
        else:
            raise RuntimeError(f"bench resource not Ready after {timeout:.0f} s: {json.dumps(transitions)}")
        assert obj is not None
        st = obj["status"]
        if st.get("phase") != "Ready":
            raise RuntimeError(f"bench resource failed: {st.get('message')}")
        dsort_id = (st.get("shuffle") or {}).get("dsortJobId")
        ds_start, ds_end = dsort_times(endpoint, dsort_id) if dsort_id else (None, None)
    finally:
        log("deleting the bench resource (deletionPolicy Delete) and its output bucket")
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, RESOURCE_NAME)
            wait_gone(get_sds, 300)
        except ApiException as e:
            if e.status != 404:
                log(f"  delete failed: {e.reason}")
        drop_bucket(endpoint, OUT_BUCKET)
        if last:
            with contextlib.suppress(ApiException):
                core.delete_namespace(NAMESPACE)

    total = marks["ready"] - t_apply
    conv = (marks["job_seen"], marks["job_done"])
    planning = (marks.get("plan_seen", conv[0]), marks.get("plan_done", conv[0]))
    dsort = (ds_start or marks["job_done"], ds_end or ds_start or marks["job_done"])
    busy = _union([planning, conv, dsort])
    stages = {
        "operator_react_s": planning[0] - t_apply,
        "planning_job_s": planning[1] - planning[0],
        "handoff_to_convert_s": max(0.0, conv[0] - planning[1]),
        "conversion_job_s": conv[1] - conv[0],
        "handoff_to_dsort_s": max(0.0, dsort[0] - conv[1]),
        "dsort_s": dsort[1] - dsort[0],
        "verification_s": max(0.0, marks["ready"] - dsort[1]),
    }

    def cpu_between(a: float, b: float) -> float:
        """Operator CPU seconds between a and b: summed over consecutive ticks of the same process."""
        inside = [(p, c) for t, p, c in ticks if a - POLL_S <= t <= b + POLL_S]
        steps = [c1 - c0 for (p0, c0), (p1, c1) in itertools.pairwise(inside) if p0 == p1 and c1 >= c0]
        return sum(steps) if steps else float("nan")

    def pct(a: float, b: float) -> float:
        return round(cpu_between(a, b) / max(b - a, 1e-9) * 100, 2)

    out: Result = {
        "total_s": round(total, 2),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "operator_overhead_s": round(total - busy, 2),
        "converter_job_status_s": round(marks["job_completion_status"] - marks["job_start_status"], 2),
        "job_pods_active_after_s": round(marks.get("job_active", conv[0]) - t_apply, 2),
        "dsort_job_id": dsort_id,
        "samples_written": st["samples"]["written"],
        "shards_converted": st["shards"]["converted"],
        "shards_output": st["shards"]["output"],
        "output_mib": round(st["shards"]["bytes"] / MIB, 1),
        "transitions": transitions,
        "operator_cpu": {
            "pids": pids,  # more than one: the operator restarted during the run
            "idle_before_pct_of_core": round(idle_cpu_pct, 2),
            "during_conversion_pct_of_core": pct(*conv),
            "during_dsort_pct_of_core": pct(*dsort),
            "whole_run_cpu_s": round(cpu_between(t_apply, marks["ready"]), 2),
            "whole_run_pct_of_core": pct(t_apply, marks["ready"]),
        },
    }
    log(f"resource: Ready in {total:.1f} s; stages {out['stages_s']}; overhead {out['operator_overhead_s']} s")
    return out


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total
