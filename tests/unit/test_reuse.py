"""Taking over the previous version's units: the membership walk finds exactly the units a change touched."""

from __future__ import annotations

import pytest

from sharded_dataset_operator.core.reuse import (
    MembershipError,
    MembershipWalk,
    PreviousUnits,
    decode_member,
    encode_member,
)
from sharded_dataset_operator.core.units import CONVERT, REUSED, TAKEN_OVER, Unit


def table(*kinds: tuple[str, int]) -> PreviousUnits:
    return PreviousUnits.from_lines(Unit(uid, 0, 1, "a", "z", 512).line(kind) for uid, kind in kinds)


PREVIOUS = table(("u0", CONVERT), ("old", TAKEN_OVER), ("u1", REUSED), ("u2", CONVERT))
# keys a..f: a, b in cut unit 0 (u0); c in the taken-over unit "old"; d in cut unit 1 (u1); e, f in u2
MEMBERS = [
    encode_member("a", 1, 0),
    encode_member("b", 2, 0),
    encode_member("c", 3, "old"),
    encode_member("d", 4, 1),
    encode_member("e", 5, 2),
    encode_member("f", 6, 2),
]


def walk(new: list[tuple[str, int]]) -> tuple[list[str | None], set[str]]:
    w = MembershipWalk(MEMBERS, PREVIOUS)
    matched = [w.match(key, digest) for key, digest in new]
    return matched, w.finish()


def test_an_unchanged_source_matches_every_sample_to_its_unit_and_breaks_nothing() -> None:
    matched, broken = walk([("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 6)])
    assert matched == ["u0", "u0", "old", "u1", "u2", "u2"] and broken == set()


def test_new_samples_between_old_keys_break_no_unit() -> None:
    matched, broken = walk([("0", 9), ("a", 1), ("aa", 9), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("ee", 9), ("f", 6),
                            ("g", 9)])  # fmt: skip
    assert matched == [None, "u0", None, "u0", "old", "u1", "u2", None, "u2", None] and broken == set()


def test_a_removed_or_changed_sample_breaks_exactly_its_unit() -> None:
    assert walk([("a", 1), ("b", 2), ("c", 3), ("e", 5), ("f", 6)])[1] == {"u1"}  # d removed
    assert walk([("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])[1] == {"u2"}  # the last one removed
    matched, broken = walk([("a", 1), ("b", 7), ("c", 3), ("d", 4), ("e", 5), ("f", 6)])  # b changed
    assert matched[1] is None and broken == {"u0"}
    assert walk([])[1] == {"u0", "old", "u1", "u2"}


def test_a_corrupt_previous_membership_is_an_error_not_a_wrong_reuse() -> None:
    with pytest.raises(MembershipError, match="not sorted"):
        MembershipWalk([encode_member("b", 1, 0), encode_member("a", 1, 0)], PREVIOUS).finish()
    with pytest.raises(MembershipError, match="cut unit 3"):
        MembershipWalk([encode_member("a", 1, 3)], PREVIOUS)
    with pytest.raises(MembershipError, match="unit nope"):
        MembershipWalk([encode_member("a", 1, "nope")], PREVIOUS)


def test_member_lines_round_trip() -> None:
    assert decode_member(encode_member("k é", 2**64 - 1, 7)) == ("k é", 2**64 - 1, 7, None)
    assert decode_member(encode_member("k", 0, "abc", "test")) == ("k", 0, "abc", "test")
    assert decode_member(encode_member("k", 0, ["train", 3], "train")) == ("k", 0, ["train", 3], "train")
