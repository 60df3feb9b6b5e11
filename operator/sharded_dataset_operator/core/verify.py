"""Streaming verification of shards against what the converters reported (pure, no I/O).

Both sides compute the same three totals over every member (`key.ext`) of every shard: the number of
members, their bytes, and an order-independent fingerprint (the sum, modulo 2**64, of a 64-bit hash of
each member's name and size). The converters count what they write; the verifier counts each output
shard's members, one at a time, keeping only per-shard counters: from the shard's own bytes (its tar
headers, `tarmembers`) when members are small, else from AIS's archive listing (`counted_from_bytes`). A
member missing, added, renamed, truncated or padded changes at least one total. Samples are counted per
shard as runs of adjacent members sharing a key: the members of key `k` are the names starting with `k.`
(keys hold no '.'). Read from the bytes, the runs are in the shard's own order, as a WebDataset reader
groups them (a sample split apart counts as two); an archive listing sorts members by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

MASK64 = (1 << 64) - 1


READ_MEMBER_BYTES = 8 << 10
"""The verifier reads the output shards' bytes when the converters wrote at most this many bytes per member on
average, and asks AIS for an archive listing of each shard otherwise. Same shards, 3 members per sample, the
cost of reading against listing (wall): ~1 KiB per member 0.49x, ~4 KiB 0.43-0.97x, ~8 KiB 0.50x, ~16 KiB
0.8-1.2x (bench/README.md). Listing reads only the tar headers, so it wins with larger members."""


def counted_from_bytes(written: Totals) -> bool:
    """Whether to count an output from its shards' bytes (small members) rather than from AIS's archive listing."""
    return written.members > 0 and written.member_bytes <= READ_MEMBER_BYTES * written.members


def member_hash(name: str, size: int) -> int:
    """64-bit hash of one member's name and size."""
    return int.from_bytes(hashlib.blake2b(f"{name}\0{size}".encode(), digest_size=8).digest(), "big")


@dataclass(slots=True)
class Totals:
    """Members, member bytes and fingerprint of a set of shards."""

    members: int = 0
    member_bytes: int = 0
    fingerprint: int = 0

    def add(self, name: str, size: int) -> None:
        self.members += 1
        self.member_bytes += size
        self.fingerprint = (self.fingerprint + member_hash(name, size)) & MASK64

    def merge(self, other: Totals) -> None:
        self.members += other.members
        self.member_bytes += other.member_bytes
        self.fingerprint = (self.fingerprint + other.fingerprint) & MASK64

    def to_dict(self) -> dict[str, int | str]:
        return {"members": self.members, "memberBytes": self.member_bytes, "fingerprint": f"{self.fingerprint:016x}"}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Totals:
        return cls(
            members=int(str(d.get("members") or 0)),
            member_bytes=int(str(d.get("memberBytes") or 0)),
            fingerprint=int(str(d.get("fingerprint") or "0"), 16),
        )


@dataclass(slots=True)
class ShardCount:
    name: str
    size: int = 0
    checksum: dict[str, str] | None = None
    samples: int = 0
    members: int = 0


@dataclass(slots=True)
class OutputTally:
    """Counts shards (`x.tar`) and their members (`x.tar/member`, or a shard's members at once) as they stream
    by."""

    prefix: str
    only: frozenset[str] | None = None  # count only these shards (others under the prefix are left out)
    shards: list[ShardCount] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    problems: list[str] = field(default_factory=list)
    _last_key: str | None = None

    def add(self, name: str, size: int, checksum: dict[str, str] | None = None) -> None:
        if not name.startswith(self.prefix):
            return
        if (
            self.only is not None
            and (name if ".tar/" not in name else name.partition(".tar/")[0] + ".tar") not in self.only
        ):
            return
        if name.endswith(".tar") and ".tar/" not in name:
            self.shards.append(ShardCount(name=name, size=size, checksum=checksum))
            self._last_key = None
            return
        shard, sep, member = name.partition(".tar/")
        if not sep:
            return  # not a shard (an index, a report)
        current = self.shards[-1] if self.shards else None
        if current is None or current.name != shard + ".tar":
            self.problem(f"member {name} listed outside its shard")
            return
        key = member.split(".", 1)[0]
        if key != self._last_key:
            current.samples += 1
            self._last_key = key
        current.members += 1
        self.totals.add(member, size)

    def add_members(self, shard: str, members: Iterable[tuple[str, int]]) -> None:
        """`add` of each `(member, size)` of `shard` (named relative to it, `key.ext`), the shard added last: the
        same counts from one loop, as the verifier counts a shard's members from its bytes."""
        current = self.shards[-1] if self.shards else None
        if current is None or current.name != shard:
            first = next(iter(members), None)
            if first is not None:
                self.problem(f"member {shard}/{first[0]} listed outside its shard")
            return
        last, samples, count, nbytes, fingerprint = self._last_key, 0, 0, 0, 0
        for member, size in members:
            key = member.partition(".")[0]
            if key != last:
                samples += 1
                last = key
            count += 1
            nbytes += size
            fingerprint += member_hash(member, size)
        self._last_key = last
        current.samples += samples
        current.members += count
        t = self.totals
        t.members += count
        t.member_bytes += nbytes
        t.fingerprint = (t.fingerprint + fingerprint) & MASK64

    def merge(self, other: OutputTally) -> None:
        """Append another tally's shards (listed apart, e.g. one shard's listing) after this one's."""
        self.shards.extend(other.shards)
        self.totals.merge(other.totals)
        for problem in other.problems:
            self.problem(problem)
        self._last_key = None

    def problem(self, message: str) -> None:
        """Note what is wrong with the listing (the first five are kept)."""
        if len(self.problems) < 5:
            self.problems.append(message)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self.shards)


def compare(expected_samples: int, expected: Totals, tally: OutputTally) -> str | None:
    """None when the output holds exactly what was written, else what differs (first difference)."""
    if tally.problems:
        return "; ".join(tally.problems)
    got = tally.totals
    if tally.samples != expected_samples:
        return f"hold {tally.samples} samples but the converters wrote {expected_samples}"
    if got.members != expected.members:
        return f"hold {got.members} members but the converters wrote {expected.members}"
    if got.member_bytes != expected.member_bytes:
        return f"hold {got.member_bytes} member bytes but the converters wrote {expected.member_bytes}"
    if got.fingerprint != expected.fingerprint:
        return "hold members whose names or sizes differ from what the converters wrote (fingerprint mismatch)"
    return None
