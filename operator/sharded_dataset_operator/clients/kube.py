"""Kubernetes I/O for the operator: the resource itself, its converter Jobs, PVCs and token Secrets."""

from __future__ import annotations

import base64
import dataclasses
import functools
import logging
import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sharded_dataset_operator.core import naming
from sharded_dataset_operator.core.model import JobState, PodWait
from sharded_dataset_operator.core.spec import API_GROUP, API_VERSION, PLURAL

log = logging.getLogger(__name__)


@functools.cache
def _api() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(_api())


def batch() -> client.BatchV1Api:
    return client.BatchV1Api(_api())


def core() -> client.CoreV1Api:
    return client.CoreV1Api(_api())


# Pods that write into AIS: the planner and the converters (stopped before their generation is cleaned up).
WRITERS = f"{naming.LABEL_COMPONENT} in (planner,converter)"


def get_dataset(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = custom().get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    custom().patch_namespaced_custom_object_status(API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status})


def annotate_dataset(namespace: str, name: str, key: str, value: str) -> None:
    body = {"metadata": {"annotations": {key: value}}}
    custom().patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, body)


def _job_state(job: Any, generation: int) -> JobState:
    st = job.status
    complete = failed = False
    reason = message = ""
    for c in st.conditions or []:
        if c.status != "True":
            continue
        if c.type == "Complete":
            complete = True
        if c.type in ("Failed", "FailureTarget"):
            failed = True
            reason, message = c.reason or "Failed", c.message or ""
    succeeded = len(_parse_indexes(st.completed_indexes or ""))
    return JobState(
        name=job.metadata.name,
        generation=generation,
        active=st.active or 0,
        succeeded=succeeded,
        failed=len(_parse_indexes(st.failed_indexes or "")),
        complete=complete and not failed,
        failed_reason=reason if failed else "",
        failed_message=message,
        deleting=job.metadata.deletion_timestamp is not None,
        completed_at=st.completion_time.timestamp() if complete and st.completion_time else None,
    )


