"""Planner: the one pod per run that lists the source, groups it into samples and writes the plan.

Run as `python -m sharded_dataset_operator.converter.planner` with the converter's environment
(`SDS_CONVERTER_CONFIG`, `AIS_ENDPOINT`, optionally `AIS_AUTHN_TOKEN`).

The listing is streamed once: each file is classified (`samples.Grouper`) and accepted files become sortable
records, as do the label table's entries (also streamed). An external sort (runs spilled to the output bucket,
deleted afterwards) brings each key's records together, every key is judged, and the complete samples are
written in key order as plan chunks, then the manifest (`plan.py`). Memory is the sort buffer and a chunk,
whatever the dataset size. The manifest is written last, so its presence means the plan is complete; a
rerun rewrites the same objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from .. import naming, plan
from ..clients.ais import Ais, ListingError
from ..extsort import ExternalSorter
from ..samples import FieldRule, Grouper, LabelRule, groups_from_records, label_entries, label_record
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
        for group in groups_from_records(sorter.sorted(), grouper.names):
            sample = grouper.judge(group)
            if sample is not None:
                writer.add(sample)
        writer.finish()
    finally:
        sorter.close()
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
    return (
        f"planned {manifest['samples']} samples from {manifest['filesListed']} files "
        f"({manifest['listPages']} listing pages, {sum(manifest['skipped'].values())} skipped) "
        f"in {manifest['seconds']:.1f}s"
    )


def main() -> int:
    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
