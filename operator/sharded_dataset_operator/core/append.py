"""Append refreshes (`spec.shuffle.refreshMode: Append`): when a refresh only added samples, dSort shuffles the
new samples alone, and the published version's shuffled shards are copied into the new attempt's output beside
them, so a refresh costs about its new data instead of a shuffle of everything.

It applies only when the new version holds exactly the published version's samples plus new ones: a refresh
(same generation: a spec change always reshuffles), planned from the published version's plan, which took over
every one of its units intact (no unit lost or changed a sample, every unit's converted shards still exist).
Then the published version's shuffled shards hold exactly the samples of the units taken over, and the
verification counts the copies and dSort's output together as it counts one dSort's output. Anything else (or
a published shard list that cannot be read, or does not add up to those units) reshuffles everything, and the
`ShuffleMode` event says why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sharded_dataset_operator.core.observed import Track
from sharded_dataset_operator.core.spec import REFRESH_APPEND
from sharded_dataset_operator.core.state import Pass

KEPT_MARK = "k"
"""A copied published shard's name in the attempt's output: `<attempt base>k<NNNNNN>.tar`, numbered in the
published version's name order (dSort's own output is `<attempt base><NNNNNN>.tar`)."""


@dataclass(frozen=True, slots=True)
class Appending:
    """What an Append attempt of one output does: dSort `new_shards` only (none: a split the refresh added
    nothing to, whose output is the copies alone), copy `copies` (published shard, its copy) into the attempt's
    output."""

    new_shards: list[str]
    member_bytes: int
    tar_bytes: int
    copies: tuple[tuple[str, str], ...]
    new_samples: int
    kept_samples: int
    published: str  # the published version whose shards are kept


def kept_name(attempt_base: str, n: int) -> str:
    return f"{attempt_base}{KEPT_MARK}{n:06d}.tar"


def is_kept(attempt_base: str, name: str) -> bool:
    """Whether an output shard of the attempt is a copy of a published shard."""
    return name.startswith(attempt_base + KEPT_MARK)


def why_not(p: Pass) -> str | None:
    """Why the wanted version cannot be an Append of the published one (None: it can, output by output)."""
    published, plan, owner = p.obs.published, p.plan or {}, p.owner
    if published is None:
        return "no version is published yet"
    if published.generation != owner.generation:
        return f"the spec changed since version {published.version} (generation {owner.generation})"
    units = plan.get("units") or {}
    if not units.get("previous") or units.get("previous") != published.record.get("plan"):
        return f"the plan did not start from version {published.version}'s plan"
    broken = int(units.get("previousBroken") or 0)
    if broken:
        return f"{broken} unit(s) of version {published.version} lost or changed samples"
    taken, previous = int(units.get("takenOver") or 0), units.get("previousUnits")
    if previous is None or taken != int(previous):
        return f"{taken} of {previous} units of version {published.version} were taken over whole"
    return None


def plan_track(p: Pass, track: Track, attempt_base: str) -> Appending | str:
    """The Append attempt of `track` (its dSort input and copies), or why this output is shuffled whole."""
    why = why_not(p)
    if why is not None:
        return why
    assert p.obs.published is not None
    version = p.obs.published.version
    shards = p.obs.published_shards.get(track.split or "")
    if shards is None:
        return f"the shard list of version {version} could not be read"
    kept = track.taken_over
    new = [s for s in track.shards if s not in kept.shards]
    if not new and track.split is None:
        return "no sample was added"
    held = sum(s.samples for s in shards)
    if held != kept.samples:
        return f"version {version}'s shards hold {held} samples, the units taken over from it {kept.samples}"
    names = sorted(s.name for s in shards)
    copies = tuple((name, kept_name(attempt_base, i)) for i, name in enumerate(names))
    return Appending(
        new_shards=new,
        member_bytes=track.written.member_bytes - kept.written.member_bytes,
        tar_bytes=track.tar_bytes - kept.tar_bytes,
        copies=copies,
        new_samples=track.samples - kept.samples,
        kept_samples=kept.samples,
        published=version,
    )


def copied(recorded: dict[str, Any], dsort_attempt: int) -> dict[str, Any] | None:
    """The shuffle record of a split whose output is only the published version's copies, once the copy is done
    (after_actions marks it `finished`); None for anything else. A dSort attempt after it takes precedence."""
    attempt = int(recorded.get("attempt") or 0)
    if not (recorded.get("copyOnly") and recorded.get("finished")) or attempt <= dsort_attempt:
        return None
    return {"attempt": attempt, "startedAt": recorded.get("startedAt"), "finished": True, "copyOnly": True}


def wanted(p: Pass) -> bool:
    return p.spec.shuffle is not None and p.spec.shuffle.refresh_mode == REFRESH_APPEND