def _parse_indexes(spec: str) -> set[int]:
    """'0,2-4' -> {0, 2, 3, 4}"""
    out: set[int] = set()
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def get_job(namespace: str, name: str, generation: int) -> JobState | None:
    try:
        job = batch().read_namespaced_job(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    state = _job_state(job, generation)
    if state.failed_reason:
        detail = pod_failure_messages(namespace, name)
        if detail:
            state = dataclasses.replace(state, failed_message=f"{state.failed_message} {detail}".strip())
    elif not state.complete and not state.deleting and (job.status.ready or 0) < state.active:
        state = dataclasses.replace(state, waits=pod_waits(_job_pods(namespace, job)))
    elif not state.complete and not state.deleting and not (state.active or state.succeeded or state.failed):
        state = dataclasses.replace(state, waits=creation_failures(namespace, job))
    return state


def _job_pods(namespace: str, job: Any) -> list[Any]:
    """The pods of this Job object (by its uid: a Job re-created under the same name has other pods)."""
    selector = f"batch.kubernetes.io/controller-uid={job.metadata.uid}"
    pods: list[Any] = core().list_namespaced_pod(namespace, label_selector=selector).items
    return pods


def _epoch(t: Any) -> float | None:
    return float(t.timestamp()) if t is not None else None


def creation_failures(namespace: str, job: Any) -> tuple[PodWait, ...]:
    """Why the Job controller cannot create this Job's next pod: its `FailedCreate` Events (a ResourceQuota, an
    admission webhook or policy refused the pod) seen again after its newest pod was created (earlier ones were
    overcome), since the later of the two; `pod` is empty. Without the right to list Events: nothing."""
    newest = max((_epoch(p.metadata.creation_timestamp) or 0.0 for p in _job_pods(namespace, job)), default=0.0)
    selector = f"involvedObject.uid={job.metadata.uid},reason=FailedCreate"
    try:
        events = core().list_namespaced_event(namespace, field_selector=selector).items
    except ApiException as e:
        if e.status == 403:  # RBAC without `list events` (an older install): the status just cannot say why
            log.warning("cannot list Events in %s to see why Job %s has no pods: %s", namespace, job.metadata.name, e)
            return ()
        raise
    waits = []
    for ev in events:
        first = _epoch(ev.first_timestamp or ev.event_time or ev.metadata.creation_timestamp)
        last = _epoch(ev.last_timestamp or (ev.series and ev.series.last_observed_time)) or first
        if last is not None and last > newest:
            waits.append(PodWait("", "FailedCreate", ev.message or "", max(first or newest, newest)))
    return tuple(sorted(waits, key=lambda w: w.since or 0.0)[:1])


def pod_waits(pods: list[Any]) -> tuple[PodWait, ...]:
    """The pods that are not running: unscheduled (since the scheduler said so), or with a container waiting
    (what the kubelet says; since the pod was scheduled)."""
    waits: list[PodWait] = []
    for p in pods:
        status = p.status
        if p.metadata.deletion_timestamp is not None or status is None or status.phase not in (None, "Pending"):
            continue
        scheduled_at = _epoch(p.metadata.creation_timestamp)
        for c in status.conditions or []:
            if c.type != "PodScheduled":
                continue
            since = _epoch(c.last_transition_time) or scheduled_at
            if c.status == "False":
                waits.append(PodWait(p.metadata.name, c.reason or "Unschedulable", c.message or "", since))
            else:
                scheduled_at = since
        for cs in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
            waiting = cs.state.waiting if cs.state else None
            if waiting is not None and waiting.reason:
                waits.append(PodWait(p.metadata.name, waiting.reason, waiting.message or "", scheduled_at))
    return tuple(sorted(waits, key=lambda w: w.pod))


def pod_failure_messages(namespace: str, job_name: str) -> str:
    """The termination messages of the Job's failed pods (what the converter said before exiting)."""
    pods = core().list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}")
    messages = []
    for p in pods.items:
        limits = {c.name: ((c.resources and c.resources.limits) or {}).get("memory") for c in p.spec.containers}
        for cs in p.status.container_statuses or []:
            term = cs.state.terminated if cs.state else None
            if term and term.exit_code not in (0, None):
                idx = (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index", "?")
                limit = limits.get(cs.name)
                messages.append(termination_summary(idx, term.exit_code, term.reason, term.message, limit))
    return " ".join(sorted(set(messages))[:3])


def termination_summary(
    index: str, exit_code: int, reason: str | None, message: str | None, memory_limit: str | None
) -> str:
    """One failed container in words; an OOM-kill names the limit and the field that raises it."""
    if reason == "OOMKilled":
        limit = f"its memory limit {memory_limit}" if memory_limit else "the node's memory"
        return (
            f"[worker {index}] OOM-killed at {limit}: a sample or shard did not fit; raise "
            "spec.conversion.resources.limits.memory or lower spec.output.maxShardSize"
        )
    return f"[worker {index}, exit {exit_code}] {(message or reason or '').strip()}"


def _version_label(labels: dict[str, str] | None) -> str:
    labels = labels or {}
    return labels.get(naming.LABEL_VERSION) or f"g{labels.get(naming.LABEL_GENERATION, '')}"


def stale_jobs(namespace: str, owner: str, version: str) -> list[str]:
    """The planner and converter Jobs of every other version of `owner` that are not being deleted yet."""
    jobs = batch().list_namespaced_job(namespace, label_selector=f"{naming.LABEL_NAME}={owner},{WRITERS}")
    return sorted(
        j.metadata.name
        for j in jobs.items
        if _version_label(j.metadata.labels) != version and j.metadata.deletion_timestamp is None
    )


def create_job(manifest: dict[str, Any]) -> None:
    try:
        batch().create_namespaced_job(manifest["metadata"]["namespace"], manifest)
    except ApiException as e:
        if e.status != 409:  # already exists: created by an earlier reconcile
            raise


def delete_jobs(namespace: str, names: tuple[str, ...]) -> None:
    for n in names:
        try:
            batch().delete_namespaced_job(n, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise


def converter_pods(namespace: str, owner: str, version: str) -> list[str]:
    """Names of the planner and converter pods of one version that still exist."""
    selector = f"{naming.LABEL_NAME}={owner},{WRITERS}"
    pods = core().list_namespaced_pod(namespace, label_selector=selector).items
    return [p.metadata.name for p in pods if _version_label(p.metadata.labels) == version]


def stop_converters(namespace: str, owner: str, timeout: float = 60.0) -> bool:
    """Delete every converter Job of `owner` and wait until their pods are gone (nothing writes any more)."""
    selector = f"{naming.LABEL_NAME}={owner},{WRITERS}"
    for job in batch().list_namespaced_job(namespace, label_selector=selector).items:
        try:
            batch().delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Foreground")
        except ApiException as e:
            if e.status != 404:
                raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not core().list_namespaced_pod(namespace, label_selector=selector).items:
            return True
        time.sleep(1)
    return False


def pvc_problem(namespace: str, claim: str) -> str | None:
    try:
        pvc = core().read_namespaced_persistent_volume_claim(claim, namespace)
    except ApiException as e:
        if e.status == 404:
            return f"PersistentVolumeClaim {namespace}/{claim} not found"
        raise
    if pvc.status and pvc.status.phase == "Lost":
        return f"PersistentVolumeClaim {namespace}/{claim} is Lost"
    return None


TOKEN_SECRET_LABEL = "shardeddataset.dev/ais-token"
"""A Secret may be used as an AIS token only if it carries this label with the value "true": the operator can
read every Secret of a namespace, and a dataset must not turn an unrelated one into a bearer token."""


class SecretNotAllowed(LookupError):
    """The Secret exists but is not marked as an AIS token (`TOKEN_SECRET_LABEL`)."""


def read_secret_key(namespace: str, name: str, key: str, label: str | None = None) -> str:
    """One key of a Secret; with `label`, only of a Secret labelled `<label>: "true"`."""
    try:
        secret = core().read_namespaced_secret(name, namespace)
    except ApiException as e:
        if e.status == 404:
            raise LookupError(f"Secret {namespace}/{name} not found") from e
        raise
    if label is not None and ((secret.metadata.labels or {}).get(label) != "true"):
        raise SecretNotAllowed(
            f'Secret {namespace}/{name} is not labelled {label}: "true"; only Secrets so labelled are used as AIS '
            "tokens (kubectl label secret NAME " + f"{label}=true)"
        )
    data = (secret.data or {}).get(key)
    if data is None:
        raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
    return base64.b64decode(data).decode().strip()
