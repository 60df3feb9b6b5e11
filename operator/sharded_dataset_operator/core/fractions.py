"""Fraction splits (pure): which split each sample goes to, for `{name, fraction}` splits.

Each class (the sample's label with `stratifyBy`, else one class for all) gets a quota per split: the share
`fraction * n` rounded down or up, the ups chosen so that the splits' totals over all classes stay as close to
their shares as the rounding allows (classes in sorted order; a split further below its share overall gets the
next up). So every split of every class is within one sample of its share, and so is every split overall, even
with many small classes. Within a class the samples are taken in the order of a seeded 64-bit hash of their key
(`key_rank`), each going to the split with the most quota left (ties in spec order): the same source, seed and
fractions always give the same split.

A sample the previous version already assigned keeps its split (`previous`), whatever else changed: its class's
quotas are filled by the new samples around the ones kept. After additions, a split can hold one sample more
than its new quota (no sample is moved to repair it); removals can leave more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

_SEP = "\0"


def key_rank(seed: str, key: str) -> int:
    """The key's place in its class's order under `seed`: a 64-bit hash."""
    return int.from_bytes(hashlib.blake2b(f"{seed}{_SEP}{key}".encode(), digest_size=8).digest(), "big")


def rank_record(cls: str, seed: str, key: str, previous: str | None) -> str:
    """Sortable record of a sample for the assignment: class, rank, key, and its previous split ("" if none)."""
    return f"{cls}{_SEP}{key_rank(seed, key):016x}{_SEP}{key}{_SEP}{previous or ''}"


@dataclass(frozen=True, slots=True)
class Assigned:
    key: str
    split: str


def quotas(names: Sequence[str], fractions: Sequence[float], sizes: dict[str, int]) -> dict[str, list[int]]:
    """Per class, how many samples each split gets (see the module docstring)."""
    k = len(names)
    totals = [0] * k
    seen = 0
    out: dict[str, list[int]] = {}
    for cls in sorted(sizes):
        n = sizes[cls]
        seen += n
        share = [f * n for f in fractions]
        quota = [int(x) for x in share]
        rest = n - sum(quota)
        # the ups go to splits with a fractional share, the one furthest below its overall share first
        candidates = sorted(
            (i for i in range(k) if share[i] > quota[i]),
            key=lambda i: (-(fractions[i] * seen - totals[i] - quota[i]), -(share[i] - quota[i]), i),
        )
        for i in candidates[:rest]:
            quota[i] += 1
        for i in range(k):
            totals[i] += quota[i]
        out[cls] = quota
    return out


class FractionAssigner:
    """Assigns the samples of `rank_record`s, sorted, class by class.

    `sizes[cls]`: how many samples the class has; `kept[cls][split]`: how many of them keep a previous split.
    """

    def __init__(
        self,
        names: Sequence[str],
        fractions: Sequence[float],
        sizes: dict[str, int],
        kept: dict[str, dict[str, int]],
    ) -> None:
        if len(names) != len(fractions) or not names:
            raise ValueError("one fraction per split")
        self.names, self.kept = list(names), kept
        self.quotas = quotas(names, fractions, sizes)

    def assign(self, records: Iterable[str]) -> Iterator[Assigned]:
        cls: str | None = None
        left: list[int] = []
        for record in records:
            c, _, key, previous = record.split(_SEP, 3)
            if c != cls:
                cls = c
                kept = self.kept.get(c) or {}
                left = [q - kept.get(name, 0) for q, name in zip(self.quotas[c], self.names, strict=True)]
            if previous and previous in self.names:
                yield Assigned(key, previous)  # already counted in `kept`
                continue
            best = max(range(len(self.names)), key=lambda i: (left[i], -i))
            left[best] -= 1
            yield Assigned(key, self.names[best])
