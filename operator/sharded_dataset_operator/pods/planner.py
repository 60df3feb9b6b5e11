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
from sharded_dataset_operator.core.fingerprint import ListingFingerprint
from sharded_dataset_operator.core.layout import Layout, from_config
from sharded_dataset_operator.core.samples import (
    FieldRule,
    Grouper,
    GroupResult,
    LabelRule,
    Sample,
    SplitRule,
    groups_from_records,
    label_entries,
    split_record,
    value_record,
)
from sharded_dataset_operator.pods.assembly import (
    UNIT_CHUNK,
    Assembler,
    previous_members,
    previous_units,
    reusable_units,
)
from sharded_dataset_operator.pods.common import PermanentError, SourceMissing, make_source, run_main
from sharded_dataset_operator.pods.forked import Forked
from sharded_dataset_operator.pods.metadata import MetadataError, table_records
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


def rules(config: dict[str, Any]) -> tuple[list[FieldRule], LabelRule | None, list[str], Layout]:
    """The grouping rules of a converter configuration: fields, the label table, required members, layout."""
    fields = [FieldRule(pattern=f["pattern"], name=f["name"]) for f in config["fields"]]
    label = None
    if config.get("labels"):
        lr = config["labels"]
        label = LabelRule(
            path=lr["path"], key_column=int(lr["keyColumn"]), value_column=int(lr["valueColumn"]), name=lr["name"]
        )
    return fields, label, list(config["required"]), from_config(config)


