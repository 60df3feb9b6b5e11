"""Converter worker: one pod of the Indexed Job converts its slice of the plan into tar shards.

Run as `python -m sharded_dataset_operator.pods.converter` with `SDS_CONVERTER_CONFIG` (JSON, built by
`builders.converter_config`), `JOB_COMPLETION_INDEX`, `AIS_ENDPOINT` and optionally `AIS_AUTHN_TOKEN`.

The planner has already listed and grouped the source (`planner.py`); worker `i` of `W` reads the plan's
manifest and streams only the chunks holding its samples ``[i*N//W, (i+1)*N//W)``. Raw files are read in
batches (Get-Batch, `reads.py`) with a bounded read-ahead sized from the pod's memory limit, shards are built
in memory and uploaded whole by one background upload, so memory stays near two shards plus the read-ahead
whatever the dataset size. Shard names and tar metadata are fixed, so a retried or rerun worker rewrites
byte-identical objects. Every few seconds the worker publishes a small progress object; it finishes by
writing its report (what it wrote, with member totals for verification), which is what the operator counts.

Exit codes: 0 done; 2 a permanent problem (the Job's podFailurePolicy fails the index at once); 75 AIS was
unreachable (ignored by the podFailurePolicy: a fresh pod resumes without spending a retry); 1 anything
else (retried by the Job up to `backoffLimitPerIndex`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sharded_dataset_operator.clients.ais import Ais, EtlObjectError, MissingObject
from sharded_dataset_operator.core import naming, plan, units
from sharded_dataset_operator.core.builders import ORDER_MEMBER, order_rank
from sharded_dataset_operator.core.samples import Sample
from sharded_dataset_operator.core.verify import Totals
from sharded_dataset_operator.pods.common import PermanentError, SourceChanged, make_source, run_main
from sharded_dataset_operator.pods.progress import PROGRESS_INTERVAL, Progress, resume_point
from sharded_dataset_operator.pods.reads import Failed, FetchFailed, ReadPlan, Through, Vanished, read_samples
from sharded_dataset_operator.pods.sources import READS_BATCH, Source
from sharded_dataset_operator.pods.tarshard import FinishedShard, ShardCutter, encode_sample
from sharded_dataset_operator.pods.transforms import DROPPED, Skip, Transformer

log = logging.getLogger("sds.converter")

MiB = 1024 * 1024
RUNTIME_BYTES = 80 * MiB  # interpreter, libraries, connection buffers (measured ~60 MiB RSS idle)
MIN_READAHEAD = 4 * MiB
MAX_READAHEAD = 64 * MiB
CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
UNLIMITED = 1 << 60
SKIP_EXAMPLES = 5
FP_MOD = units.FINGERPRINT_MOD
ETL_ERROR = "ais-etl-error"  # skip reason: the AIS ETL failed on the sample's member
FAIL_FAST_SAMPLES = 100  # a transform that raised on each of a worker's first 100 samples is broken: stop


@dataclass
class Report:
    worker: int
    workers: int
    generation: int
    partition: int = 0
    consumed: int = 0  # plan samples done: written or skipped by the transform
    written: int = 0
    total_bytes: int = 0
    shards: list[dict[str, Any]] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    read_mode: str = ""
    batch_requests: int = 0
    object_requests: int = 0
    files_read: int = 0
    readahead_bytes: int = 0
    resumed_shards: int = 0
    resumed_consumed: int = 0
    seconds: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)  # transform skips by reason
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    first_error: str = ""
    plan_fingerprint: int = 0  # of the units finished (`units.Unit.fingerprint`)

    def skip(self, reason: str, n: int = 1, key: str = "", detail: str = "") -> None:
        self.skipped[reason] += n
        if key and len(self.skip_examples.setdefault(reason, [])) < SKIP_EXAMPLES:
            self.skip_examples[reason].append(key)
        if detail and not self.first_error:
            self.first_error = f"{key}: {detail}"[:500]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "worker": self.worker,
                "workers": self.workers,
                "generation": self.generation,
                "partitionSamples": self.partition,
                "written": self.written,
                "bytes": self.total_bytes,
                "shards": self.shards,
                **self.totals.to_dict(),
                "reads": {
                    "mode": self.read_mode,
                    "batchRequests": self.batch_requests,
                    "objectRequests": self.object_requests,
                    "files": self.files_read,
                    "readaheadBytes": self.readahead_bytes,
                },
                "resumedShards": self.resumed_shards,
                "seconds": round(self.seconds, 3),
                "consumed": self.consumed,
                "skippedByReason": dict(sorted(self.skipped.items())),
                "skipExamples": self.skip_examples,
                "firstTransformError": self.first_error,
                "planFingerprint": self.plan_fingerprint,
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


def memory_limit() -> int | None:
    """The container's cgroup memory limit in bytes, None when unlimited or unknown."""
    for path in CGROUP_MEMORY_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        return int(text) if text.isdigit() and int(text) < UNLIMITED else None
    return None


