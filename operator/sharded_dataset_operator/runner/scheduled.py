"""Scheduled refresh checks of a settled resource (`spec.refresh.schedule`): one listing of the source at a tick,
its fingerprint compared by the core (`core.schedule`), and the refresh annotation set when it changed, so that
the new version is built, verified and guarded like any other. Nothing is built, deleted or published here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.ais import AccessDenied, Ais, AisUnavailable, BucketNotFound, ListingError
from sharded_dataset_operator.core import schedule, versions
from sharded_dataset_operator.core.actions import Event
from sharded_dataset_operator.core.fingerprint import ListingFingerprint
from sharded_dataset_operator.core.spec import DatasetSpec
from sharded_dataset_operator.runner.objcache import ObjectUnreadable

CHECKED_PHASES = ("Ready", "Failed")  # a build in progress (or held by the publish guard) is not interrupted


def listing_fingerprint(ais: Ais, spec: DatasetSpec) -> ListingFingerprint:
    """The source's listing as the planner sees it (names under the prefix, sizes, checksums or, for a remote
    bucket, the backend's current ETags), fingerprinted while streamed."""
    assert spec.source.bucket is not None
    bucket, prefix = spec.source.bucket, spec.source.prefix
    n, fp = len(prefix), ListingFingerprint()
    remote = bucket.provider != "ais"
    for page in ais.list_pages(bucket.name, bucket.provider, prefix, props="name,size,checksum", remote_props=remote):
        for e in page:
            if len(e.name) > n:
                fp.add(e.name[n:], int(e.size or 0), str(e.checksum or ""))
    return fp


def check(
    obj: dict[str, Any],
    spec: DatasetSpec,
    connect: Callable[[], tuple[Ais, versions.IndexInfo | None]],
    now: datetime,
) -> tuple[float | None, list[Event]]:
    """Show the next check; at a due tick, list and compare. `connect` gives the dataset's AIS access and its
    published version (asked for at a due tick only). Returns (seconds until the next check, events)."""
    meta, status = obj["metadata"], obj.get("status") or {}
    recorded: dict[str, Any] = status.get("refresh") or {}
    if spec.refresh is None:
        if recorded:
            kube.patch_status(meta["namespace"], meta["name"], {"refresh": None})
        return None, []
    if status.get("phase") not in CHECKED_PHASES or not (status.get("versions") or {}).get("published"):
        return None, []  # the first version is not published yet: its build reads the source itself
    due = schedule.due(spec.refresh, recorded, now)
    if not due.due:
        if due.status != recorded:
            kube.patch_status(meta["namespace"], meta["name"], {"refresh": due.status})
        return due.wait, []
    try:
        ais, published = connect()
        listed = listing_fingerprint(ais, spec) if published is not None else None
    except (LookupError, kube.SecretNotAllowed, AccessDenied, AisUnavailable, BucketNotFound, ListingError,
            ObjectUnreadable) as e:  # fmt: skip
        failed = schedule.check_failed(due.status, str(e), now)
        kube.patch_status(meta["namespace"], meta["name"], {"refresh": failed.status})
        return failed.wait, [Event("Warning", "RefreshCheckFailed", failed.message)]
    if published is None or listed is None:  # the stable index is not this resource's now: nothing to compare
        return None, []
    against = schedule.baseline(str(status.get("phase")), published.version, published.source_fingerprint, due.status)
    result = schedule.outcome(
        spec.refresh, due.status, against, listed.value(), listed.objects, now, int(meta.get("generation") or 1)
    )
    if result.refresh is not None:  # first the build request, then the status that says it was made
        kube.annotate_dataset(meta["namespace"], meta["name"], versions.REFRESH_ANNOTATION, result.refresh)
    kube.patch_status(meta["namespace"], meta["name"], {"refresh": result.status})
    return result.wait, [Event("Normal", "ScheduledRefresh", result.message)] if result.refresh else []


def utcnow() -> datetime:
    return datetime.now(UTC)
