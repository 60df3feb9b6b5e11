"""Planner: the one pod per run that lists the source, groups it into samples and writes the plan.

Run as `python -m sharded_dataset_operator.converter.planner` with the converter's environment
(`SDS_CONVERTER_CONFIG`, `AIS_ENDPOINT`, optionally `AIS_AUTHN_TOKEN`).

The listing is streamed once: each file is classified (`samples.Grouper`) and accepted files become sortable
records, as do the label table's entries (also streamed). An external sort (runs spilled to the output bucket,
deleted afterwards) brings each key's records together, every key is judged, and the complete samples are
written in key order as plan chunks, then the manifest (`plan.py`). Memory is the sort buffer and a chunk,
whatever the dataset size. The manifest is written last, so its presence means the plan is complete; a
rerun rewrites the same objects.

On the way the samples are cut into units (`units.py`). A unit whose converted shards some earlier version
of the resource already wrote (recorded in its reports, or in a worker's progress, and still present with
the recorded size) is marked reused and its records go to `reused.json`; the converters convert the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from .. import naming, plan, units
from ..clients.ais import Ais, ListingError
from ..extsort import ExternalSorter
from ..samples import FieldRule, Grouper, LabelRule, groups_from_records, label_entries, label_record
from ..verify import Totals
from .common import PermanentError, make_source, run_main
from .sources import Source, SourceError

log = logging.getLogger("sds.planner")


class AisRunStore:
    """External-sort runs as objects in the output bucket."""

    def __init__(self, ais: Ais, bucket: str, provider: str) -> None:
        self.ais, self.bucket, self.provider = ais, bucket, provider

    def put_run(self, name: str, data: bytes) -> None:
        self.ais.put(self.bucket, name, data, self.provider)

    def read_run(self, name: str) -> Iterator[str]:
        return self.ais.stream_lines(self.bucket, name, self.provider)

    def delete_run(self, name: str) -> None:
        self.ais.delete_objects(self.bucket, [name], self.provider)


def rules(config: dict[str, Any]) -> tuple[list[FieldRule], LabelRule | None, list[str]]:
    fields = [FieldRule(pattern=f["pattern"], name=f["name"]) for f in config["fields"]]
    label = None
    if config.get("labels"):
        lr = config["labels"]
        label = LabelRule(
            path=lr["path"], key_column=int(lr["keyColumn"]), value_column=int(lr["valueColumn"]), name=lr["name"]
        )
    return fields, label, list(config["required"])


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
    """Writes the plan's unit table and gathers the reused units' records."""

    def __init__(self, ais: Ais, out: dict[str, Any], known: dict[str, list[dict[str, Any]]]) -> None:
        self.ais, self.out, self.known = ais, out, known
        self.lines: list[str] = []
        self.chunks: list[str] = []
        self.count = self.convert = self.convert_samples = self.reused_samples = 0
        self.reused: list[dict[str, Any]] = []

    def add(self, unit: units.Unit) -> None:
        records = self.known.get(unit.id)
        self.count += 1
        if records is None:
            self.convert += 1
            self.convert_samples += unit.count
        else:
            self.reused.extend(records)
            self.reused_samples += unit.count
        self.lines.append(unit.line(records is not None))
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
            "skippedByReason": dict(sorted(skipped.items())),
            **totals.to_dict(),
        }


def make_plan(
    config: dict[str, Any],
    ais: Ais,
    source: Source,
    *,
    sort_buffer_bytes: int = 8 * 1024 * 1024,
    chunk_samples: int = plan.CHUNK_SAMPLES,
) -> dict[str, Any]:
    """List, group and write the plan; returns the manifest (also written as `plan.json`)."""
    started = time.monotonic()
    out = config["output"]
    base = str(out["base"])
    fields, label, required = rules(config)
    grouper = Grouper(fields, label, required)
    store = AisRunStore(ais, out["bucket"], out["provider"])
    sorter = ExternalSorter(store, naming.plan_run_prefix(base), buffer_bytes=sort_buffer_bytes)
    digest = hashlib.sha256()
    malformed = 0
    try:
        try:
            for raw in source.files():
                digest.update(f"{raw.path}\t{raw.size}\n".encode())
                record = grouper.record(raw)
                if record is not None:
                    sorter.add(record)
        except SourceError as e:
            raise PermanentError(str(e)) from e
        listed = source.listing.files
        if label is not None:
            lines = source.lines(label.path)
            if lines is None:
                raise PermanentError(f"labels file {label.path} not found in {source.describe()}")
            for entry in label_entries(lines, label.key_column, label.value_column):
                record = None if entry is None else label_record(*entry)
                if record is None:
                    malformed += 1
                else:
                    sorter.add(record)
        writer = plan.ChunkWriter(
            lambda name, data: ais.put(out["bucket"], name, data, out["provider"]), base, chunk_samples
        )
        layout = units.layout_digest(config)
        cutter = units.UnitCutter(
            layout, out.get("maxSamples"), out.get("maxBytes"), config.get("orderSeed") is not None
        )
        table = UnitTable(ais, out, reusable_units(ais, out))
        for group in groups_from_records(sorter.sorted(), grouper.names):
            sample = grouper.judge(group)
            if sample is not None:
                line = plan.encode_sample(sample)
                writer.add(sample, line)
                for unit in cutter.add(sample, line):
                    table.add(unit)
        for unit in cutter.finish():
            table.add(unit)
        writer.finish()
        table.flush()
    finally:
        sorter.close()
    reused = table.reused_report(config)
    ais.put(out["bucket"], naming.reused_name(base), json.dumps(reused, sort_keys=True).encode(), out["provider"])
    result = grouper.finish()
    manifest: dict[str, Any] = {
        "kind": plan.PLAN_KIND,
        "generation": int(config["generation"]),
        "listingDigest": digest.hexdigest()[:16],
        "filesListed": listed,
        "listPages": source.listing.pages,
        "samples": writer.samples,
        "bytes": writer.bytes,
        "members": writer.members,
        "chunkSamples": writer.chunk_samples,
        "chunks": writer.chunks,
        "skipped": result.skipped,
        "rejectedFiles": result.rejected_files,
        "examples": result.examples,
        "unmatchedFiles": result.unmatched_files,
        "labelsWithoutFiles": result.labels_without_files,
        "malformedLabelLines": malformed,
        "units": {
            "layout": layout,
            "count": table.count,
            "chunkUnits": UNIT_CHUNK,
            "chunks": table.chunks,
            "convert": table.convert,
            "convertSamples": table.convert_samples,
            "reused": table.count - table.convert,
            "reusedSamples": table.reused_samples,
            "reusedShards": len(table.reused),
        },
        "sortRecords": sorter.records,
        "sortRuns": sorter.runs_written,
        "seconds": round(time.monotonic() - started, 3),
    }
    ais.put(
        out["bucket"],
        naming.plan_manifest_name(base),
        json.dumps(manifest, indent=1, sort_keys=True).encode(),
        out["provider"],
    )
    return manifest


def run(config: dict[str, Any], index: int, ais: Ais) -> str:
    del index  # one planner per run
    source = make_source(config, ais)
    try:
        manifest = make_plan(config, ais, source)
    except ListingError as e:
        raise RuntimeError(str(e)) from e  # retried: a listing may well be complete next time
    u = manifest["units"]
    return (
        f"planned {manifest['samples']} samples from {manifest['filesListed']} files "
        f"({manifest['listPages']} listing pages, {sum(manifest['skipped'].values())} skipped) "
        f"in {manifest['seconds']:.1f}s: {u['count']} units, {u['reused']} reused, {u['convert']} to convert"
    )


def main() -> int:
    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
