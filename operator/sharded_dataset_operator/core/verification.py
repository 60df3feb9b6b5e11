"""Phase 4, verification and publishing: count each output as it is listed, compare with what the converters
wrote, ask the publish guard (promise P4), then publish (promise P3)."""

from __future__ import annotations

from typing import Any

from sharded_dataset_operator.core import append, builders, failures, guard, naming
from sharded_dataset_operator.core.actions import ACTIVE_REQUEUE, Decision, Event, WriteIndex
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.conversion import conversion_progress
from sharded_dataset_operator.core.observed import Track
from sharded_dataset_operator.core.records import artifact_record, index_location, stable_url
from sharded_dataset_operator.core.spec import DatasetSpec
from sharded_dataset_operator.core.state import Pass, condition_reason, ready_message, split_status, stalled
from sharded_dataset_operator.core.status import VERIFIED, Phase, StepState
from sharded_dataset_operator.core.verify import OutputTally, compare, counted_from_bytes
from sharded_dataset_operator.core.versions import IndexInfo


def step(p: Pass) -> Decision:
    """Count each output as it is listed, compare with what the converters wrote, index it, Ready."""
    spec, owner, obs, st = p.spec, p.owner, p.obs, p.st
    st.progress = conversion_progress(p.plan or {}, {}, p.reports, owner.generation, p.reused)
    verified: list[tuple[Track, list[tuple[Any, ...]], OutputTally]] = []
    kept = 0  # copies of the published version's shards (refreshMode Append)
    for track in p.tracks:
        attempt = st.shuffle_attempt
        if track.split is not None and spec.shuffle is not None:
            attempt = ((st.splits or {}).get(track.split) or {}).get("shuffle", {}).get("attempt")
        verify_prefix = verification_prefix(spec, owner, attempt, track.split)
        tally = obs.outputs.get(track.split) if track.split is not None else obs.output
        if tally is None:
            p.decision.need_output = True
            p.decision.output_prefix = verify_prefix
            p.decision.output_key = track.split or ""
            p.decision.output_from_bytes = counted_from_bytes(track.written)
            if spec.shuffle is None:  # the version's own converted shards, among other versions' in the pool
                p.decision.output_only = frozenset(track.shards)
            st.steps[VERIFIED] = StepState(False, "Verifying")
            what = "counting samples in the output shards" + (f" of split {track.split}" if track.split else "")
            return p.working(Phase.VERIFYING, "Verifying", what)
        problem = compare(track.samples, track.written, tally)
        if problem is None and spec.shuffle is None and sorted(s.name for s in tally.shards) != track.shards:
            problem = f"hold {len(tally.shards)} shards, the converters reported {len(track.shards)}"
        if problem is not None:
            msg = f"output shards under {verify_prefix} {problem}"
            if condition_reason(p.prev, VERIFIED) != "VerificationRetrying":
                # a listing taken while an AIS target was down is short: verify once more before judging
                st.steps[VERIFIED] = StepState(False, "VerificationRetrying", msg)
                decision = p.working(Phase.VERIFYING, "VerificationRetrying", f"{msg}; verifying again")
                decision.requeue = failures.VERIFY_RETRY_SECONDS
                return decision
            return p.failed(VERIFIED, "VerificationFailed", msg)
        shards = [(s.name, s.samples, s.size, s.checksum) for s in tally.shards]
        if spec.shuffle is None:  # the converted shards themselves: listed in key order (they are key ranges)
            position = {name: i for i, name in enumerate(track.key_order)}
            shards.sort(key=lambda s: position.get(str(s[0]), len(position)))
        verified.append((track, shards, tally))
        if spec.shuffle is not None:
            kept += sum(append.is_kept(verify_prefix, s.name) for s in tally.shards)
    total = sum(t.samples for t, _, _ in verified)
    held = _publish_guard(p, total, verified)
    if held is not None:
        return held
    nshards = sum(len(tally.shards) for _, _, tally in verified)
    st.shards_output = nshards
    st.bytes_output = sum(tally.bytes for _, _, tally in verified)
    st.steps[VERIFIED] = StepState(
        True,
        "Verified",
        f"{total} samples, {p.written.members} members, {p.written.member_bytes} bytes in {nshards} shards",
    )
    _publish(p, total, verified, kept)
    st.index_object = stable_url(spec)
    st.completion_time = (p.prev.get("completionTime") if p.prev_phase == Phase.READY else None) or p.now
    st.phase = Phase.READY
    st.reason = "Succeeded"
    st.message = ready_message(owner.version, total, nshards, st.bytes_output, st.samples_skipped)
    p.decision.requeue = ACTIVE_REQUEUE if obs.published is not None else None  # then: the replaced version
    if p.prev_phase != Phase.READY:
        replaced = f"; replaces version {obs.published.version}" if obs.published is not None else ""
        p.decision.events.append(Event("Normal", "Ready", st.message + replaced))
    return p.decision


