"""The planner's second half: every planned sample put into a unit, one taken over from the version this one
replaces or one cut from the convert stream (`units.py`, `reuse.py`), the unit table and membership written as
chunks, and the records of earlier versions' converted shards that a cut unit may reuse."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from sharded_dataset_operator.clients.ais import Ais
from sharded_dataset_operator.core import naming, plan, reuse, units
from sharded_dataset_operator.core.samples import (
    Sample,
)
from sharded_dataset_operator.core.verify import Totals

REUSED_KIND = "sds-reused-v1"


UNIT_CHUNK = 10_000  # units per unit-table object


_RECORD_OBJECTS = ("-report-w", "-progress-w", "-reused.json")


def reusable_units(ais: Ais, out: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Unit id -> the records of its converted shards, for every unit an earlier version (or an earlier
    attempt) finished and whose shards all still exist with the recorded sizes."""
    bucket, provider = out["bucket"], out["provider"]
    pool, versions = str(out.get("pool") or ""), str(out.get("versions") or "")
    if not pool or not versions:
        return {}
    sizes = {e.name: e.size for e in ais.list_objects(bucket, provider, pool)}
    if not sizes:
        return {}
    parts: dict[str, dict[int, dict[str, Any]]] = {}
    for entry in ais.list_objects(bucket, provider, versions):
        if not any(marker in entry.name for marker in _RECORD_OBJECTS) or not entry.name.endswith(".json"):
            continue
        data = ais.get(bucket, entry.name, provider)
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            continue
        for record in body.get("shards") or []:
            unit, name = record.get("unit"), record.get("name")
            if unit and name and sizes.get(name) == record.get("bytes"):
                parts.setdefault(str(unit), {}).setdefault(int(record.get("part") or 0), record)
    complete: dict[str, list[dict[str, Any]]] = {}
    for unit, by_part in parts.items():
        ordered = [by_part.get(i) for i in range(len(by_part))]
        if all(r is not None for r in ordered) and ordered and (ordered[-1] or {}).get("last"):
            complete[unit] = [r for r in ordered if r is not None]
    return complete


class UnitTable:
    """Writes the plan's unit table and gathers the records of the units it does not convert."""

    def __init__(self, ais: Ais, out: dict[str, Any], known: dict[str, list[dict[str, Any]]]) -> None:
        self.ais, self.out, self.known = ais, out, known
        self.lines: list[str] = []
        self.chunks: list[str] = []
        self.count = self.convert = self.convert_samples = self.reused_samples = 0
        self.taken_over = self.taken_over_samples = 0
        self.fingerprint = 0  # of the units not converted
        self.reused: list[dict[str, Any]] = []

    def add(self, unit: units.Unit) -> None:
        """A unit this version cut: reused if its identity was converted before, else to convert."""
        records = self.known.get(unit.id)
        if records is None:
            self.convert += 1
            self.convert_samples += unit.count
            self._line(unit.line(units.CONVERT))
        else:
            self._reuse(unit, records)
            self._line(unit.line(units.REUSED))

    def take_over(self, unit: units.Unit) -> None:
        """An intact unit of the version this one replaces (its shards exist: `known`)."""
        self._reuse(unit, [{**r, "takenOver": True} for r in self.known[unit.id]])
        self.taken_over += 1
        self.taken_over_samples += unit.count
        self._line(dataclasses.replace(unit, start=-1).line(units.TAKEN_OVER))

    def _reuse(self, unit: units.Unit, records: list[dict[str, Any]]) -> None:
        self.reused.extend(records)
        self.reused_samples += unit.count
        self.fingerprint = (self.fingerprint + unit.fingerprint) % units.FINGERPRINT_MOD

    def _line(self, line: str) -> None:
        self.count += 1
        self.lines.append(line)
        if len(self.lines) >= UNIT_CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        name = naming.plan_units_name(str(self.out["base"]), len(self.chunks))
        self.ais.put(self.out["bucket"], name, ("\n".join(self.lines) + "\n").encode(), self.out["provider"])
        self.chunks.append(name)
        self.lines = []

    def reused_report(self, config: dict[str, Any]) -> dict[str, Any]:
        totals = Totals()
        skipped: dict[str, int] = {}
        for r in self.reused:
            totals.merge(Totals.from_dict(r))
            for reason, n in (r.get("skipped") or {}).items():
                skipped[reason] = skipped.get(reason, 0) + int(n)
        return {
            "kind": REUSED_KIND,
            "generation": int(config["generation"]),
            "version": config.get("version"),
            "units": self.count - self.convert,
            "shards": self.reused,
            "written": sum(int(r.get("samples") or 0) for r in self.reused),
            "bytes": sum(int(r.get("bytes") or 0) for r in self.reused),
            "consumed": self.reused_samples,
            "planFingerprint": self.fingerprint,
            "skippedByReason": dict(sorted(skipped.items())),
            **totals.to_dict(),
        }


