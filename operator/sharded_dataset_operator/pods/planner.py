"""Planner: the one pod per run that lists the source, groups it into samples and writes the plan.

Run as `python -m sharded_dataset_operator.pods.planner` with the converter's environment
(`SDS_CONVERTER_CONFIG`, `AIS_ENDPOINT`, optionally `AIS_AUTHN_TOKEN`).

The listing is streamed once: each file is classified (`samples.Grouper`) and accepted files become sortable
records, as do the label table's entries (also streamed). An external sort (runs spilled to the output bucket,
deleted afterwards) brings each key's records together, every key is judged, and the complete samples are
written in key order as plan chunks, then the manifest (`plan.py`). Memory is the sort buffer and a chunk,
whatever the dataset size. The manifest is written last, so its presence means the plan is complete; a
rerun rewrites the same objects.

Then every sample is put into a unit (`units.py`). When the version this one replaces (`output.previous`, its
plan manifest) has the same layout, its units whose samples are all unchanged are taken over whole, and only
the other samples (the *convert stream*, written beside the plan) are cut into new units (`reuse.py`: the
plan is read back once for that). A cut unit whose converted shards some earlier version of the resource
already wrote (recorded in its reports, or in a worker's progress, and still present with the recorded size)
is marked reused. The records of every unit not converted go to `reused.json`; the converters convert the
rest. The membership (which unit each sample is in) is written for the next version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from sharded_dataset_operator.clients.ais import Ais, ListingError
from sharded_dataset_operator.core import fractions, naming, plan, reuse, units
from sharded_dataset_operator.core.extsort import ExternalSorter
from sharded_dataset_operator.core.samples import (
    FieldRule,
    Grouper,
    LabelRule,
    Sample,
    SplitRule,
    groups_from_records,
    label_entries,
    label_record,
    split_record,
)
from sharded_dataset_operator.core.verify import Totals
from sharded_dataset_operator.pods.common import PermanentError, make_source, run_main
from sharded_dataset_operator.pods.sources import Source, SourceError

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


def split_rule(config: dict[str, Any]) -> SplitRule | None:
    """The split lists of the configuration (`builders.converter_config`), if the dataset has list splits."""
    sp = config.get("splits")
    if not sp or fraction_splits(config) is not None:
        return None
    sets = list(sp["sets"])
    return SplitRule(
        names=tuple(str(x["name"]) for x in sets),
        paths=tuple(str(x["listFile"]) for x in sets),
        key_column=int(sp.get("keyColumn") or 0),
        rest=sp.get("rest") or None,
    )


def fraction_splits(config: dict[str, Any]) -> dict[str, Any] | None:
    """The fraction splits of the configuration, if the dataset has those."""
    sp = config.get("splits")
    return sp if sp and sp["sets"] and sp["sets"][0].get("fraction") is not None else None


def splits_digest(config: dict[str, Any]) -> str | None:
    """What decides which split a sample goes to; a new version keeps the previous one's splits only if equal."""
    sp = config.get("splits")
    if not sp:
        return None
    relevant = {k: sp.get(k) for k in ("sets", "rest", "seed", "stratifyBy", "keyColumn")}
    return hashlib.blake2b(json.dumps(relevant, sort_keys=True).encode(), digest_size=8).hexdigest()


def assign_fractions(
    samples: Iterator[Sample],
    sp: dict[str, Any],
    store: AisRunStore,
    base: str,
    buffer_bytes: int,
    previous: reuse.PreviousSplits | None,
) -> Iterator[Sample]:
    """The samples (in key order) with their fraction split (`fractions.py`): every sample's line and rank are
    sorted aside (runs in the output bucket), the ranks assigned class by class, and the picks joined back
    in key order. Memory: the sort buffers and a counter per class and split."""
    names = [str(x["name"]) for x in sp["sets"]]
    shares = [float(x["fraction"]) for x in sp["sets"]]
    seed, stratify = str(sp.get("seed") or "0"), bool(sp.get("stratifyBy"))
    run = naming.plan_run_prefix(base)
    lines = ExternalSorter(store, f"{run}lines-", buffer_bytes=buffer_bytes)
    ranks = ExternalSorter(store, f"{run}ranks-", buffer_bytes=buffer_bytes)
    picks = ExternalSorter(store, f"{run}picks-", buffer_bytes=buffer_bytes)
    try:
        sizes: Counter[str] = Counter()
        kept: dict[str, Counter[str]] = {}
        for sample in samples:
            cls = (sample.label or "") if stratify else ""
            before = previous.split_of(sample.key) if previous is not None else None
            before = before if before in names else None
            lines.add(f"{sample.key}\0{plan.encode_sample(sample)}")
            ranks.add(fractions.rank_record(cls, seed, sample.key, before))
            sizes[cls] += 1
            if before is not None:
                kept.setdefault(cls, Counter())[before] += 1
        assigner = fractions.FractionAssigner(names, shares, dict(sizes), {c: dict(k) for c, k in kept.items()})
        for a in assigner.assign(ranks.sorted()):
            picks.add(f"{a.key}\0{a.split}")
        for record, pick in zip(lines.sorted(), picks.sorted(), strict=True):
            key, line = record.split("\0", 1)
            picked, split = pick.split("\0", 1)
            if key != picked:
                raise RuntimeError(f"split assignment out of step: {key!r} vs {picked!r}")
            yield dataclasses.replace(plan.decode_sample(line), split=split)
    finally:
        for sorter in (lines, ranks, picks):
            sorter.close()


