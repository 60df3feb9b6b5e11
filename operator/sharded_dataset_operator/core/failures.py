"""Which failures are worth retrying (pure): one place that classifies what the operator observes.

Transient: the cluster's weather (a node or the network went away for a while): a dSort job aborted by a
connection, stream or membership error, AIS unreachable or answering 5xx, a listing that came back incomplete.
The step is retried inside its budget. Permanent: a retry cannot help (dSort refused the spec, duplicate
records, input shards missing, a verification mismatch, no complete samples): the resource goes Failed
(Stalled) with the reason, until the spec changes or a retry is requested (`RETRY_ANNOTATION`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sharded_dataset_operator.core.model import PodWait
from sharded_dataset_operator.core.times import parse

TRANSIENT = "transient"
PERMANENT = "permanent"

RETRY_ANNOTATION = "shardeddataset.dev/retry"
"""Set to any new value to retry a Failed run's failed step once (the operator never writes spec)."""

DEFAULT_SHUFFLE_ATTEMPTS = 3
REPORT_GRACE_SECONDS = 180.0
"""How long a plan or reports may stay invisible after their Job completed before that is a failure."""
VERIFY_RETRY_SECONDS = 20.0
"""A verification mismatch is checked once more after this long before the run fails."""
STALL_AFTER_SECONDS = 120.0
"""How long AIS (or a token Secret) may stay unreachable before the resource reports Stalled."""
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 120.0
POD_START_GRACE_SECONDS = 30.0
"""How long a planner or converter pod may stay unscheduled or unable to start its container before the
status says why (`PodsNotStarting`, Reconciling; Stalled after the operator's `stallAfterSeconds`); a claim
that is still binding settles well within it."""

POD_BLOCKED_REASONS = frozenset(
    {
        "Unschedulable",  # the PodScheduled condition: no node fits (resources, selector, taints, claims)
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",  # e.g. a Secret or key the pod refers to is missing
        "CreateContainerError",
        "FailedCreate",  # the Job controller's: no pod could be created (a ResourceQuota, an admission policy)
    }
)
"""Why a pod cannot start without someone's help; ContainerCreating and PodInitializing are normal starts."""

# dSort errors that say "the data or the request is wrong", whatever the cluster's health. Anything else
# (a stream broken by EOF, a connection refused or reset, a timeout, a node leaving the cluster map) is
# the cluster's weather.
_PERMANENT_MARKERS = (
    "duplicate",
    "missing shard",
    "missing input",
    "invalid",
    "failed to parse",
    "unsupported",
    "out of space",
    "no space left",
)


POD_REASONS = ("SourceChanged", "SourceNotFound", "AccessDenied")
"""Reasons a planner or converter pod names in its termination message (`[Reason] text`, `pod_reason_tag`):
the Job's failure is shown with that reason instead of the step's generic one (PlanningFailed,
ConversionFailed)."""
_TAG = re.compile(r"\[(" + "|".join(POD_REASONS) + r")\]")


def pod_reason_tag(reason: str, message: str) -> str:
    return f"[{reason}] {message}"


def pod_reason(message: str, default: str) -> str:
    """The reason a failed pod named (the first tag in `message`), else `default`."""
    m = _TAG.search(message or "")
    return m.group(1) if m else default


def classify_dsort_abort(errors: Iterable[str]) -> str:
    """TRANSIENT or PERMANENT for an aborted dSort job, from its error messages.

    An abort without any error (aborted from outside, or by a node that left before it could say why) is
    transient.
    """
    texts = [e.lower() for e in errors]
    if any(m in t for t in texts for m in _PERMANENT_MARKERS):
        return PERMANENT
    return TRANSIENT


def backoff_seconds(failed_attempts: int) -> float:
    """Wait before the next attempt after `failed_attempts` failures: 5 s, 10 s, 20 s, ... up to 2 minutes."""
    if failed_attempts < 1:
        return 0.0
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** (failed_attempts - 1)))


def outage(
    previous: Mapping[str, Any] | None, reason: str, now: str, stall_after: float
) -> tuple[dict[str, str], bool]:
    """The ongoing outage `{reason, since}` and whether it has lasted `stall_after` seconds (then: Stalled).

    An outage with the same reason continues from its first pass; a new reason starts a new one. The first
    pass that reaches AIS again clears it (the caller drops the record).
    """
    since = str(previous["since"]) if previous and previous.get("reason") == reason and previous.get("since") else now
    return {"reason": reason, "since": since}, _parse(now) - _parse(since) >= stall_after


def _parse(ts: str) -> float:
    return parse(ts)


def pods_blocked(waits: Iterable[PodWait], now: str) -> tuple[str, float] | None:
    """Why a running Job's pods cannot start, and for how many seconds (of the longest-blocked one; a wait
    without a time counts as long past); None while they start or run."""
    blocked = sorted((w for w in waits if w.reason in POD_BLOCKED_REASONS), key=lambda w: (w.since or 0.0, w.pod))
    if not blocked:
        return None
    first = blocked[0]
    message = " ".join(first.message.split())
    more = len({w.pod for w in blocked if w.pod} - {first.pod})
    text = (f"pod {first.pod}: " if first.pod else "no pod could be created: ") + first.reason
    text += f": {message}" if message else ""
    return text + (f" (and {more} more pod(s))" if more else ""), parse(now) - (first.since or 0.0)
