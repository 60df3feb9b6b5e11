"""The publish guard (pure): promise P4, a source accident is held for a person.

A verified version replaces the published one only if it keeps enough of it: it may drop at most
`spec.output.publishGuard.maxRemoved` of the published version's samples (a count, or a percentage of them),
checked for the whole dataset and for each split the published version had. A version that would drop more is
*held*: the published version keeps serving, the status says `PublishHeld` with the numbers, and the version
is published only once a person sets `shardeddataset.dev/approve=<version>` (or changes the guard, which is a
new generation and so a new build).

How many samples are dropped is counted exactly by the planner when it walked the published version's
membership (`plan.previousDiff`: samples of the published version whose key is gone); otherwise (the output
moved, or a plan from before the walk counted) it is the shrink of the count, a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core.versions import IndexInfo

APPROVE_ANNOTATION = "shardeddataset.dev/approve"
"""Set to the version id a held publication waits for (status.publishGuard.version) to publish it."""


def allowed_removals(max_removed: int | str, published_samples: int) -> int:
    """How many of `published_samples` may go: a count as it is, a percentage of them rounded down."""
    if isinstance(max_removed, int):
        return max_removed
    percent = int(str(max_removed).rstrip("%"))
    return published_samples * percent // 100


@dataclass(frozen=True, slots=True)
class Change:
    """What publishing a version would do to one output (the whole dataset, or a split)."""

    published: int
    new: int
    removed: int
    added: int
    allowed: int

    @property
    def too_many(self) -> bool:
        return self.removed > self.allowed

    def as_dict(self) -> dict[str, int]:
        return {
            "published": self.published,
            "new": self.new,
            "removed": self.removed,
            "added": self.added,
            "maxRemoved": self.allowed,
        }


@dataclass(slots=True)
class Verdict:
    """The guard's answer for one version: `held` (and why), with the numbers for the status."""

    version: str
    total: Change
    splits: dict[str, Change] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return self.total.too_many or any(c.too_many for c in self.splits.values())

    def message(self) -> str:
        t = self.total
        parts = [
            f"version {self.version} would remove {t.removed} of the published {t.published} samples "
            f"(adds {t.added}, {t.new} in all; publishGuard.maxRemoved allows {t.allowed})"
        ]
        for name, c in sorted(self.splits.items()):
            if c.too_many:
                parts.append(f"split {name}: {c.removed} of {c.published} removed (allows {c.allowed})")
        return "; ".join(parts)

    def status(self, approval: str | None) -> dict[str, Any]:
        """Every key, absent ones as None: the status is merge-patched, and a key left out would stay."""
        splits = {name: c.as_dict() for name, c in sorted(self.splits.items())} or None
        return {
            "version": self.version,
            "held": self.held,
            **self.total.as_dict(),
            "splits": splits,
            "approval": approval,
        }


def judge(
    version: str,
    published: IndexInfo,
    new_total: int,
    new_splits: dict[str, int],
    diff: dict[str, Any] | None,
    max_removed: int | str,
) -> Verdict:
    """What replacing `published` by a version of `new_total` samples (`new_splits` per split) would remove.

    `diff`: the planner's exact count against the published version (`removed`, `added`, `removedBySplit`,
    `addedBySplit`), or None (then the shrink of each count stands for what was removed).
    """

    def change(published_n: int, new_n: int, removed: int | None, added: int | None) -> Change:
        if removed is None:
            removed = max(0, published_n - new_n)
            added = max(0, new_n - published_n)
        return Change(published_n, new_n, removed, added or 0, allowed_removals(max_removed, published_n))

    exact = diff is not None
    total = change(
        published.samples,
        new_total,
        int(diff.get("removed") or 0) if exact and diff else None,
        int(diff.get("added") or 0) if exact and diff else None,
    )
    verdict = Verdict(version, total)
    removed_by = (diff or {}).get("removedBySplit") or {}
    added_by = (diff or {}).get("addedBySplit") or {}
    for name, entry in sorted(published.splits.items()):
        before = int((entry or {}).get("samples") or 0)
        after = int(new_splits.get(name, 0))
        if exact:
            c = change(before, after, int(removed_by.get(name) or 0), int(added_by.get(name) or 0))
        else:
            c = change(before, after, None, None)
        if name not in new_splits:  # the split is gone: every sample of it is removed
            c = Change(before, 0, before, 0, allowed_removals(max_removed, before))
        verdict.splits[name] = c
    return verdict


def plan_diff(plan: dict[str, Any] | None, published: IndexInfo) -> dict[str, Any] | None:
    """The planner's exact count, if it was taken against the published version's plan."""
    diff = (plan or {}).get("previousDiff")
    if not isinstance(diff, dict) or not published.record.get("plan"):
        return None
    return diff if diff.get("plan") == published.record.get("plan") else None