def read_plan(config: dict[str, Any], limit: int | None) -> ReadPlan:
    """Batch limits from the config; the read-ahead from what the memory limit leaves after the shards.

    A worker holds the shard being built, its joined copy while it is cut and the one uploading (3 shards),
    the runtime, and the read-ahead. A limit that cannot fit that with the minimum read-ahead is a permanent
    error naming the numbers, not an OOM-kill loop.
    """
    reads = config.get("reads") or {}
    shard = int(config["output"].get("maxBytes") or 0) or 64 * MiB
    readahead = MAX_READAHEAD
    if limit is not None:
        spare = limit - 3 * shard - RUNTIME_BYTES
        if spare < MIN_READAHEAD:
            need = (3 * shard + RUNTIME_BYTES + MIN_READAHEAD) // MiB + 1
            raise PermanentError(
                f"memory limit {limit // MiB}Mi is too small for shards of {shard // MiB}Mi: "
                f"a converter needs at least {need}Mi (3 shards + runtime + read-ahead); raise "
                "spec.conversion.resources.limits.memory or lower spec.output.maxShardSize"
            )
        readahead = max(MIN_READAHEAD, min(MAX_READAHEAD, spare // 2))
    if str(reads.get("mode") or READS_BATCH) == READS_BATCH:
        return ReadPlan(
            batch_objects=int(reads.get("batchObjects") or 2048),
            batch_bytes=min(int(reads.get("batchBytes") or 8 * MiB), readahead),
            batches_in_flight=3,
            readahead_bytes=readahead,
        )
    # one GET per file: small batches, many in flight
    return ReadPlan(
        batch_objects=4, batch_bytes=min(8 * MiB, readahead), batches_in_flight=16, readahead_bytes=readahead
    )


def load_manifest(ais: Ais, out: dict[str, Any], generation: int) -> dict[str, Any]:
    data = ais.get(out["bucket"], naming.plan_manifest_name(str(out["base"])), out["provider"])
    if data is None:
        raise RuntimeError("the plan is missing (the planner has not finished?)")
    manifest: dict[str, Any] = json.loads(data)
    if manifest.get("kind") != plan.PLAN_KIND or int(manifest.get("generation", -1)) != generation:
        raise PermanentError(
            f"plan {naming.plan_manifest_name(str(out['base']))} is not a {plan.PLAN_KIND} of generation {generation}"
        )
    return manifest


def my_units(ais: Ais, out: dict[str, Any], manifest: dict[str, Any], workers: int, index: int) -> list[units.Unit]:
    """The units to convert that are this worker's share, in plan order (the unit table is streamed)."""
    table = manifest.get("units") or {}
    first, last = units.assigned(int(table.get("convert") or 0), workers, index)
    mine: list[units.Unit] = []
    position = 0
    for name in table.get("chunks") or []:
        data = ais.get(out["bucket"], name, out["provider"])
        if data is None:
            raise plan.PlanError(f"plan unit table {name} is missing")
        for line in data.decode("utf-8").splitlines():
            unit, kind = units.Unit.parse(line)
            if kind != units.CONVERT:
                continue
            if first <= position < last:
                mine.append(unit)
            position += 1
    if position != int(table.get("convert") or 0):
        raise plan.PlanError(f"the unit table lists {position} units to convert, the manifest says {table['convert']}")
    return mine


def convert_stream(manifest: dict[str, Any], name: str = "") -> dict[str, Any]:
    """The samples a unit of convert stream `name` (its split, "" without splits) is cut from (the plan, or the
    samples not taken over), in the form `plan.read_range` reads."""
    streams = (manifest.get("units") or {}).get("streams") or {}
    if name not in streams:
        raise plan.PlanError(f"the plan has no convert stream {name!r}")
    return {
        "samples": int(streams[name]["samples"]),
        "chunkSamples": manifest["chunkSamples"],
        "chunks": streams[name]["chunks"],
    }


def runs(todo: list[units.Unit]) -> Iterator[list[units.Unit]]:
    """Units adjacent in one convert stream, grouped, so that each group is read as one stream."""
    group: list[units.Unit] = []
    for unit in todo:
        if group and (group[-1].stream != unit.stream or group[-1].start + group[-1].count != unit.start):
            yield group
            group = []
        group.append(unit)
    if group:
        yield group


def etl_through(config: dict[str, Any], ais: Ais) -> Through | None:
    """With `spec.transform.aisEtl`: the member's raw objects are read through the AIS ETL (the transform runs
    in the ETL pod next to the target holding each object), not by the batch read."""
    etl = config.get("aisEtl")
    if not etl:
        return None
    src = config["source"]
    bucket, provider, prefix, name = src["bucket"], src["provider"], src.get("prefix", ""), str(etl["name"])

    def fetch(path: str) -> bytes:
        try:
            return ais.get_through_etl(bucket, prefix + path, name, provider)
        except EtlObjectError as e:
            raise FetchFailed(str(e)) from e
        except MissingObject as e:
            raise Vanished(f"{provider}://{bucket}/{prefix}{path} disappeared during conversion") from e

    return Through(member=str(etl["member"]), fetch=fetch)


def convert(
    config: dict[str, Any],
    index: int,
    ais: Ais,
    source: Source,
    limit: int | None = None,
    progress_interval: float = PROGRESS_INTERVAL,
) -> Report:
    started = time.monotonic()
    workers = int(config["workers"])
    generation = int(config["generation"])
    out = config["output"]
    pool = str(out["pool"])
    report = Report(worker=index, workers=workers, generation=generation)
    rp = read_plan(config, limit)
    report.readahead_bytes = rp.readahead_bytes
    manifest = load_manifest(ais, out, generation)
    todo = my_units(ais, out, manifest, workers, index)
    report.partition = sum(u.count for u in todo)
    log.info(
        "worker %d/%d: %d units (%d samples) of %d to convert; read-ahead %d MiB",
        index,
        workers,
        len(todo),
        report.partition,
        int(manifest["units"]["convert"]),
        rp.readahead_bytes // MiB,
    )

    def chunk_lines(name: str) -> Iterator[str]:
        data = ais.get(out["bucket"], name, out["provider"])
        if data is None:
            raise plan.PlanError(f"plan chunk {name} is missing")
        return iter(data.decode("utf-8").splitlines())

    through = etl_through(config, ais)
    transformer = Transformer.from_config(config.get("transform"))
    order_seed = config.get("orderSeed")
    sink = ShardSink(ais, out["bucket"], out["provider"])
    progress = Progress(ais, out, index, generation, report.partition, progress_interval)

    def account(record: dict[str, Any], resumed: bool = False) -> None:
        report.shards.append(record)
        if record.get("last"):
            report.plan_fingerprint = (report.plan_fingerprint + int(record.get("planFingerprint") or 0)) % FP_MOD
        report.written += int(record["samples"])
        report.consumed += int(record.get("consumed") or 0)
        for reason, n in (record.get("skipped") or {}).items() if resumed else ():
            report.skip(reason, int(n))  # counted as they happened by the attempt that recorded the shard
        report.total_bytes += int(record["bytes"])
        report.totals.merge(Totals.from_dict(record))

    finished_units = set()
    for record in resume_point(ais, out, index, generation):
        account(record, resumed=True)
        finished_units.add(record["unit"])
    report.resumed_shards = len(report.shards)
    report.resumed_consumed = report.consumed
    if report.resumed_shards:
        log.info("worker %d: resuming after %d finished units (%d samples)", index, len(finished_units), report.written)
    todo = [u for u in todo if u.id not in finished_units]
    done = report.consumed
    pending_bytes = report.total_bytes
    transform_errors = 0

    def emit(unit: units.Unit, part: int, shard: FinishedShard, totals: Totals, skips: Counter[str] | None) -> None:
        """Upload part `part` of `unit`; `skips` (the unit's transform skips) only with its last part."""
        name = naming.unit_shard_name(pool, unit.id, part)
        sink.submit(name, shard.data)  # returns once the previous shard's upload finished
        durable = list(report.shards)
        last = skips is not None
        record: dict[str, Any] = {
            "name": name,
            "unit": unit.id,
            "part": part,
            "last": last,
            "samples": shard.samples,
            "bytes": len(shard.data),
            "consumed": unit.count if last else 0,
            "firstKey": shard.keys[0],
            "lastKey": shard.keys[-1],
            **totals.to_dict(),
        }
        if last:
            record["planFingerprint"] = unit.fingerprint
        if unit.stream:
            record["split"] = unit.stream
        if transformer is not None or through is not None:
            record["skipped"] = dict(sorted((skips or {}).items()))
        account(record)
        progress.tick(report.consumed, report.total_bytes, durable, force=True)

    def members_of(sample: Sample, members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]] | Skip:
        """The sample's members as they go into the shard (values, transform, order), or why it is skipped."""
        for (name, raw), (_, data) in zip(sample.files, members, strict=True):
            if isinstance(data, Failed):
                return Skip(ETL_ERROR, data.reason)
            if through is not None and name == through.member:
                continue  # what the ETL made of it
            if len(data) != raw.size:
                raise SourceChanged(
                    f"{raw.path} is {len(data)} bytes but was {raw.size} when the source was listed: the source "
                    "changed during the run; change the spec (or recreate the resource) to rerun"
                )
        members.extend((name, value.encode()) for name, value in sample.values)
        if transformer is not None:
            outcome = transformer.apply(sample.key, members)
            if isinstance(outcome, Skip):
                return outcome
            members = outcome
        if order_seed is not None:
            members.append((ORDER_MEMBER, str(order_rank(order_seed, sample.key)).encode()))
        return members

    try:
        for group in runs(todo):
            reads = read_samples(
                plan.read_range(
                    convert_stream(manifest, group[0].stream),
                    group[0].start,
                    group[-1].start + group[-1].count,
                    chunk_lines,
                ),
                source.read_many,
                rp,
                through,
            )
            for unit in group:
                cutter = ShardCutter(out.get("maxSamples"), out.get("maxBytes"))
                pending, part, skips = Totals(), 0, Counter[str]()
                for _ in range(unit.count):
                    sample, raw_members = next(reads)
                    done += 1
                    outcome = members_of(sample, raw_members)
                    if isinstance(outcome, Skip):
                        report.skip(outcome.reason, key=sample.key, detail=outcome.detail)
                        skips[outcome.reason] += 1
                        transform_errors += outcome.reason != DROPPED
                        if transform_errors == done - report.resumed_consumed == FAIL_FAST_SAMPLES:
                            raise PermanentError(
                                f"the transform failed on each of the first {FAIL_FAST_SAMPLES} samples; first "
                                f"error (sample {report.first_error})"
                            )
                        progress.tick(done, pending_bytes, report.shards[:-1])
                        continue
                    encoded = encode_sample(sample.key, outcome)
                    finished = cutter.add(sample.key, encoded)
                    if finished is not None:  # the unit outgrew a shard (a transform made it larger): a part
                        emit(unit, part, finished, pending, None)
                        part += 1
                        pending = Totals()
                    for name, data in outcome:
                        pending.add(f"{sample.key}.{name}", len(data))
                    pending_bytes += len(encoded)
                    progress.tick(done, pending_bytes, report.shards[:-1])
                tail = cutter.finish()
                if tail is not None:
                    emit(unit, part, tail, pending, skips)
                else:  # the transform dropped every sample of the unit: nothing to keep or reuse
                    report.consumed += unit.count
                    report.plan_fingerprint = (report.plan_fingerprint + unit.fingerprint) % FP_MOD
            close = getattr(reads, "close", None)
            if close is not None:
                close()  # the group's stream is used up: let its read-ahead pool go
    finally:
        sink.close()

    source_reads = getattr(source, "reads", None)
    if source_reads is not None:
        report.batch_requests, report.object_requests, report.files_read = (
            source_reads.batch_requests,
            source_reads.object_requests,
            source_reads.files,
        )
    report.read_mode = str(getattr(source, "mode", "file"))
    report.seconds = time.monotonic() - started
    progress.tick(done, report.total_bytes, report.shards, force=True)
    ais.put(out["bucket"], naming.report_name(str(out["base"]), index), report.to_json(), out["provider"])
    return report


def run(config: dict[str, Any], index: int, ais: Ais) -> str:
    report = convert(config, index, ais, make_source(config, ais), memory_limit())
    return (
        f"worker {index}: {report.written} samples in {len(report.shards)} shards, "
        f"{report.total_bytes / 2**20:.1f} MiB in {report.seconds:.1f}s "
        f"({report.batch_requests} batch and {report.object_requests} single reads)"
    )


def main() -> int:
    return run_main(run, progress=True)


if __name__ == "__main__":
    raise SystemExit(main())