def previous_splits(ais: Ais, out: dict[str, Any], digest: str | None) -> reuse.PreviousSplits | None:
    """The previous version's split of each sample, if it split the samples the same way."""
    name = out.get("previous")
    if not name or digest is None:
        return None
    data = ais.get(out["bucket"], str(name), out["provider"])
    manifest = json.loads(data) if data else {}
    if manifest.get("splitsDigest") != digest:
        return None
    bucket, provider = out["bucket"], out["provider"]
    chunks = (manifest.get("units") or {}).get("members") or []
    return reuse.PreviousSplits(line for c in chunks for line in ais.stream_lines(bucket, str(c), provider))


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
        self._reuse(unit, self.known[unit.id])
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

    def convert(self, sample: Sample, line: str, digest: int) -> None:
        stream = sample.split or ""
        cutter = self._cutter(stream)
        if self.separate:
            self.writers[stream].add(sample, line)
        for unit in cutter.add(sample, line):
            self.table.add(unit)
        ref: reuse.Ref = cutter.joined if not stream else [stream, cutter.joined]
        self.members.add(reuse.encode_member(sample.key, digest, ref, sample.split))

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
    splits = split_rule(config)
    grouper = Grouper(fields, label, required, splits)
    store = AisRunStore(ais, out["bucket"], out["provider"])
    sorter = ExternalSorter(store, naming.plan_run_prefix(base), buffer_bytes=sort_buffer_bytes)
    digest = hashlib.sha256()
    malformed = 0
    layout = units.layout_digest(config)
    previous = previous_units(ais, out, layout)
    known = reusable_units(ais, out)

    def put(name: str, data: bytes) -> None:
        ais.put(out["bucket"], name, data, out["provider"])

    def old_members() -> Iterator[str]:
        assert previous is not None
        return (line for chunk in previous[1] for line in ais.stream_lines(out["bucket"], chunk, out["provider"]))

    fingerprint = 0
    old_lines = previous_members(ais, out)
    diff = reuse.KeyDiff(old_lines) if old_lines is not None else None
    walk = reuse.MembershipWalk(old_members(), previous[0]) if previous is not None else None
    assembler = (
        None
        if walk is not None
        else Assembler(ais, out, config, layout, known, bool(config.get("splits")), chunk_samples)
    )
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
            if lines is None and listed:  # an emptied source has no labels either: an empty plan (NoSamples)
                raise PermanentError(f"labels file {label.path} not found in {source.describe()}")
            for entry in label_entries(lines if lines is not None else (), label.key_column, label.value_column):
                record = None if entry is None else label_record(*entry)
                if record is None:
                    malformed += 1
                else:
                    sorter.add(record)
        rule = splits or SplitRule((), ())
        for i, path in enumerate(rule.paths):
            lines = source.lines(path)
            if lines is None and listed:
                raise PermanentError(f"split list file {path} (split {rule.names[i]}) not found in {source.describe()}")
            for entry in label_entries(lines if lines is not None else (), rule.key_column, rule.key_column):
                record = None if entry is None else split_record(entry[0], i)
                if record is None:
                    malformed += 1
                else:
                    sorter.add(record)
        writer = plan.ChunkWriter(put, base, chunk_samples)
        judged: Iterator[Sample] = (
            s for g in groups_from_records(sorter.sorted(), grouper.names) if (s := grouper.judge(g))
        )
        shares = fraction_splits(config)
        if shares is not None:
            before = previous_splits(ais, out, splits_digest(config))
            judged = assign_fractions(judged, shares, store, base, sort_buffer_bytes, before)
        for sample in judged:
            line = plan.encode_sample(sample)
            writer.add(sample, line)
            line_digest = units.line_digest(line)
            fingerprint = (fingerprint + line_digest) % units.FINGERPRINT_MOD
            if diff is not None:
                diff.see(sample.key, sample.split)
            if walk is not None:  # first the old units' fate; the units are made below
                walk.match(sample.key, line_digest)
            else:
                assert assembler is not None
                assembler.convert(sample, line, line_digest)
        writer.finish()
    finally:
        sorter.close()
    if grouper.result.split_overlaps:
        r = grouper.result
        raise PermanentError(
            f"{r.split_overlaps} key(s) are in more than one split list, e.g. {'; '.join(r.overlap_examples)}: a "
            "sample belongs to exactly one split"
        )
    broken = 0
    if walk is not None:
        assert previous is not None
        broken = len(walk.finish())
        intact = {u for u in previous[0].units if u not in walk.broken and u in known}
        assembler = Assembler(
            ais, out, config, layout, known, bool(intact) or bool(config.get("splits")), chunk_samples
        )
        again = reuse.MembershipWalk(old_members(), previous[0])
        for chunk in writer.chunks:
            for line in ais.stream_lines(out["bucket"], chunk, out["provider"]):
                sample = plan.decode_sample(line)
                line_digest = units.line_digest(line)
                old = again.match(sample.key, line_digest)
                if old is not None and old in intact:
                    assembler.take_over(previous[0].units[old], sample, line_digest)
                else:
                    assembler.convert(sample, line, line_digest)
    assert assembler is not None
    assembler.finish()
    table = assembler.table
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
        "splitKeysWithoutFiles": result.split_keys_without_files,
        "splitsDigest": splits_digest(config),
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
            "takenOver": table.taken_over,
            "takenOverSamples": table.taken_over_samples,
            "previous": out.get("previous") if previous is not None else None,
            "previousBroken": broken,
            "streams": assembler.streams(writer),
            "members": assembler.members.chunks,
            "fingerprint": fingerprint,
        },
        "previousDiff": diff.finish(str(out["previous"])) if diff is not None else None,
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
        f"in {manifest['seconds']:.1f}s: {u['count']} units, {u['reused']} reused ({u['takenOver']} taken over "
        f"whole from the previous version), {u['convert']} to convert"
    )


def main() -> int:
    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
