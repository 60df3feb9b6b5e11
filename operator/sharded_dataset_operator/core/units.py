"""Conversion units (pure): where the plan is cut into converted shards, and what a unit's identity is.

The planner cuts the sorted sample stream into *units*, key ranges that each become one converted shard (or
a few, when a transform makes a unit larger than `maxShardSize`). A cut depends on the samples themselves,
not only on their position: once a unit is nearly full (its last `CUT_WINDOW` of `maxSamplesPerShard` or
`maxShardSize`, wider for large samples), after a sample whose key hashes below a threshold
(content-defined, like rsync's chunks, with a minimum size like FastCDC's), with a forced cut only where a
unit would exceed a limit. Units are therefore within `CUT_WINDOW` of the limit (their shard sizes within
5 % of `maxShardSize`), and adding, removing or changing a sample changes only the unit it falls in and,
rarely, the next few, until a cut falls on the same sample again; every other unit keeps its samples.

A unit's identity (`UnitHasher`) is a hash of everything that decides its bytes: the layout and conversion
settings (`layout_digest`) and its samples' plan lines (`plan.encode_sample`: the key, the label and each
member's name, source path, size and content tag, the source's checksum or modification time). A later
version whose unit has the same identity reuses the converted shard instead of converting it again; its
shards are named by the identity (`naming.unit_shard_name`), so they are shared by every version of the
resource that holds that unit. A later version also takes over whole units of the version it replaces whose
samples are all unchanged, wherever new samples fall between them (`reuse.py`); only the rest is cut again.

A unit's *fingerprint* is the sum (mod 2^64) of its samples' `line_digest`s: the units a version converts
and takes over must add up to the fingerprint of its whole plan, which proves they cover every planned
sample exactly once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from sharded_dataset_operator.core import plan
from sharded_dataset_operator.core.samples import Sample

UNIT_FORMAT = "sds-units-v1"
TAR_BLOCK = 512
FINGERPRINT_MOD = 1 << 64
CUT_WINDOW = 0.05
"""A content-defined cut is taken only in a unit's last 5 % (of either limit): units are at least 95 % full."""
CUT_WINDOW_SAMPLES = 8
"""...but the window holds at least about 8 samples, so a cut can move with the content when samples are
large against the limit (a window of one sample would make every cut positional)."""
CUT_SPACING = 3
"""About 3 samples of a window qualify for a cut on average, so a unit ends by content in its window
(forced at the limit for about e^-3 = 5 % of the units) and a shifted window finds the same cut again."""


def layout_digest(config: dict[str, Any]) -> str:
    """Hash of the converter settings that decide a converted shard's bytes (not the worker count)."""
    out = config.get("output") or {}
    relevant = {
        "format": UNIT_FORMAT,
        "fields": [f["name"] for f in config.get("fields") or []],
        "label": (config.get("labels") or {}).get("name"),
        "maxSamples": out.get("maxSamples"),
        "maxBytes": out.get("maxBytes"),
        "orderSeed": config.get("orderSeed"),
        "transform": config.get("transform"),
        "transformImage": config.get("transformImage"),
    }
    return hashlib.blake2b(json.dumps(relevant, sort_keys=True).encode(), digest_size=8).hexdigest()


def line_digest(line: str) -> int:
    """64-bit digest of one sample's plan line."""
    return int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "big")


def _tar_bytes(size: int) -> int:
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def estimated_tar_bytes(sample: Sample, with_order: bool) -> int:
    """The sample's size in a converted shard before any transform: one header and padded data per member."""
    return _sizes(plan.sample_parts(sample), with_order)[1]


def _sizes(parts: plan.SampleParts, with_order: bool) -> tuple[int, int]:
    """(the member files' sizes summed, `estimated_tar_bytes`), in one loop over the files."""
    _, files, values, _ = parts
    nbytes = 0
    tar_bytes = _tar_bytes(19) if with_order else 0
    for _, _, size, _ in files:
        nbytes += size
        tar_bytes += _tar_bytes(size)
    for _, value in values:
        tar_bytes += _tar_bytes(len(value.encode()))
    return nbytes, tar_bytes


class Planned(NamedTuple):
    """A judged sample as the plan's writers and the unit cutter need it: its plan line and the figures taken
    from the sample (made by the planner from the `plan.SampleParts` its producer process hands over,
    `pods/forked.py`)."""

    key: str
    split: str | None
    line: str
    members: int  # member files
    bytes: int  # their sizes' sum
    tar_bytes: int  # `estimated_tar_bytes`


def planned(sample: Sample, with_order: bool, line: str | None = None) -> Planned:
    """The sample's `Planned` (`line`: its `plan.encode_sample`, when the caller has it already)."""
    return planned_parts(plan.sample_parts(sample), with_order, line)


def planned_parts(parts: plan.SampleParts, with_order: bool, line: str | None = None) -> Planned:
    """`planned` of a sample given as `plan.SampleParts`."""
    nbytes, tar_bytes = _sizes(parts, with_order)
    line = plan.encode_parts(parts) if line is None else line
    return Planned(parts[0], parts[3], line, len(parts[1]), nbytes, tar_bytes)


