"""Between planning and conversion, with `spec.source.ais.prefetch` (a remote bucket): one AIS prefetch job warms
the source's objects under the prefix into AIS (at their latest version), so that the converters read them with
Get-Batch from AIS instead of one cold GET each through to the remote store.

    plan written ──► StartPrefetch ──► job running ("Prefetching") ──► finished ──► converters read warm
                            └─ not started / aborted / gone ──► Warning PrefetchFailed ──► converters read cold

A prefetch only speeds the build up: one that fails never fails it (the converters then read each object at its
latest version, as without prefetch). `status.prefetch` records the job of the version being built.
"""

from __future__ import annotations

from typing import Any

from sharded_dataset_operator.core.actions import Decision, Event, StartPrefetch
from sharded_dataset_operator.core.state import Pass
from sharded_dataset_operator.core.status import Phase
from sharded_dataset_operator.core.times import epoch


def warm(record: dict[str, Any] | None) -> bool:
    """Whether the converters may read the source from AIS's copies (the prefetch finished)."""
    return bool(record and record.get("finishedAt") and not record.get("failed"))


def step(p: Pass) -> Decision | None:
    src = p.spec.source
    if not src.prefetch or src.bucket is None or p.plan is None:
        return None
    record: dict[str, Any] = dict(p.prev.get("prefetch") or {}) if p.prev_phase is not None else {}
    p.st.prefetch = record or None
    if p.obs.job is not None or p.reports or int((p.plan.get("units") or {}).get("convert") or 0) == 0:
        return None  # converting already (or nothing to convert): whatever the prefetch did stays as it was
    if record.get("finishedAt") or record.get("failed"):
        return None
    where = f"{src.bucket.provider}://{src.bucket.name}/{src.prefix}"
    if not record.get("jobId"):
        p.decision.actions.append(StartPrefetch(src.bucket.name, src.bucket.provider, src.prefix))
        p.st.prefetch = {"startedAt": p.now}
        return p.working(Phase.CONVERTING, "Prefetching", f"starting an AIS prefetch of {where}")
    job = p.obs.prefetch
    if job is not None and not job.finished and not job.aborted:
        return p.working(Phase.CONVERTING, "Prefetching", f"AIS prefetch job {job.id} warms {where}")
    if job is None or job.aborted or job.error:
        why = "AIS no longer knows the job" if job is None else job.error or "the job was aborted"
        p.st.prefetch = {**record, "failed": why, "finishedAt": p.now}
        p.decision.events.append(Event("Warning", "PrefetchFailed", f"prefetch of {where} failed ({why}): the "
                                       "converters read each object from the remote store"))  # fmt: skip
        return None
    started = epoch(record.get("startedAt"))
    seconds = round(max(0.0, (epoch(p.now) or 0.0) - started), 1) if started is not None else None
    p.st.prefetch = {**record, "finishedAt": p.now, "seconds": seconds}
    p.decision.events.append(Event("Normal", "Prefetched", f"{where} is warm in AIS (prefetch job {job.id})"))
    return None


def after_start(
    record: dict[str, Any] | None, job_id: str | None, error: str, at: str
) -> tuple[dict[str, Any], Event | None]:
    """The status record once the executor tried to start the job: its id, or why it did not start."""
    if job_id:
        return {**(record or {}), "jobId": job_id}, None
    failed = {**(record or {}), "failed": f"not started: {error}", "finishedAt": at}
    return failed, Event("Warning", "PrefetchFailed", f"the AIS prefetch did not start ({error}): reading cold")