class LineChunks:
    """Lines written as objects of `per_chunk` lines, named by `name(base, i)`."""

    def __init__(self, ais: Ais, out: dict[str, Any], name: Callable[[str, int], str], per_chunk: int) -> None:
        self.ais, self.out, self.name, self.per_chunk = ais, out, name, per_chunk
        self.lines: list[str] = []
        self.chunks: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= self.per_chunk:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            name = self.name(str(self.out["base"]), len(self.chunks))
            self.ais.put(self.out["bucket"], name, ("\n".join(self.lines) + "\n").encode(), self.out["provider"])
            self.chunks.append(name)
            self.lines = []


class Assembler:
    """Puts each planned sample into a unit: one taken over from the previous version, or one cut from its
    convert stream (the samples not taken over, in key order; one stream per split); writes the membership and
    the unit table.

    `separate`: each stream's samples are written as chunks of their own (when units are taken over, or with
    splits); otherwise the only stream is the plan itself (`plan_chunks`).
    """

    def __init__(self, ais: Ais, out: dict[str, Any], config: dict[str, Any], layout: str,
                 known: dict[str, list[dict[str, Any]]], separate: bool, chunk_samples: int) -> None:  # fmt: skip
        self.ais, self.out, self.config, self.layout, self.separate = ais, out, config, layout, separate
        self.chunk_samples = chunk_samples
        self.table = UnitTable(ais, out, known)
        self.members = LineChunks(ais, out, naming.plan_members_name, reuse.MEMBERS_CHUNK)
        self.cutters: dict[str, units.UnitCutter] = {}
        self.writers: dict[str, plan.ChunkWriter] = {}
        self.taken: set[str] = set()

    def _cutter(self, stream: str) -> units.UnitCutter:
        cutter = self.cutters.get(stream)
        if cutter is None:
            out = self.out
            cutter = self.cutters[stream] = units.UnitCutter(
                self.layout, out.get("maxSamples"), out.get("maxBytes"), self.config.get("orderSeed") is not None,
                stream,
            )  # fmt: skip
            if self.separate:

                def name(base: str, chunk: int, stream: str = stream) -> str:
                    return naming.plan_convert_name(base, chunk, stream)

                self.writers[stream] = plan.ChunkWriter(
                    lambda n, data: self.ais.put(out["bucket"], n, data, out["provider"]), str(out["base"]),
                    self.chunk_samples, name,
                )  # fmt: skip
        return cutter

    def convert(self, p: units.Planned, digest: int) -> None:
        """Cut the sample (its plan line `p.line`, whose `line_digest` is `digest`) into its stream's units."""
        stream = p.split or ""
        cutter = self._cutter(stream)
        if self.separate:
            self.writers[stream].add_line(p.line, p.members, p.bytes)
        for unit in cutter.add_line(p.key, p.line, digest, p.tar_bytes):
            self.table.add(unit)
        ref: reuse.Ref = cutter.joined if not stream else [stream, cutter.joined]
        self.members.add(reuse.encode_member(p.key, digest, ref, p.split))

    def take_over(self, unit: units.Unit, sample: Sample, digest: int) -> None:
        if unit.id not in self.taken:
            self.taken.add(unit.id)
            self.table.take_over(unit)
        self.members.add(reuse.encode_member(sample.key, digest, unit.id, sample.split))

    def finish(self) -> None:
        for stream in sorted(self.cutters):
            for unit in self.cutters[stream].finish():
                self.table.add(unit)
        for writer in self.writers.values():
            writer.finish()
        self.table.flush()
        self.members.flush()

    def streams(self, plan_writer: plan.ChunkWriter) -> dict[str, dict[str, Any]]:
        """The convert streams as the converters read them: samples and chunk names, by split."""
        if not self.separate:
            return {"": {"samples": plan_writer.samples, "chunks": plan_writer.chunks}}
        return {name: {"samples": w.samples, "chunks": w.chunks} for name, w in sorted(self.writers.items())}


def previous_units(ais: Ais, out: dict[str, Any], layout: str) -> tuple[reuse.PreviousUnits, list[str]] | None:
    """The unit table and membership chunks of the version this one replaces, if it has the same layout."""
    name = out.get("previous")
    if not name:
        return None
    data = ais.get(out["bucket"], str(name), out["provider"])
    manifest = json.loads(data) if data else {}
    table = manifest.get("units") or {}
    if manifest.get("kind") != plan.PLAN_KIND or table.get("layout") != layout or "members" not in table:
        return None
    lines = (
        line for chunk in table.get("chunks") or [] for line in ais.stream_lines(out["bucket"], chunk, out["provider"])
    )
    return reuse.PreviousUnits.from_lines(lines), [str(c) for c in table["members"]]


def previous_members(ais: Ais, out: dict[str, Any]) -> Iterator[str] | None:
    """The membership lines of the version this one replaces (any layout), for `reuse.KeyDiff`; None when
    there is none or its plan has no membership."""
    name = out.get("previous")
    if not name:
        return None
    data = ais.get(out["bucket"], str(name), out["provider"])
    manifest = json.loads(data) if data else {}
    chunks = (manifest.get("units") or {}).get("members")
    if manifest.get("kind") != plan.PLAN_KIND or not isinstance(chunks, list):
        return None
    bucket, provider = out["bucket"], out["provider"]
    return (line for chunk in chunks for line in ais.stream_lines(bucket, str(chunk), provider))