def split_rule(config: dict[str, Any]) -> SplitRule | None:
    """The split lists of the configuration (`builders.converter_config`), if the dataset has list splits."""
    sp = config.get("splits")
    if not sp or fraction_splits(config) is not None:
        return None
    sets = list(sp["sets"])
    by_folder = bool(sets) and bool(sets[0].get("folder"))
    member = sp.get("member") or None
    return SplitRule(
        names=tuple(str(x["name"]) for x in sets),
        paths=() if by_folder or member else tuple(str(x["listFile"]) for x in sets),
        key_column=int(sp.get("keyColumn") or 0),
        rest=sp.get("rest") or None,
        folders=tuple(str(x["folder"]) for x in sets) if by_folder else (),
        member=member,
        values=tuple(str(x["value"]) for x in sets) if member else (),
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
    if sp.get("member"):  # only when set: digests of datasets from before member splits stay the same
        relevant["member"] = sp["member"]
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
            cls = (sample.value(str(sp["stratifyBy"])) or "") if stratify else ""
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


def previous_classes(ais: Ais, out: dict[str, Any]) -> dict[str, int]:
    """The class indexes the version this one replaces gave (every class it ever numbered), so that no class
    is renumbered. Fails closed: a previous plan that cannot be read is retried, never taken for "no classes"
    (that would renumber every class a training job knows)."""
    name = out.get("previous")
    if not name:
        return {}
    data = ais.get(out["bucket"], str(name), out["provider"])
    if data is None:
        raise RuntimeError(f"the previous version's plan {name} cannot be read: its class indexes are needed")
    return {str(k): int(v) for k, v in (json.loads(data).get("classes") or {}).items()}


def make_plan(
    config: dict[str, Any],
    ais: Ais,
    source: Source,
    *,
    sort_buffer_bytes: int = 8 * 1024 * 1024,
    chunk_samples: int = plan.CHUNK_SAMPLES,
    reader: Callable[[], Ais] | None = None,
) -> dict[str, Any]:
    """List, group and write the plan; returns the manifest (also written as `plan.json`).

    `reader`: a new client, for a forked process that merges, groups and judges the sorted records while this
    one writes (`forked.py`); without it, one process does both."""
    started = time.monotonic()
    out = config["output"]
    base = str(out["base"])
    fields, label, required, shape = rules(config)
    splits = split_rule(config)
    grouper = Grouper(fields, label, required, splits, shape)
    rows: Counter[str] = Counter()
    store = AisRunStore(ais, out["bucket"], out["provider"])
    sorter = ExternalSorter(store, naming.plan_run_prefix(base), buffer_bytes=sort_buffer_bytes)
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
    listing = ListingFingerprint()
    old_lines = previous_members(ais, out)
    diff = reuse.KeyDiff(old_lines) if old_lines is not None else None
    walk = reuse.MembershipWalk(old_members(), previous[0]) if previous is not None else None
    assembler = (
        None
        if walk is not None
        else Assembler(ais, out, config, layout, known, bool(config.get("splits")), chunk_samples)
    )
    forked: Forked[plan.SampleParts, units.Planned, GroupResult] | None = None
    try:
        try:
            for raw in source.files():
                listing.add(raw.path, raw.size, raw.tag)
                for file_record in grouper.records(raw):
                    sorter.add(file_record)
        except SourceError as e:
            raise SourceMissing(str(e)) from e
        listed = source.listing.files
        if label is not None:
            lines = source.lines(label.path)
            if lines is None and listed:  # an emptied source has no labels either: an empty plan (NoSamples)
                raise PermanentError(f"labels file {label.path} not found in {source.describe()}")
            for entry in label_entries(lines if lines is not None else (), label.key_column, label.value_column):
                record = None if entry is None else value_record(entry[0], label.name, entry[1])
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
        for meta in shape.tables:
            stream = source.open_file(meta.path)
            if stream is None:
                if listed:
                    raise PermanentError(f"metadata table {meta.path} not found in {source.describe()}")
                continue
            with stream:
                try:
                    for value in table_records(grouper, meta, stream, rows, store, base, sort_buffer_bytes):
                        sorter.add(value)
                except MetadataError as e:
                    raise PermanentError(str(e)) from e
        if shape.classes is not None:
            grouper.number_classes(previous_classes(ais, out))
        writer = plan.ChunkWriter(put, base, chunk_samples)
        with_order = config.get("orderSeed") is not None

        def produce(client: Ais) -> Iterator[plan.SampleParts]:
            """The judged samples in key order, read with `client` (this process's or the producer's)."""
            runs = AisRunStore(client, out["bucket"], out["provider"])
            sorter.store = runs
            judged: Iterator[Sample] = (
                s for g in groups_from_records(sorter.sorted(), grouper.names) if (s := grouper.judge(g))
            )
            shares = fraction_splits(config)
            if shares is not None:
                before = previous_splits(client, out, splits_digest(config))
                judged = assign_fractions(judged, shares, runs, base, sort_buffer_bytes, before)
            return (plan.sample_parts(s) for s in judged)

        def planned(parts: plan.SampleParts) -> units.Planned:
            return units.planned_parts(parts, with_order)

        if reader is not None:
            forked = Forked(lambda: produce(reader()), planned, grouper.finish)
        for p in map(planned, produce(ais)) if forked is None else forked:
            writer.add_line(p.line, p.members, p.bytes)
            line_digest = units.line_digest(p.line)
            fingerprint = (fingerprint + line_digest) % units.FINGERPRINT_MOD
            if diff is not None:
                diff.see(p.key, p.split)
            if walk is not None:  # first the old units' fate; the units are made below
                walk.match(p.key, line_digest)
            else:
                assert assembler is not None
                assembler.convert(p, line_digest)
        writer.finish()
    finally:
        if forked is not None:
            forked.close()  # before its runs go: a failure here leaves no producer reading them
        sorter.store = store  # the runs are deleted by this process's client
        sorter.close()
    result = grouper.finish() if forked is None else forked.result
    assert result is not None
    if result.split_overlaps:
        r = result
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
                    assembler.convert(units.planned(sample, with_order, line), line_digest)
    assert assembler is not None
    assembler.finish()
    table = assembler.table
    reused = table.reused_report(config)
    ais.put(out["bucket"], naming.reused_name(base), json.dumps(reused, sort_keys=True).encode(), out["provider"])
    manifest: dict[str, Any] = {
        "kind": plan.PLAN_KIND,
        "generation": int(config["generation"]),
        "listingDigest": hashlib.sha256(listing.value().encode()).hexdigest()[:16],  # of the fingerprint
        "sourceFingerprint": listing.value(),
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
        "valuesWithoutFiles": result.values_without_files,
        "rows": dict(sorted({**rows, **({"no-file": n} if (n := result.values_without_files) else {})}.items())),
        "classes": result.classes or None,
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
            "previousUnits": len(previous[0].units) if previous is not None else None,
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
        manifest = make_plan(config, ais, source, reader=ais.fresh)
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
