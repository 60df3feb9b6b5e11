"""Failure bookkeeping outside dSort: AIS outages, converter terminations, the test-only failpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kubernetes.client import (
    CoreV1Event,
    CoreV1EventList,
    V1ContainerState,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Job,
    V1ObjectMeta,
    V1ObjectReference,
    V1Pod,
    V1PodCondition,
    V1PodList,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.kube import termination_summary
from sharded_dataset_operator.core.failures import outage
from sharded_dataset_operator.core.model import PodWait
from sharded_dataset_operator.runner import failpoints


def test_an_outage_is_reconciling_until_it_lasts_the_threshold_then_stalled() -> None:
    first, stalled = outage(None, "AISUnavailable", "2026-11-25T10:00:00Z", 120)
    assert first == {"reason": "AISUnavailable", "since": "2026-11-25T10:00:00Z"} and not stalled
    later, stalled = outage(first, "AISUnavailable", "2026-11-25T10:01:59Z", 120)
    assert later == first and not stalled  # the outage keeps its start
    _, stalled = outage(first, "AISUnavailable", "2026-11-25T10:02:00Z", 120)
    assert stalled
    other, stalled = outage(first, "ListingIncomplete", "2026-11-25T10:05:00Z", 120)
    assert other["since"] == "2026-11-25T10:05:00Z" and not stalled  # a different problem starts afresh


def test_an_oom_kill_names_the_limit_and_the_field_that_raises_it() -> None:
    text = termination_summary("3", 137, "OOMKilled", "last log line", "128Mi")
    assert text.startswith("[worker 3] OOM-killed at its memory limit 128Mi")
    assert "spec.conversion.resources.limits.memory" in text
    assert termination_summary("0", 1, "Error", "ValueError: bad\n", None) == "[worker 0, exit 1] ValueError: bad"
    assert "the node's memory" in termination_summary("0", 137, "OOMKilled", None, None)


def test_failpoints_fire_only_when_enabled_requested_and_not_yet_fired() -> None:
    point = failpoints.AFTER_DSORT_START
    assert not failpoints.armed(False, {failpoints.ANNOTATION: point}, point)
    assert failpoints.armed(True, {failpoints.ANNOTATION: point}, point)
    assert not failpoints.armed(True, {failpoints.ANNOTATION: point}, failpoints.AFTER_INDEX_WRITE)
    assert not failpoints.armed(True, {failpoints.ANNOTATION: point, failpoints.FIRED_ANNOTATION: point}, point)
    assert failpoints.for_dataset(True, {}, lambda _: None) is failpoints.none
    assert failpoints.for_dataset(False, {failpoints.ANNOTATION: point}, lambda _: None) is failpoints.none


def test_a_pods_tagged_reason_is_the_failures_reason() -> None:
    from sharded_dataset_operator.core.failures import pod_reason, pod_reason_tag

    msg = "[worker 1, exit 3] " + pod_reason_tag("SourceChanged", "s3://b/x.jpg disappeared during conversion")
    assert pod_reason(msg, "ConversionFailed") == "SourceChanged"
    assert pod_reason("[worker 0, exit 3] [AccessDenied] HTTP 403", "PlanningFailed") == "AccessDenied"
    assert pod_reason("[worker 0, exit 1] [Unheard] of", "ConversionFailed") == "ConversionFailed"  # not a reason
    assert pod_reason("", "PlanningFailed") == "PlanningFailed"


# ------------------------------------------------------- pods that cannot start, as the client reads them

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pod(name: str, created: float, *conditions: V1PodCondition, waiting: str = "", phase: str = "Pending") -> V1Pod:
    state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting, message="pulling"))
    statuses = [
        V1ContainerStatus(name="converter", image="img", image_id="", ready=False, restart_count=0, state=state)
    ]
    return V1Pod(
        metadata=V1ObjectMeta(name=name, creation_timestamp=at(created)),
        status=V1PodStatus(phase=phase, conditions=list(conditions), container_statuses=statuses if waiting else None),
    )


def scheduled(status: str, seconds: float, reason: str = "", message: str = "") -> V1PodCondition:
    return V1PodCondition(type="PodScheduled", status=status, last_transition_time=at(seconds), reason=reason,
                          message=message)  # fmt: skip


def test_pod_waits_time_an_unscheduled_pod_from_the_scheduler_and_a_waiting_container_from_scheduling() -> None:
    pods = [
        pod("p-0", 0, scheduled("False", 5, "Unschedulable", "0/1 nodes are available")),
        pod("p-1", 0, scheduled("True", 40), waiting="ImagePullBackOff"),  # waited 40 s for a node first
        pod("p-2", 0, scheduled("True", 1)),  # running soon: nothing waits
        pod("p-3", 0, scheduled("True", 1), waiting="ErrImagePull", phase="Failed"),  # not Pending: not a wait
    ]
    assert kube.pod_waits(pods) == (
        PodWait("p-0", "Unschedulable", "0/1 nodes are available", at(5).timestamp()),
        PodWait("p-1", "ImagePullBackOff", "pulling", at(40).timestamp()),
    )


class FakeCore:
    def __init__(self, pods: list[V1Pod], events: list[CoreV1Event] | None, forbidden: bool = False) -> None:
        self.pods, self.events, self.forbidden, self.selectors = pods, events or [], forbidden, []

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> V1PodList:
        self.selectors.append(label_selector)
        return V1PodList(items=self.pods)

    def list_namespaced_event(self, namespace: str, field_selector: str) -> CoreV1EventList:
        self.selectors.append(field_selector)
        if self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        return CoreV1EventList(items=self.events)


def refused(first: float, last: float) -> CoreV1Event:
    return CoreV1Event(metadata=V1ObjectMeta(name="e", creation_timestamp=at(first)),
                       involved_object=V1ObjectReference(uid="job-uid"), reason="FailedCreate",
                       message="exceeded quota: q", first_timestamp=at(first), last_timestamp=at(last))  # fmt: skip


def test_creation_failures_count_only_refusals_seen_after_the_newest_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    job = V1Job(metadata=V1ObjectMeta(name="x-convert-g1", uid="job-uid"))

    def failures_with(pods: list[V1Pod], events: list[CoreV1Event], forbidden: bool = False) -> tuple[PodWait, ...]:
        fake = FakeCore(pods, events, forbidden)
        monkeypatch.setattr(kube, "core", lambda: fake)
        got = kube.creation_failures("ns", job)
        assert fake.selectors[0] == "batch.kubernetes.io/controller-uid=job-uid"
        return got

    # no pod yet, refused from t=10 to t=70: a wait since 10
    assert failures_with([], [refused(10, 70)]) == (
        PodWait("", "FailedCreate", "exceeded quota: q", at(10).timestamp()),
    )
    # a refusal overcome before the newest pod was created (an hour-old Event) is not a wait
    assert failures_with([pod("p-0", 100, phase="Succeeded")], [refused(10, 70)]) == ()
    # refused again after the newest pod: a wait since that pod
    assert failures_with([pod("p-0", 100, phase="Failed")], [refused(10, 130)]) == (
        PodWait("", "FailedCreate", "exceeded quota: q", at(100).timestamp()),
    )
    # without the right to list Events (RBAC of an older install): nothing is said, nothing raised
    assert failures_with([], [refused(10, 70)], forbidden=True) == ()