def _unit_float(key: str) -> float:
    """A uniform number in [0, 1) from the key alone."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


def natural_cut(key: str, tar_bytes: int, fill: float, max_samples: int | None, max_bytes: int | None) -> bool:
    """Whether a unit `fill` full (its larger share of the two limits, this sample included, with the tar's end)
    ends after this sample by content: only inside the cut window, with a chance that grows with the sample's
    share of a limit."""
    share = 0.0
    if max_samples:
        share = 1 / max_samples
    if max_bytes:
        share = max(share, tar_bytes / max_bytes)
    window = min(1.0, max(CUT_WINDOW, CUT_WINDOW_SAMPLES * share))
    if fill < 1.0 - window:
        return False
    return _unit_float(key) < CUT_SPACING * share / window


CONVERT, REUSED, TAKEN_OVER = 0, 1, 2
"""How a version gets a unit (the unit table's last column): converted by its workers; cut like a new one but
found converted already (same identity); or taken over whole from the version it replaces (`reuse.py`)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """`count` samples with keys `first_key`..`last_key`. A unit this version cut holds the samples from
    position `start` of its convert stream (the whole plan, or the samples not taken over); a taken-over unit
    has `start` -1."""

    id: str
    start: int
    count: int
    first_key: str
    last_key: str
    tar_bytes: int
    fingerprint: int = 0
    stream: str = ""  # the split whose convert stream holds it ("" without splits)

    def line(self, kind: int) -> str:
        return json.dumps([self.id, self.start, self.count, self.first_key, self.last_key, self.tar_bytes,
                           kind, self.fingerprint, self.stream], ensure_ascii=False, separators=(",", ":"))  # fmt: skip

    @classmethod
    def parse(cls, line: str) -> tuple[Unit, int]:
        """A unit-table line: the unit and how the version got it (`CONVERT`, `REUSED` or `TAKEN_OVER`)."""
        uid, start, count, first, last, nbytes, kind, *rest = json.loads(line)
        fingerprint = int(rest[0]) if rest else 0
        stream = str(rest[1]) if len(rest) > 1 else ""
        unit = cls(str(uid), int(start), int(count), str(first), str(last), int(nbytes), fingerprint, stream)
        return unit, int(kind)


class UnitHasher:
    """Identity of one unit, fed sample by sample."""

    def __init__(self, layout: str) -> None:
        self._h = hashlib.blake2b(layout.encode(), digest_size=8)

    def add(self, line: str) -> None:
        """One sample's plan line."""
        self._h.update(line.encode() + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class UnitCutter:
    """Cuts the sorted sample stream into units; `add` returns the unit a sample closed (if any).

    `joined`: the ordinal (0, 1, ...) of the unit the last added sample went into."""

    def __init__(
        self, layout: str, max_samples: int | None, max_bytes: int | None, with_order: bool, stream: str = ""
    ) -> None:
        if not max_samples and not max_bytes:
            raise ValueError("at least one of max_samples and max_bytes is required")
        self.layout, self.max_samples, self.max_bytes, self.with_order = layout, max_samples, max_bytes, with_order
        self.stream = stream
        self.position = 0
        self.units = 0
        self._start = 0
        self._count = 0
        self._bytes = 0
        self._first = self._last = ""
        self._fingerprint = 0
        self._hasher = UnitHasher(layout)
        self.joined = 0

    def add(self, sample: Sample, line: str | None = None, digest: int | None = None) -> list[Unit]:
        """Feed the next sample (`line`: its plan line, `digest`: that line's `line_digest`, when the caller has
        them); the units this closed, in order (a forced cut before it, a content cut after)."""
        p = planned(sample, self.with_order, line)
        return self.add_line(p.key, p.line, line_digest(p.line) if digest is None else digest, p.tar_bytes)

    def add_line(self, key: str, line: str, digest: int, nbytes: int) -> list[Unit]:
        """`add` from the sample's key, plan line, its digest and `estimated_tar_bytes` (see `Planned`)."""
        closed: list[Unit] = []
        full = (self.max_samples is not None and self._count + 1 > self.max_samples) or (
            self.max_bytes is not None and self._bytes + nbytes + 2 * TAR_BLOCK > self.max_bytes
        )
        if self._count and full:
            closed.append(self._close())
        if not self._count:
            self._first = key
        self._hasher.add(line)
        self._fingerprint = (self._fingerprint + digest) % FINGERPRINT_MOD
        self.joined = self.units
        self._count += 1
        self._bytes += nbytes
        self._last = key
        self.position += 1
        if natural_cut(key, nbytes, self._fill(), self.max_samples, self.max_bytes):
            closed.append(self._close())
        return closed

    def finish(self) -> list[Unit]:
        return [self._close()] if self._count else []

    def _fill(self) -> float:
        """How full the open unit is: its larger share of the two limits (bytes with the tar's end blocks)."""
        fill = self._count / self.max_samples if self.max_samples else 0.0
        if self.max_bytes:
            fill = max(fill, (self._bytes + 2 * TAR_BLOCK) / self.max_bytes)
        return fill

    def _close(self) -> Unit:
        unit = Unit(self._hasher.hexdigest(), self._start, self._count, self._first, self._last, self._bytes,
                    self._fingerprint, self.stream)  # fmt: skip
        self.units += 1
        self._start, self._count, self._bytes, self._fingerprint = self.position, 0, 0, 0
        self._hasher = UnitHasher(self.layout)
        return unit


def assigned(convert_units: int, workers: int, index: int) -> tuple[int, int]:
    """[first, last) of the to-convert units (in plan order) that worker `index` of `workers` converts."""
    return index * convert_units // workers, (index + 1) * convert_units // workers
