"""Versions other than the one being built: serve the published one, keep previous ones for their retention,
delete the rest, never anything in use (promises P1 and P2)."""

from __future__ import annotations

from typing import Any

from sharded_dataset_operator.core import builders, versions
from sharded_dataset_operator.core.actions import Action, CleanupArtifacts, Decision, Event, SweepUnits
from sharded_dataset_operator.core.conversion import conversion_progress
from sharded_dataset_operator.core.records import (
    current_first,
    index_location,
    pool_of,
    stable_indexes,
    stable_url,
    unique_records,
)
from sharded_dataset_operator.core.state import Pass, ready_message, split_status
from sharded_dataset_operator.core.status import CONVERTED, SHUFFLED, VERIFIED, Phase, StepState
from sharded_dataset_operator.core.verification import split_repairs


def serving(p: Pass) -> Decision:
    """The wanted version is the published one: Ready, from what its index says (nothing is re-verified)."""
    info = p.obs.published
    assert info is not None
    st = p.st
    for step in (CONVERTED, SHUFFLED, VERIFIED) if p.spec.shuffle is not None else (CONVERTED, VERIFIED):
        st.steps[step] = StepState(True, {CONVERTED: "Converted", SHUFFLED: "Shuffled", VERIFIED: "Verified"}[step])
    st.shards_output, st.bytes_output = info.shards, info.bytes
    bucket, provider, index = index_location(p.spec)
    st.index_object = f"{provider}://{bucket}/{index}"
    st.progress = conversion_progress(p.plan or {}, {}, p.reports, p.owner.generation, p.reused)
    shuffle = p.prev.get("shuffle") or {} if p.prev_phase is not None else {}
    st.dsort_job_id, st.output_template = shuffle.get("dsortJobId"), shuffle.get("outputTemplate")
    st.shuffle_attempt, st.shuffle_started_at = shuffle.get("attempt"), shuffle.get("startedAt")
    st.shuffle_version = shuffle.get("version")
    st.shuffle_max_attempts = p.spec.shuffle.max_attempts if p.spec.shuffle else None
    st.completion_time = info.published_at or p.now
    if info.splits:
        st.splits = split_status(info.splits, None)
    st.phase, st.reason = Phase.READY, "Succeeded"
    st.message = ready_message(info.version, info.samples, info.shards, info.bytes, st.samples_skipped)
    p.decision.requeue = None
    if p.prev_phase != Phase.READY:
        p.decision.events.append(Event("Normal", "Ready", st.message))
    return p.decision


def settle_versions(p: Pass, d: Decision) -> None:
    """Everything about versions other than the wanted one: serve the published one while the wanted one is
    not, delete superseded builds at once and previous versions once their retention is over, and say all
    of it in `status.versions`."""
    st, obs, owner = d.status, p.obs, p.owner
    published = p.published_now or obs.published
    records = [*(p.prev.get("artifacts") or [])]
    indexes = dict(obs.version_indexes)
    if obs.published is not None:
        record = obs.published.record
        if record and versions.record_problem(record, owner.namespace, owner.name, owner.uid) is None:
            records.append(record)  # known even if the status lost its record
        if p.published_now is not None and obs.published.version != owner.version:
            indexes.setdefault(obs.published.version, obs.published)  # replaced by this pass: previous now
    retention = versions.plan_retention(
        owner.version, published, records, indexes, p.now, p.spec.output.retain_seconds, _known_versions(p.prev),
        in_use=_named(p), last_in_use=_last_in_use(p.prev),
    )  # fmt: skip
    st.artifacts = [current_first(st.artifacts or [], owner.version), *retention.keep]
    st.artifacts = unique_records(st.artifacts)
    if p.published_now is None and obs.published is not None and not obs.output_conflict:
        d.actions.extend(split_repairs(p, obs.published))  # splits' stable indexes behind the published version
    d.actions.extend(_deletions(p, d, retention))  # after publishing: a failed deletion never holds it back
    building = None
    if published is None or published.version != owner.version:
        building = {
            "version": owner.version,
            "generation": owner.generation,
            "refresh": owner.refresh or None,
            "phase": str(st.phase),
            "reason": st.reason,
        }
    seen = (p.prev.get("versions") or {}).get("published")
    if published is None and isinstance(seen, dict) and seen.get("version"):
        # promise P2: its stable index is not seen now; remembered (and nothing deleted) until it is seen again
        # or a version is published anew
        seen = {**seen, "indexMissing": True}
    else:
        seen = published.summary() if published is not None else None
    st.versions = {
        "published": seen,
        "building": building,
        "previous": retention.previous,
        "deletionsHeld": p.deletions_held,  # None clears it (the status is merge-patched)
    }
    if published is not None and published.version != owner.version:
        what = f"version {published.version} ({published.samples} samples in {published.shards} shards)"
        st.serving = f"serving {what}; version {owner.version}: {st.message}"
        st.index_object = st.index_object or stable_url(p.spec)
    if retention.next_deadline is not None:
        due = retention.next_deadline + 1.0
        d.requeue = due if d.requeue is None else min(d.requeue, due)
    if any(isinstance(a, CleanupArtifacts) for a in d.actions) and (d.requeue is None or d.requeue > 30.0):
        d.requeue = 30.0  # see that the deletions happened (a failed one is retried)


