"""Failure bookkeeping outside dSort: AIS outages, converter terminations, the test-only failpoints."""

from __future__ import annotations

from sharded_dataset_operator.clients.kube import termination_summary
from sharded_dataset_operator.core.failures import outage
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
