"""Converter worker: one pod of the Indexed Job converts its partition of the raw samples into tar shards.

Run as `python -m sharded_dataset_operator.converter.main` with `SDS_CONVERTER_CONFIG` (JSON, built by
`builders.converter_config`), `JOB_COMPLETION_INDEX`, `AIS_ENDPOINT` and optionally `AIS_AUTHN_TOKEN`.

Every worker lists the whole source (sorted), groups it into samples with the same rules, and takes the
contiguous slice `partition(keys, workers, index)` of the complete samples, so the partitioning is
deterministic and needs no coordination. Members are fetched by a small thread pool with a byte-bounded
read-ahead, shards are built in memory and uploaded whole by one background upload, so memory stays near two
shards whatever the dataset size, and nothing touches the local disk. Shard names and tar metadata are
fixed, so a retried or rerun worker rewrites byte-identical objects. The worker finishes by writing its
report object, which is what the operator counts.

Exit codes: 0 done; 2 a permanent problem (the Job's podFailurePolicy fails the index at once); 1 anything
else (retried by the Job up to `backoffLimitPerIndex`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import naming
from ..builders import CONFIG_ENV, EXIT_PERMANENT, ORDER_MEMBER, order_rank
from ..clients.ais import Ais
from ..samples import FieldRule, LabelRule, Sample, group_samples, parse_labels, partition
from .sources import AisSource, Source, SourceError, VolumeSource
from .tarshard import FinishedShard, ShardCutter, encode_sample

log = logging.getLogger("sds.converter")
TERMINATION_LOG = "/dev/termination-log"


class PermanentError(Exception):
    """A problem a retry cannot fix (bad source, bad labels file)."""


@dataclass
class Tuning:
    fetch_threads: int = 16
    readahead_bytes: int = 64 * 1024 * 1024
    readahead_samples: int = 512


@dataclass
class Report:
    worker: int
    workers: int
    generation: int
    listing_digest: str = ""
    partition: int = 0
    written: int = 0
    total_bytes: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    rejected_files: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    unmatched_files: int = 0
    labels_without_files: int = 0
    seconds: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "worker": self.worker,
                "workers": self.workers,
                "generation": self.generation,
                "listingDigest": self.listing_digest,
                "partitionSamples": self.partition,
                "written": self.written,
                "bytes": self.total_bytes,
                "shards": self.shards,
                # dataset-wide counts, identical in every worker's report
                "skipped": self.skipped,
                "rejectedFiles": self.rejected_files,
                "examples": self.examples,
                "unmatchedFiles": self.unmatched_files,
                "labelsWithoutFiles": self.labels_without_files,
                "seconds": round(self.seconds, 3),
            },
            sort_keys=True,
            indent=1,
        ).encode()


class ShardSink:
    """Uploads finished shards one at a time in the background (at most one upload in flight)."""

    def __init__(self, ais: Ais, bucket: str, provider: str) -> None:
        self.ais, self.bucket, self.provider = ais, bucket, provider
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self.pending: Future[None] | None = None

    def submit(self, name: str, data: bytes) -> None:
        self.wait()
        self.pending = self.pool.submit(self.ais.put, self.bucket, name, data, self.provider)

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def close(self) -> None:
        self.wait()
        self.pool.shutdown()


def _fetch_sample(
    source: Source, sample: Sample, label_name: str | None, order_seed: str | None
) -> list[tuple[str, bytes]]:
    members: list[tuple[str, bytes]] = []
    for name, raw in sample.files:
        data = source.read(raw.path)
        if data is None:
            raise RuntimeError(f"{raw.path} disappeared during conversion")
        members.append((name, data))
    if label_name is not None and sample.label is not None:
        members.append((label_name, sample.label.encode()))
    if order_seed is not None:
        members.append((ORDER_MEMBER, str(order_rank(order_seed, sample.key)).encode()))
    return members


def _prefetch(
    source: Source, samples: list[Sample], label_name: str | None, order_seed: str | None, tuning: Tuning
) -> Iterator[tuple[Sample, list[tuple[str, bytes]]]]:
    """Fetch samples concurrently, yield them in order; bounded by bytes and count in flight."""
    with ThreadPoolExecutor(max_workers=tuning.fetch_threads, thread_name_prefix="fetch") as pool:
        window: deque[tuple[Sample, int, Future[list[tuple[str, bytes]]]]] = deque()
        in_flight = 0
        it = iter(samples)
        exhausted = False
        while True:
            while not exhausted and (
                not window or (in_flight < tuning.readahead_bytes and len(window) < tuning.readahead_samples)
            ):
                nxt = next(it, None)
                if nxt is None:
                    exhausted = True
                    break
                size = sum(f.size for _, f in nxt.files)
                window.append((nxt, size, pool.submit(_fetch_sample, source, nxt, label_name, order_seed)))
                in_flight += size
            if not window:
                return
            sample, size, fut = window.popleft()
            in_flight -= size
            yield sample, fut.result()


def convert(config: dict[str, Any], index: int, ais: Ais, source: Source, tuning: Tuning | None = None) -> Report:
    tuning = tuning or Tuning()
    started = time.monotonic()
    workers = int(config["workers"])
    out = config["output"]
    report = Report(worker=index, workers=workers, generation=int(config["generation"]))

    try:
        files = source.list()
    except SourceError as e:
        raise PermanentError(str(e)) from e
    report.listing_digest = hashlib.sha256("\n".join(f"{f.path}\t{f.size}" for f in files).encode()).hexdigest()[:16]

    fields = [FieldRule(pattern=f["pattern"], name=f["name"]) for f in config["fields"]]
    label_rule = None
    labels = None
    if config.get("labels"):
        lr = config["labels"]
        label_rule = LabelRule(
            path=lr["path"],
            key_column=int(lr["keyColumn"]),
            value_column=int(lr["valueColumn"]),
            name=lr["name"],
        )
        text = source.read(label_rule.path)
        if text is None:
            raise PermanentError(f"labels file {label_rule.path} not found in {source.describe()}")
        labels = parse_labels(text.decode("utf-8", errors="replace"), label_rule.key_column, label_rule.value_column)

    grouped = group_samples(files, fields, label_rule, labels, list(config["required"]))
    report.skipped = dict(grouped.skipped)
    report.rejected_files = dict(grouped.rejected_files)
    report.examples = {k: list(v) for k, v in grouped.examples.items()}
    report.unmatched_files = grouped.unmatched_files
    report.labels_without_files = grouped.labels_without_files

    start, end = partition([s.key for s in grouped.samples], workers, index)
    mine = grouped.samples[start:end]
    report.partition = len(mine)
    log.info(
        "worker %d/%d: %d files, %d complete samples, mine [%d, %d)",
        index,
        workers,
        len(files),
        len(grouped.samples),
        start,
        end,
    )

    base = str(out["base"])
    sink = ShardSink(ais, out["bucket"], out["provider"])
    cutter = ShardCutter(out.get("maxSamples"), out.get("maxBytes"))

    def emit(shard: FinishedShard) -> None:
        name = naming.shard_name(base, index, len(report.shards))
        sink.submit(name, shard.data)
        report.shards.append({"name": name, "samples": shard.samples, "bytes": len(shard.data)})
        report.written += shard.samples
        report.total_bytes += len(shard.data)

    try:
        for sample, members in _prefetch(
            source, mine, label_rule.name if label_rule else None, config.get("orderSeed"), tuning
        ):
            done = cutter.add(sample.key, encode_sample(sample.key, members))
            if done is not None:
                emit(done)
        last = cutter.finish()
        if last is not None:
            emit(last)
    finally:
        sink.close()
    report.seconds = time.monotonic() - started
    ais.put(out["bucket"], naming.report_name(base, index), report.to_json(), out["provider"])
    return report


def _terminate(message: str) -> None:
    try:
        with open(TERMINATION_LOG, "w") as f:
            f.write(message[:4000])
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("SDS_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = json.loads(os.environ[CONFIG_ENV])
        index = int(os.environ["JOB_COMPLETION_INDEX"])
        endpoint = os.environ["AIS_ENDPOINT"]
    except (KeyError, ValueError) as e:
        _terminate(f"converter misconfigured: {e}")
        return EXIT_PERMANENT
    ais = Ais(endpoint, os.environ.get("AIS_AUTHN_TOKEN") or None, attempts=5, pool=32)
    src = config["source"]
    source: Source = (
        AisSource(ais, src["bucket"], src["provider"], src.get("prefix", ""))
        if src["kind"] == "ais"
        else VolumeSource(src["root"])
    )
    try:
        report = convert(config, index, ais, source)
    except PermanentError as e:
        log.error("permanent failure: %s", e)
        _terminate(str(e))
        return EXIT_PERMANENT
    except Exception as e:
        log.exception("conversion failed")
        _terminate(f"{type(e).__name__}: {e}")
        return 1
    summary = (
        f"worker {index}: {report.written} samples in {len(report.shards)} shards, "
        f"{report.total_bytes / 2**20:.1f} MiB in {report.seconds:.1f}s"
    )
    log.info(summary)
    _terminate(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