HELD_REQUEUE = 300.0  # seconds between passes while a publication waits for a person (the annotation wakes it)


def _publish_guard(
    p: Pass, total: int, verified: list[tuple[Track, list[tuple[Any, ...]], OutputTally]]
) -> Decision | None:
    """Promise P4: a verified version that would drop more of the published version's samples than
    `spec.output.publishGuard.maxRemoved` allows is held until a person approves it (None: publish)."""
    published, owner = p.obs.published or _published_as_last_seen(p), p.owner
    if published is None or published.version == owner.version:
        return None
    new_splits = {t.split: t.samples for t, _, _ in verified if t.split is not None}
    diff = guard.plan_diff(p.plan, published)
    verdict = guard.judge(owner.version, published, total, new_splits, diff, p.spec.output.max_removed)
    approval = p.obs.approval
    p.st.publish_guard = verdict.status(approval)
    if not verdict.held:
        return None
    if approval == owner.version:
        p.decision.events.append(Event("Normal", "PublishApproved", f"publishing as approved: {verdict.message()}"))
        return None
    if approval and approval != (p.prev.get("publishGuard") or {}).get("approval"):
        why = f"annotation {guard.APPROVE_ANNOTATION}={approval} does not name the held version {owner.version}"
        p.decision.events.append(Event("Warning", "ApprovalIgnored", why))
    st = p.st
    st.steps[VERIFIED] = StepState(True, "Verified", f"{total} samples; held before publishing")
    how = f"kubectl annotate shardeddataset {owner.name} {guard.APPROVE_ANNOTATION}={owner.version}"
    msg = f"{verdict.message()}; the published version keeps serving. To publish it anyway: {how}"
    decision = stalled(p.decision, p.prev_stalled, Phase.VERIFYING, "PublishHeld", msg)
    decision.requeue = HELD_REQUEUE
    return decision


def _published_as_last_seen(p: Pass) -> IndexInfo | None:
    """The published version as the last status saw it, while its stable index is not seen (promise P2: the
    guard still weighs the new version against it)."""
    seen = (p.prev.get("versions") or {}).get("published") or {}
    if not seen.get("version"):
        return None
    return IndexInfo(str(seen["version"]), int(seen.get("generation") or 0), str(seen.get("refresh") or ""),
                     str(seen.get("publishedAt") or ""), int(seen.get("samples") or 0), 0, 0, "")  # fmt: skip


