"""The conversion plan: what the planner writes once per run and every converter worker streams its slice of.

The planner lists the source once, groups it (`samples.Grouper` over an external sort) and writes the
complete samples, sorted by key, as chunk objects of `CHUNK_SAMPLES` samples (one JSON line per sample:
``[key, {value member: value} or null, [[member, path, size], ...]]``), then the manifest (`plan.json`): how
many samples there are, the chunk names, and the dataset-wide counts (skips by reason, rejected files,
examples, the listing digest). Worker `i` of `W` converts samples ``[i*N//W, (i+1)*N//W)``: it reads the
manifest and streams only the chunks that overlap its range. The plan does not depend on `W`, and neither do the counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sharded_dataset_operator.core import naming
from sharded_dataset_operator.core.compactjson import string
from sharded_dataset_operator.core.samples import RawFile, Sample, partition_range

PLAN_KIND = "sds-plan-v1"
CHUNK_SAMPLES = 10_000


class PlanError(Exception):
    """The plan objects are missing or inconsistent (a chunk shorter than the manifest says, say)."""


SampleParts = tuple[str, tuple[tuple[str, str, int, str], ...], tuple[tuple[str, str], ...], str | None]
"""A sample as plain tuples: (key, ((member, path, size, tag), ...), ((value name, value), ...), split) (what
crosses from the planner's producer process: it pickles several times faster than a `Sample`)."""


def sample_parts(sample: Sample) -> SampleParts:
    return (
        sample.key,
        tuple([(name, raw.path, raw.size, raw.tag) for name, raw in sample.files]),
        sample.values,
        sample.split,
    )


def encode_sample(sample: Sample) -> str:
    """One plan line (no newline), see `encode_parts`."""
    return encode_parts(sample_parts(sample))


def encode_parts(parts: SampleParts) -> str:
    """One plan line (no newline); the split, when there is one, is part of it (and so of its unit's identity).

    `[key, {value name: value} or null, [[member, path, size(, tag)], ...](, split)]`, as `compact` writes it;
    built from strings (`compactjson.string`), which takes a third of the encoder's time."""
    q = string
    key, members, named, split = parts
    files = ",".join(
        [f"[{q(name)},{q(path)},{int(size)}{',' + q(tag) if tag else ''}]" for name, path, size, tag in members]
    )
    values = ",".join([f"{q(name)}:{q(value)}" for name, value in named]) if named else ""
    tail = "" if split is None else "," + q(split)
    return f"[{q(key)},{'{' + values + '}' if values else 'null'},[{files}]{tail}]"


def decode_sample(line: str) -> Sample:
    key, values, files, *split = json.loads(line)
    return Sample(
        key=str(key),
        files=tuple((str(f[0]), RawFile(str(f[1]), int(f[2]), str(f[3]) if len(f) > 3 else "")) for f in files),
        values=tuple(sorted((str(k), str(v)) for k, v in (values or {}).items())),
        split=str(split[0]) if split else None,
    )


class ChunkWriter:
    """Cuts the sorted sample stream into chunk objects; `put` is called with (object name, bytes)."""

    def __init__(
        self,
        put: Callable[[str, bytes], None],
        base: str,
        chunk_samples: int = CHUNK_SAMPLES,
        name: Callable[[str, int], str] = naming.plan_chunk_name,
    ) -> None:
        if chunk_samples < 1:
            raise ValueError("chunk_samples must be positive")
        self.put, self.base, self.chunk_samples, self.name = put, base, chunk_samples, name
        self.chunks: list[str] = []
        self.samples = 0
        self.bytes = 0
        self.members = 0
        self._lines: list[str] = []

    def add(self, sample: Sample, line: str | None = None) -> None:
        """Append a sample (`line`: its `encode_sample`, when the caller has it already)."""
        line = encode_sample(sample) if line is None else line
        self.add_line(line, len(sample.files), sample.file_bytes())

    def add_line(self, line: str, members: int, nbytes: int) -> None:
        """Append a sample by its plan line, its number of member files and their sizes' sum."""
        self._lines.append(line)
        self.samples += 1
        self.members += members
        self.bytes += nbytes
        if len(self._lines) >= self.chunk_samples:
            self._flush()

    def _flush(self) -> None:
        name = self.name(self.base, len(self.chunks))
        self.put(name, ("\n".join(self._lines) + "\n").encode())
        self.chunks.append(name)
        self._lines = []

    def finish(self) -> None:
        if self._lines:
            self._flush()


def worker_range(manifest: dict[str, Any], workers: int, index: int) -> tuple[int, int]:
    """[start, end) of the plan's samples that worker `index` converts."""
    return partition_range(int(manifest["samples"]), workers, index)


def read_range(
    manifest: dict[str, Any], start: int, end: int, lines: Callable[[str], Iterable[str]]
) -> Iterator[Sample]:
    """Samples `start..end-1` of the plan, streaming only the chunks that hold them.

    `lines(name)` yields a chunk object's lines. A chunk shorter than the manifest promises raises PlanError:
    a plan is never read as a smaller dataset.
    """
    per_chunk = int(manifest["chunkSamples"])
    chunks: list[str] = list(manifest["chunks"])
    total = int(manifest["samples"])
    if not 0 <= start <= end <= total:
        raise PlanError(f"range [{start}, {end}) is outside the plan's {total} samples")
    if len(chunks) != -(-total // per_chunk):
        raise PlanError(f"plan lists {len(chunks)} chunks for {total} samples of {per_chunk} per chunk")
    position = start
    while position < end:
        c = position // per_chunk
        first = c * per_chunk
        expected = min(per_chunk, total - first)
        stop = min(end, first + expected)
        seen = 0
        for line in lines(chunks[c]):
            i = seen
            seen += 1
            if i >= expected:
                raise PlanError(f"plan chunk {chunks[c]} holds more than the {expected} samples the manifest says")
            if first + i < position:
                continue
            yield decode_sample(line)
            position = first + i + 1
            if position >= stop:
                break
        if position < stop:
            raise PlanError(f"plan chunk {chunks[c]} holds {seen} samples, the manifest says {expected}")
