"""`spec.splits`: train/validation/test splits by list files, top-level folders, a member's value (a table
column) or fractions (pure parsing)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class SplitSpecError(ValueError):
    """`spec.splits` cannot be used as written (the message names the field)."""


@dataclass(frozen=True, slots=True)
class SplitSet:
    """One named split: the keys its list file names (key column as in `spec.samples.labels`), or a fraction
    of the samples (`fractions.py`)."""

    name: str
    list_file: str | None = None
    fraction: float | None = None
    folder: str | None = None  # the top-level folder that holds the split's files
    value: str | None = None  # with `Splits.member`: the member value that puts a sample in this split


@dataclass(frozen=True, slots=True)
class Splits:
    """`spec.splits`: by list files (every complete sample goes to the split whose list names its key, or to
    `rest`), by top-level folders, by a value member's value (`member`), or by fractions (by a seeded hash of
    the key, per label with `stratify_by`)."""

    sets: tuple[SplitSet, ...]
    rest: str | None = None
    seed: str = "0"
    stratify_by: str | None = None
    member: str | None = None  # splits by the value of this value member (a table column, a class)

    @property
    def by_fraction(self) -> bool:
        return self.sets[0].fraction is not None

    @property
    def names(self) -> tuple[str, ...]:
        """Every split a sample can be in, in spec order (`rest` last)."""
        return (*(s.name for s in self.sets), *([self.rest] if self.rest else []))


SPLIT_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _names(sets: tuple[SplitSet, ...], rest: str | None) -> None:
    names = [s.name for s in sets] + ([rest] if rest else [])
    for i, n in enumerate(names):
        if not SPLIT_NAME.match(n) or len(n) > 32:
            where = f"spec.splits.sets[{i}].name" if i < len(sets) else "spec.splits.rest"
            raise SplitSpecError(f"{where}: {n!r} is not a split name (lowercase letters, digits and '-', at most 32)")
    if len(set(names)) != len(names):
        raise SplitSpecError("spec.splits: split names must be unique (rest included)")


def _by_member(raw: dict[str, Any], sets: tuple[SplitSet, ...], values: list[str]) -> Splits:
    """Splits by a value member: a sample goes to the split whose `value` its member has (a table's split
    column, say); another value goes to `rest`, or the sample is skipped as not-in-split."""
    member = str(raw["member"])
    if member not in values:
        raise SplitSpecError(f"spec.splits.member: {member!r} is not a value member (a table member, a class member)")
    if any(s.list_file is not None or s.fraction is not None or s.folder is not None for s in sets):
        raise SplitSpecError(
            "spec.splits.sets: with splits.member, a split has a value (no listFile, fraction, folder)"
        )
    if raw.get("stratifyBy"):
        raise SplitSpecError("spec.splits.stratifyBy: only with fractions")
    given = [s.value or "" for s in sets]
    if any(not v for v in given) or len(set(given)) != len(given):
        raise SplitSpecError("spec.splits.sets[].value: one value per split")
    rest = str(raw["rest"]) if raw.get("rest") else None
    _names(sets, rest)
    return Splits(sets=sets, rest=rest, member=member)


def parse_splits(raw: dict[str, Any] | None, values: list[str]) -> Splits | None:
    """`spec.splits` (the CRD checks the same; this names the field for a spec that bypassed it)."""
    if not raw:
        return None
    sets = tuple(
        SplitSet(
            name=str(x.get("name") or ""),
            list_file=str(x["listFile"]) if x.get("listFile") else None,
            fraction=float(x["fraction"]) if x.get("fraction") is not None else None,
            folder=str(x["folder"]) if x.get("folder") else None,
            value=str(x.get("value") or x.get("name") or "") if raw.get("member") else None,
        )
        for x in raw.get("sets") or []
    )
    if not 2 <= len(sets) <= 8:
        raise SplitSpecError("spec.splits.sets: between 2 and 8 splits")
    if raw.get("member"):
        return _by_member(raw, sets, values)
    kinds = [(s.list_file is not None) + (s.fraction is not None) + (s.folder is not None) for s in sets]
    by_list = [s.list_file is not None and k == 1 for s, k in zip(sets, kinds, strict=True)]
    by_fraction = [s.fraction is not None and k == 1 for s, k in zip(sets, kinds, strict=True)]
    by_folder = [s.folder is not None and k == 1 for s, k in zip(sets, kinds, strict=True)]
    if not (all(by_list) or all(by_fraction) or all(by_folder)):
        raise SplitSpecError(
            "spec.splits.sets: every split has a listFile, every split a fraction, or every split a folder"
        )
    seed = str(raw.get("seed") or "0")
    stratify = str(raw["stratifyBy"]) if raw.get("stratifyBy") else None
    if all(by_fraction):
        fractions = [s.fraction or 0.0 for s in sets]
        if any(not 0 < f <= 1 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
            raise SplitSpecError(
                f"spec.splits.sets[].fraction: each in (0, 1], summing to 1 (they sum to {sum(fractions):g})"
            )
        if raw.get("rest"):
            raise SplitSpecError("spec.splits.rest: only with list files (fractions place every sample)")
        if not seed.isdigit():
            raise SplitSpecError("spec.splits.seed: must be a decimal number")
        if stratify is not None and stratify not in values:
            raise SplitSpecError(
                f"spec.splits.stratifyBy: {stratify!r} is not a value member (the label, a class member)"
            )
    elif stratify is not None:
        raise SplitSpecError("spec.splits.stratifyBy: only with fractions")
    rest = str(raw["rest"]) if raw.get("rest") else None
    _names(sets, rest)
    if all(by_fraction):
        return Splits(sets=sets, seed=seed, stratify_by=stratify)
    if all(by_folder):
        folders = [s.folder or "" for s in sets]
        if any("/" in f or f in (".", "..") for f in folders) or len(set(folders)) != len(folders):
            raise SplitSpecError("spec.splits.sets[].folder: a top-level folder name (no '/'), one per split")
        return Splits(sets=sets, rest=rest, seed=seed)
    files = [s.list_file or "" for s in sets]
    if any(not f or f.startswith("/") for f in files) or len(set(files)) != len(files):
        raise SplitSpecError("spec.splits.sets[].listFile: a relative path, one per split")
    return Splits(sets=sets, rest=rest, seed=seed)