def _deletions(p: Pass, d: Decision, retention: versions.Retention) -> list[Action]:
    """Delete the versions `retention` gave up (their objects, then the converted shards no version holds),
    once the wanted version's planner cannot pick any of them for reuse any more."""
    st, owner = d.status, p.owner
    cleanups: list[Action] = []
    held = _deletions_held(p, d)
    if held is not None and (retention.abandon or retention.retire):
        st.artifacts = unique_records([*(st.artifacts or []), *retention.abandon, *retention.retire])
        retention.abandon, retention.retire = [], []
        p.deletions_held = held
    in_use = _in_use(p)
    for r in [*retention.abandon, *retention.retire]:  # promise P1, whatever the retention said
        if versions.record_version(r) in in_use:
            st.artifacts = unique_records([*(st.artifacts or []), r])
    retention.abandon = [r for r in retention.abandon if versions.record_version(r) not in in_use]
    retention.retire = [r for r in retention.retire if versions.record_version(r) not in in_use]
    for r in retention.abandon:
        cleanups.append(CleanupArtifacts(record=r, in_use=stable_indexes(p.spec)))
        why = "superseded before it was published"
        d.events.append(Event("Normal", "VersionAbandoned", f"deleting version {versions.record_version(r)}: {why}"))
    for r in retention.retire:
        cleanups.append(CleanupArtifacts(record=r, retired=True, in_use=stable_indexes(p.spec)))
        why = f"{p.spec.output.retain_seconds:.0f}s after it was replaced"
        d.events.append(Event("Normal", "VersionDeleted", f"deleting version {versions.record_version(r)}: {why}"))
    live = tuple(st.artifacts or [])
    if p.published_now is not None and p.spec.shuffle is not None and p.spec.shuffle.delete_input:
        # shuffle.deleteInput: the converted shards go once the shuffle is published (unless another version
        # still holds them), so the next version has none to reuse
        b = p.spec.output.bucket
        others = tuple(r for r in live if versions.record_version(r) != owner.version)
        cleanups.append(SweepUnits(b.name, b.provider, builders.unit_pool(p.spec, owner), live=others))
    gone = [*retention.abandon, *retention.retire]
    for bucket, provider, prefix in sorted({pool for r in gone if (pool := pool_of(r)) is not None}):
        cleanups.append(
            SweepUnits(bucket, provider, prefix, live=live, restore=tuple(gone), in_use=stable_indexes(p.spec))
        )
    return cleanups


def _known_versions(prev: dict[str, Any]) -> dict[str, str | None]:
    """The versions the last status said were published (None) or kept as previous (their deleteAfter)."""
    v = prev.get("versions") or {}
    known: dict[str, str | None] = {}
    for entry in v.get("previous") or []:
        if isinstance(entry, dict) and entry.get("version"):
            known[str(entry["version"])] = str(entry.get("deleteAfter") or "") or None
    published = (v.get("published") or {}).get("version")
    if published:
        known[str(published)] = None
    return known


def _last_in_use(prev: dict[str, Any]) -> dict[str, str]:
    """When the last status saw a stable index name each kept previous version (`lastInUse`)."""
    entries = (prev.get("versions") or {}).get("previous") or []
    return {str(e["version"]): str(e["lastInUse"]) for e in entries if isinstance(e, dict) and e.get("version")
            and e.get("lastInUse")}  # fmt: skip


def _named(p: Pass) -> set[str]:
    """The versions the stable indexes name as this pass begins (a version this pass switches away from
    included: its own index may have been written passes before the switch, which moves its readers now)."""
    named = {v for v in p.obs.split_stables.values() if v}
    if p.obs.published is not None:
        named.add(p.obs.published.version)
    elif (seen := _last_published(p.prev)) is not None:
        named.add(seen)  # promise P2: a stable index not seen now is taken to name what the last status saw it name
    return named


def _in_use(p: Pass) -> set[str]:
    """The versions readers may be reading now: the ones the stable indexes name and the one this pass
    publishes. Nothing of theirs is deleted (promise P1)."""
    used = _named(p)
    if p.published_now is not None:
        used.add(p.published_now.version)
    return used


def _last_published(prev: dict[str, Any]) -> str | None:
    """The version the last status saw the stable index name (None: none was published)."""
    seen = ((prev.get("versions") or {}).get("published") or {}).get("version")
    return str(seen) if seen else None


def _deletions_held(p: Pass, d: Decision) -> str | None:
    """Why no version may be deleted on this pass (None: they may). Promise P2: what could not be seen is not
    taken for "nothing in use": while the stable index the last status saw is missing, nothing is deleted."""
    if not _may_sweep(p, d):
        return "the wanted version has no plan yet: its planner may still pick converted shards to reuse"
    seen = _last_published(p.prev)
    if seen is not None and p.obs.published is None and p.published_now is None:
        return (
            f"the stable index that named version {seen} is missing or unreadable: nothing is deleted until it is seen"
        )
    return None


def _may_sweep(p: Pass, d: Decision) -> bool:
    """Whether versions may be deleted now: once the wanted version's plan is seen, or it is published. Before,
    its planner may still pick converted shards to reuse (it lists them once), and which units it holds is not
    known: a plan that is not seen (it failed before planning, or the listing missed it) is never taken for one
    that holds nothing (promise P2); the deletions wait, and say so."""
    published = p.obs.published is not None and p.obs.published.version == p.owner.version
    return published or p.published_now is not None or p.plan is not None
