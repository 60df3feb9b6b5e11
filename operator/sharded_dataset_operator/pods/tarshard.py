"""Deterministic in-memory tar encoding for WebDataset shards (pure, no I/O).

A shard is built in memory and uploaded in one PUT, so memory stays about one shard. Every header field
is fixed (mtime, mode, owner) so that reruns over the same input produce byte-identical shards.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

from sharded_dataset_operator.core.keys import key_problem

FIXED_MTIME = 0
"""mtime of every member; fixed so that reruns produce byte-identical shards."""

MEMBER_MODE = 0o444
BLOCK_SIZE = tarfile.BLOCKSIZE
END_OF_ARCHIVE = b"\0" * (2 * BLOCK_SIZE)
_USTAR_NAME_MAX = 100


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    if name.isascii() and len(name) <= _USTAR_NAME_MAX:
        return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def encode_sample(key: str, members: Sequence[tuple[str, bytes]]) -> bytes:
    """Tar entries (no end-of-archive marker) for one sample: ``<key>.<name>`` per member, sorted by name.

    USTAR headers are used when the member name is ASCII and fits 100 bytes, PAX headers otherwise.
    """
    problem = key_problem(key, nested=True)  # base-name keys and path keys (cat/1)
    if problem is not None:
        raise ValueError(f"invalid sample key {key!r}: {problem}")
    ordered = sorted(members, key=lambda m: m[0])
    names = [name for name, _ in ordered]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate member names in sample {key!r}: {names}")
    chunks: list[bytes] = []
    for name, data in ordered:
        if not name or "/" in name or "\0" in name:
            raise ValueError(f"invalid member name {name!r} in sample {key!r}")
        chunks.append(_header(f"{key}.{name}", len(data)))
        chunks.append(data)
        chunks.append(b"\0" * (-len(data) % BLOCK_SIZE))
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class FinishedShard:
    """A complete tar shard (with end-of-archive marker) and the keys of its samples, in order."""

    data: bytes
    keys: tuple[str, ...]

    @property
    def samples(self) -> int:
        """Number of samples in the shard."""
        return len(self.keys)


class ShardCutter:
    """Accumulates encoded samples and cuts shards by sample count and/or total byte size."""

    def __init__(self, max_samples: int | None, max_bytes: int | None) -> None:
        if max_samples is None and max_bytes is None:
            raise ValueError("at least one of max_samples and max_bytes is required")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._keys: list[str] = []
        self._size = 0

    def add(self, key: str, sample_tar: bytes) -> FinishedShard | None:
        """Append a sample; returns the previous shard if this sample does not fit in it."""
        if len(sample_tar) % BLOCK_SIZE:
            raise ValueError(f"sample {key!r} is not a whole number of tar blocks")
        finished = None
        if self._keys and not self._fits(len(sample_tar)):
            finished = self._cut()
        self._chunks.append(sample_tar)
        self._keys.append(key)
        self._size += len(sample_tar)
        return finished

    def finish(self) -> FinishedShard | None:
        """The last shard, or None when no sample is pending."""
        return self._cut() if self._keys else None

    def _fits(self, extra: int) -> bool:
        if self.max_samples is not None and len(self._keys) + 1 > self.max_samples:
            return False
        return self.max_bytes is None or self._size + extra + len(END_OF_ARCHIVE) <= self.max_bytes

    def _cut(self) -> FinishedShard:
        self._chunks.append(END_OF_ARCHIVE)
        shard = FinishedShard(data=b"".join(self._chunks), keys=tuple(self._keys))
        self._chunks = []
        self._keys = []
        self._size = 0
        return shard