def _publish(
    p: Pass, samples: int, verified: list[tuple[Track, list[tuple[Any, ...]], OutputTally]], kept: int = 0
) -> None:
    """Write the version's own index (once), then the stable index as a copy of it: the single PUT that
    switches readers to this version. A pass that finds the version's index already written (the operator
    stopped between the two PUTs) copies that one, so the publication time and content never change.

    With splits, each split's own index comes first and the version's index names them (`info.splits`); each
    split's stable index (`<outputPrefix><split>-index.json`) is written only after the stable index, so a
    split's stable index never names a version that is not published (and so may not be deleted); a pass
    that finds one behind the published version puts it right (`split_repairs`)."""
    spec, owner = p.spec, p.owner
    bucket, provider, stable = index_location(spec)
    record = p.st.artifacts[0] if p.st.artifacts else artifact_record(spec, owner)
    versioned = record["index"]["versioned"]
    info_common = {
        "namespace": owner.namespace,
        "resource": owner.name,
        "uid": owner.uid,
        "generation": owner.generation,
        "version": owner.version,
        "refresh": owner.refresh,
        "publishedAt": p.now,
        "bucket": bucket,
        "provider": provider,
        "algorithm": spec.shuffle.algorithm if spec.shuffle else "none",
        "seed": spec.shuffle.seed if spec.shuffle else None,
        "replaces": (replaced := p.obs.published.version if p.obs.published is not None else None),
        # split stable indexes still naming another version (their switch was cut short): this one replaces it too,
        # so its retention runs from now for their readers as well (promise P1)
        **({"replacesSplits": lag} if (lag := _lagging_splits(p, replaced)) else {}),
        **({"appended": {"to": p.obs.published.version, "keptShards": kept}} if kept and p.obs.published else {}),
        **({"classes": classes} if (classes := (p.obs.plan or {}).get("classes")) else {}),
        **({"sourceFingerprint": fp} if (fp := (p.obs.plan or {}).get("sourceFingerprint")) else {}),
    }
    splits: dict[str, Any] = {}
    split_stables: list[WriteIndex] = []
    body = p.obs.wanted_index
    if body is None or IndexInfo.from_index(body, owner.uid) is None:
        shards: list[tuple[Any, ...]] = []
        if spec.splits is None:
            shards = verified[0][1]
        for track, split_shards, tally in verified if spec.splits is not None else ():
            assert track.split is not None
            names = record["index"]["splits"][track.split]
            info = {
                **info_common,
                "split": track.split,
                "versionIndex": f"{provider}://{bucket}/{names['versioned']}",
                "samples": track.samples,
            }
            split_body = builders.build_shard_index(
                f"{owner.name}-{track.split}", split_shards, names["versioned"], info, keep_order=spec.shuffle is None
            )
            p.decision.actions.append(WriteIndex(bucket, provider, names["versioned"], split_body))
            split_stables.append(WriteIndex(bucket, provider, names["stable"], split_body, guarded=True))
            splits[track.split] = {
                "index": f"{provider}://{bucket}/{names['stable']}",
                "versionIndex": f"{provider}://{bucket}/{names['versioned']}",
                "samples": track.samples,
                "shards": len(tally.shards),
                "bytes": tally.bytes,
            }
        info = {
            **info_common,
            "versionIndex": f"{provider}://{bucket}/{versioned}",
            "artifacts": record,
            "samples": samples,
            **({"splits": splits} if splits else {}),
        }
        body = builders.build_shard_index(owner.name, shards, versioned, info, keep_order=spec.shuffle is None)
        p.decision.actions.append(WriteIndex(bucket, provider, versioned, body))
    p.decision.actions.append(WriteIndex(bucket, provider, stable, body, publishes=True))
    p.published_now = IndexInfo.from_index(body, owner.uid)
    if not split_stables and p.published_now is not None:  # the version's index was written by an earlier pass
        split_stables = split_repairs(p, p.published_now)
    p.decision.actions.extend(split_stables)
    if spec.splits is not None:
        p.st.splits = split_status((body.get("info") or {}).get("splits") or {}, p.st.splits)


def split_repairs(p: Pass, published: IndexInfo) -> list[WriteIndex]:
    """Each split's stable index that does not name the published version yet, rewritten as a copy of the
    published version's own index of that split (read by `runner.observation` when they differ)."""
    names = (published.record.get("index") or {}).get("splits") or {}
    bucket, provider, _ = index_location(p.spec)
    out = []
    for split in sorted(published.splits):
        if p.obs.split_stables.get(split) == published.version or split not in names:
            continue
        source = p.obs.split_sources.get((published.version, split))
        if source is not None:
            out.append(WriteIndex(bucket, provider, str(names[split]["stable"]), source, guarded=True))
    return out


def verification_prefix(spec: DatasetSpec, owner: Owner, attempt: int | None, split: str | None = None) -> str:
    """Where the shards to verify are: the dSort attempt's output, or the converted shards without a shuffle."""
    if spec.shuffle is not None:
        return naming.attempt_base(builders.output_base(spec, owner, split), attempt or 1)
    return builders.unit_pool(spec, owner)


def _lagging_splits(p: Pass, replaced: str | None) -> dict[str, str]:
    """The splits whose stable index names a version other than the one the stable index names (`replaced`) and
    this one: a switch of theirs that was cut short. That version is replaced now as well, for their readers."""
    return {
        split: version
        for split, version in sorted(p.obs.split_stables.items())
        if version and version not in (replaced, p.owner.version)
    }
