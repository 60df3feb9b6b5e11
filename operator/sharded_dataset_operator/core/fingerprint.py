"""The fingerprint of a source listing (pure): what a scheduled check compares with the published version's.

Each listed object adds the 128-bit digest of (name, size, tag) to a sum, so the fingerprint does not depend on
the order of the listing (the planner and the operator's check may page differently) and is kept in constant
memory however many objects there are. The tag is the object's checksum in an AIS bucket, the backend's current
ETag in a remote one (`ONLY_REMOTE_PROPS` listings): an object rewritten with the same size changes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MOD = 1 << 128
_blake2b = hashlib.blake2b


@dataclass(slots=True)
class ListingFingerprint:
    total: int = 0
    objects: int = 0
    bytes: int = 0

    def add(self, path: str, size: int, tag: str) -> None:
        digest = _blake2b(f"{path}\0{size}\0{tag}".encode(), digest_size=16).digest()
        self.total += int.from_bytes(digest, "big")  # reduced by `value` (a sum of 2^20 digests has 148 bits)
        self.objects += 1
        self.bytes += size

    def value(self) -> str:
        """`<objects>:<bytes>:<32 hex digits>`: equal for equal listings, in any order."""
        return f"{self.objects}:{self.bytes}:{self.total % MOD:032x}"
