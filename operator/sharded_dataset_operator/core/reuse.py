"""Taking over the previous version's units (pure): which converted shards a new version needs not convert.

Each version's planner writes, beside its plan, the plan's *membership*: one line per sample in key order,
``[key, line digest, unit]``, where `unit` is the unit's id (a unit the version took over) or the ordinal of
a unit it cut (`n`: the n-th cut unit of its unit table). A new version's planner walks the previous
version's membership alongside its own sorted samples (`MembershipWalk`), twice:

1. every old unit one of whose samples is gone or changed (another digest) is *broken*; the others are
   intact, however many new samples sort between their keys;
2. a sample of an intact unit (whose converted shards still exist) goes with its unit, taken over whole;
   every other sample (new, changed, or of a broken unit) goes to the *convert stream*, which is cut into
   new units exactly like a first version's plan (`units.UnitCutter`).

So an added sample costs the unit it lands in, wherever it sorts; a removed or changed one costs its old
unit. Memory is one old membership line and the set of broken units (per unit, not per sample).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sharded_dataset_operator.core.compactjson import compact, string
from sharded_dataset_operator.core.units import CONVERT, REUSED, Unit

MEMBERS_CHUNK = 10_000  # membership lines per object


class MembershipError(Exception):
    """The previous version's membership or unit table is inconsistent (not sorted, an unknown unit)."""


Ref = str | int | list[str | int]
"""How a membership line names its unit: a unit id, the ordinal of a unit cut from the (only) convert stream,
or [split, ordinal] for one cut from a split's convert stream."""


def encode_member(key: str, digest: int, unit: Ref, split: str | None = None) -> str:
    """A membership line, `compact([key, digest as 16 hex digits, unit(, split)])`, built from strings."""
    if isinstance(unit, int):
        ref = str(unit)
    elif isinstance(unit, str):
        ref = string(unit)
    elif len(unit) == 2 and isinstance(unit[0], str) and type(unit[1]) is int:
        ref = f"[{string(unit[0])},{unit[1]}]"
    else:
        ref = compact(unit)
    tail = "" if split is None else "," + string(split)
    return f'[{string(key)},"{digest:016x}",{ref}{tail}]'


def decode_member(line: str) -> tuple[str, int, Ref, str | None]:
    """(key, digest, unit, split) of a membership line."""
    key, digest, unit, *split = json.loads(line)
    ref: Ref = unit if isinstance(unit, int | list) else str(unit)
    return str(key), int(digest, 16), ref, str(split[0]) if split else None


def members(lines: Iterable[str]) -> Iterator[tuple[str, int, Ref, str | None]]:
    """The membership's lines decoded, checked to be in strictly increasing key order."""
    last: str | None = None
    for line in lines:
        if not line:
            continue
        member = decode_member(line)
        if last is not None and member[0] <= last:
            raise MembershipError(f"the previous membership is not sorted: {member[0]!r} after {last!r}")
        last = member[0]
        yield member


class PreviousSplits:
    """The split each sample of the previous version was in, looked up in key order (its membership)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._members = members(lines)
        self._head = next(self._members, None)

    def split_of(self, key: str) -> str | None:
        """The previous split of `key` (keys asked for in increasing order), None if it had none."""
        while self._head is not None and self._head[0] < key:
            self._head = next(self._members, None)
        return self._head[3] if self._head is not None and self._head[0] == key else None


@dataclass(slots=True)
class PreviousUnits:
    """The previous version's unit table: its units by id, and per convert stream the ids of the units it cut,
    in order."""

    units: dict[str, Unit] = field(default_factory=dict)
    cut: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> PreviousUnits:
        table = cls()
        for line in lines:
            if not line:
                continue
            unit, kind = Unit.parse(line)
            table.units[unit.id] = unit
            if kind in (CONVERT, REUSED):
                table.cut.setdefault(unit.stream, []).append(unit.id)
        return table

    def resolve(self, ref: Ref) -> str:
        """The unit id a membership line names."""
        if isinstance(ref, int | list):
            stream, n = ("", ref) if isinstance(ref, int) else (str(ref[0]), ref[1])
            cut = self.cut.get(stream, [])
            if not isinstance(n, int) or not 0 <= n < len(cut):
                raise MembershipError(f"membership names cut unit {ref}, the unit table has {len(cut)} in that stream")
            return cut[n]
        if ref not in self.units:
            raise MembershipError(f"membership names unit {ref}, which is not in the unit table")
        return ref


class MembershipWalk:
    """Walks the previous version's membership (sorted by key) alongside the new plan's samples (sorted the
    same way): `match` each new sample in order, then `finish`. `broken` collects the old units that lost
    a sample or hold a changed one."""

    def __init__(self, old: Iterable[str], previous: PreviousUnits) -> None:
        self._members = members(old)
        self._previous = previous
        self._head: tuple[str, int, str] | None = None
        self.broken: set[str] = set()
        self._advance()

    def _advance(self) -> None:
        member = next(self._members, None)
        self._head = None if member is None else (member[0], member[1], self._previous.resolve(member[2]))

    def match(self, key: str, digest: int) -> str | None:
        """The old unit that holds this very sample (same key, same plan line), if any."""
        while self._head is not None and self._head[0] < key:
            self.broken.add(self._head[2])  # gone from the source
            self._advance()
        if self._head is None or self._head[0] != key:
            return None  # a new sample
        _, old_digest, unit = self._head
        self._advance()
        if old_digest == digest:
            return unit
        self.broken.add(unit)  # changed
        return None

    def finish(self) -> set[str]:
        while self._head is not None:
            self.broken.add(self._head[2])
            self._advance()
        return self.broken


class KeyDiff:
    """Counts, against the previous version's membership (sorted by key), the samples the new plan drops and
    adds, per split: what the publish guard (`guard.py`) weighs. `see` each new sample in key order, then
    `finish`. Memory is one old membership line and a counter per split."""

    def __init__(self, old: Iterable[str]) -> None:
        self._members = members(old)
        self._head = next(self._members, None)
        self.removed = 0
        self.added = 0
        self.removed_by_split: dict[str, int] = {}
        self.added_by_split: dict[str, int] = {}

    def _gone(self) -> None:
        assert self._head is not None
        self.removed += 1
        split = self._head[3]
        if split is not None:
            self.removed_by_split[split] = self.removed_by_split.get(split, 0) + 1
        self._head = next(self._members, None)

    def _new(self, split: str | None) -> None:
        self.added += 1
        if split is not None:
            self.added_by_split[split] = self.added_by_split.get(split, 0) + 1

    def see(self, key: str, split: str | None) -> None:
        while self._head is not None and self._head[0] < key:
            self._gone()
        if self._head is None or self._head[0] != key:
            self._new(split)
            return
        old_split = self._head[3]
        self._head = next(self._members, None)
        if old_split != split:  # moved to another split: gone from one, new in the other
            if old_split is not None:
                self.removed_by_split[old_split] = self.removed_by_split.get(old_split, 0) + 1
            if split is not None:
                self.added_by_split[split] = self.added_by_split.get(split, 0) + 1

    def finish(self, plan: str) -> dict[str, object]:
        """The counts as the plan manifest's `previousDiff` (`plan`: the previous version's plan manifest)."""
        while self._head is not None:
            self._gone()
        return {
            "plan": plan,
            "removed": self.removed,
            "added": self.added,
            "removedBySplit": dict(sorted(self.removed_by_split.items())),
            "addedBySplit": dict(sorted(self.added_by_split.items())),
        }
