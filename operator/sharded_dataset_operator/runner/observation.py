"""What a pass observes: the stable and version indexes, Jobs, the plan, reports and progress objects, dSort
jobs, the output listing. JSON objects are read through the bounded cache (`objcache.py`); nothing is
decided here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.ais import (
    Ais,
    ListingError,
    MissingObject,
)
from sharded_dataset_operator.core import (
    builders,
    conversion,
    naming,
    records,
    shuffle,
    versions,
)
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.model import DsortJob
from sharded_dataset_operator.core.observed import Observed, PublishedShard
from sharded_dataset_operator.core.spec import REFRESH_APPEND, DatasetSpec
from sharded_dataset_operator.core.tarmembers import TarFormatError, tar_members
from sharded_dataset_operator.core.verify import OutputTally
from sharded_dataset_operator.core.versions import IndexInfo
from sharded_dataset_operator.runner import objcache
from sharded_dataset_operator.runner.objcache import LimitExceeded, ObjectUnreadable


def find_dsort_attempts(ais: Ais, description: str) -> dict[int, DsortJob]:
    """The generation's dSort jobs by attempt (a live or finished job wins over an aborted one of the same
    attempt, e.g. one aborted while the operator was down)."""
    jobs = [j for j in ais.dsort_find(naming.dsort_regex(description)) if j.description]
    jobs.sort(key=lambda j: (not j.aborted, j.finished))
    return {naming.dsort_attempt(j.description): j for j in jobs}


def read_json(ais: Ais, bucket: str, provider: str, name: str, *, namespace: str = "") -> dict[str, Any] | None:
    """One JSON object (cached by its AIS checksum, for a dataset of `namespace`), or None when it does not
    exist; `ObjectUnreadable` when it exists but is not a JSON object."""
    return objcache.CACHE.read(ais, bucket, provider, name, namespace=namespace).get(name)


def read_index(
    ais: Ais, bucket: str, provider: str, name: str, namespace: str = ""
) -> tuple[dict[str, Any] | None, str | None]:
    """A stable index: (its content, None), or (None, why it is not an index this resource may write)."""
    try:
        return read_json(ais, bucket, provider, name, namespace=namespace), None
    except ObjectUnreadable as e:
        if e.why == objcache.VANISHED:  # listed, then gone: not known to be foreign; the pass waits
            raise
        return None, (f"{provider}://{bucket}/{name} is not a ShardedDataset index ({e.why}); choose another "
                      "output prefix or bucket, or remove that object")  # fmt: skip


def read_published(ais: Ais, spec: DatasetSpec, uid: str, namespace: str = "") -> IndexInfo | None:
    """The version the stable index names, when this resource wrote it."""
    bucket, provider, name = records.index_location(spec)
    return IndexInfo.from_index(read_index(ais, bucket, provider, name, namespace)[0], uid)


def observe_versions(ais: Ais, spec: DatasetSpec, owner: Owner, obs: Observed) -> None:
    """The published version, every recorded version's own index (the versions that were published), and
    what each split's stable index names."""
    bucket, provider, name = records.index_location(spec)
    ns = owner.namespace
    stable, foreign = read_index(ais, bucket, provider, name, ns)
    obs.output_conflict = foreign or versions.index_owner_conflict(stable, owner.namespace, owner.name, owner.uid)
    obs.published = IndexInfo.from_index(stable, owner.uid)
    wanted = records.artifact_record(spec, owner)
    recorded = [*(obs.previous.get("artifacts") or []), wanted]
    if obs.published is not None and obs.published.record:
        recorded.append(obs.published.record)
    for record in recorded:
        index = record.get("index") or {}
        if not index.get("versioned"):
            continue
        where = (str(index["bucket"]), str(index.get("provider") or "ais"), str(index["versioned"]))
        body = read_json(ais, *where, namespace=ns)
        info = IndexInfo.from_index(body, owner.uid)
        if info is None:
            continue
        if info.version == owner.version:
            obs.wanted_index = body
        else:
            obs.version_indexes[info.version] = info
    if not obs.output_conflict:
        observe_split_indexes(ais, spec, owner, obs, wanted)
    appending = spec.shuffle is not None and spec.shuffle.refresh_mode == REFRESH_APPEND
    if appending and obs.published is not None and obs.published.version != owner.version and not foreign:
        obs.published_shards = published_shards(ais, obs.published, stable, ns)


def published_shards(
    ais: Ais, published: IndexInfo, stable: dict[str, Any] | None, namespace: str
) -> dict[str, list[PublishedShard]]:
    """The published version's shards by output ("" or each split), resolved as readers resolve them (relative
    to their index); an output whose index cannot be read is left out (`core.append` then reshuffles it)."""
    out: dict[str, list[PublishedShard]] = {}
    bodies: list[tuple[str, str, dict[str, Any] | None]] = []
    if published.splits:
        for split, entry in sorted(published.splits.items()):
            url = str((entry or {}).get("versionIndex") or "")
            bucket, provider, name = versions.parse_url(url) or ("", "", "")
            body = read_json(ais, bucket, provider, name, namespace=namespace) if name else None
            bodies.append((split, name, body))
    else:
        bodies.append(("", (versions.parse_url(published.index) or ("", "", ""))[2], stable))
    for key, index_name, body in bodies:
        shardlist = (body or {}).get("shardlist")
        if not index_name or not isinstance(shardlist, list):
            continue
        directory = index_name.rsplit("/", 1)[0] + "/" if "/" in index_name else ""
        out[key] = [
            PublishedShard(directory + str(e["url"]), int(e.get("nsamples") or 0), int(e.get("filesize") or 0))
            for e in shardlist
            if isinstance(e, dict) and e.get("url") and "://" not in str(e["url"])
        ]
    return out


def observe_split_indexes(ais: Ais, spec: DatasetSpec, owner: Owner, obs: Observed, wanted: dict[str, Any]) -> None:
    """What each split's stable index names, and the own split indexes of the published version (and of the
    wanted one, once its own index is written) that a split's stable index is behind."""
    bucket, provider, _ = records.index_location(spec)
    targets = [i for i in (obs.published, IndexInfo.from_index(obs.wanted_index, owner.uid)) if i is not None]
    for split, names in (wanted["index"].get("splits") or {}).items():
        body, foreign = read_index(ais, bucket, provider, str(names["stable"]), owner.namespace)
        obs.output_conflict = obs.output_conflict or foreign
        info = IndexInfo.from_index(body, owner.uid)
        obs.split_stables[split] = info.version if info is not None else None
        for target in targets:
            own = ((target.record.get("index") or {}).get("splits") or {}).get(split) or {}
            versioned = str(own.get("versioned") or "")
            if not versioned or obs.split_stables[split] == target.version:
                continue
            source = read_json(ais, bucket, provider, versioned, namespace=owner.namespace)
            if source is not None and IndexInfo.from_index(source, owner.uid) is not None:
                obs.split_sources[(target.version, split)] = source


def by_worker(objects: dict[str, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Reports or progress objects by their worker index; one without a valid index is not a worker's."""
    out: dict[int, dict[str, Any]] = {}
    for body in objects.values():
        worker = body.get("worker") if isinstance(body, dict) else None
        if isinstance(worker, int) and 0 <= worker < 100_000:
            out[worker] = body
    return out


def next_attempt_due(attempts: dict[int, DsortJob]) -> bool:
    """Whether a dSort attempt may start on this pass: none has, or the latest was aborted (the decision then
    starts one unless AIS is rebalancing, which is asked only then)."""
    return not attempts or attempts[max(attempts)].aborted


def observe(ais: Ais, spec: DatasetSpec, owner: Owner, previous: dict[str, Any], dsort: Ais | None = None) -> Observed:
    """What exists for the wanted version; `dsort`: the access dSort jobs are listed with (default `ais`)."""
    obs = Observed(previous=previous)
    gen, ns = owner.generation, owner.namespace
    wants_etl = spec.serve_etl is not None or (spec.transform is not None and spec.transform.ais_etl is not None)
    if wants_etl or previous.get("etl") or previous.get("serve"):
        obs.etls = (dsort or ais).etl_list(naming.etl_prefix(owner.uid))
    observe_versions(ais, spec, owner, obs)
    if obs.output_conflict:
        return obs
    obs.stale_jobs = kube.stale_jobs(owner.namespace, owner.name, owner.version)
    if obs.published is not None and obs.published.version == owner.version:
        out = spec.output.bucket  # serving the wanted version: only the counts are read
        base = builders.converted_base(spec, owner)
        manifest = naming.plan_manifest_name(base)
        obs.plan = objcache.CACHE.read(ais, out.name, out.provider, manifest, sticky=True, namespace=ns).get(manifest)
        obs.reports = by_worker(
            objcache.CACHE.read(ais, out.name, out.provider, naming.report_prefix(base), sticky=True, namespace=ns)
        )
        obs.reused = read_json(ais, out.name, out.provider, naming.reused_name(base), namespace=ns)
        return obs
    out = spec.output.bucket
    base = builders.converted_base(spec, owner)
    manifest = naming.plan_manifest_name(base)
    obs.plan = objcache.CACHE.read(ais, out.name, out.provider, manifest, sticky=True, namespace=ns).get(manifest)
    if obs.plan is None:
        obs.planner = kube.get_job(owner.namespace, naming.job_name(owner.name, owner.version, "plan"), gen)
        if obs.planner is None:
            if spec.source.bucket is not None:
                b = spec.source.bucket
                if not ais.bucket_exists(b.name, b.provider):
                    obs.source_problem = f"source bucket {b.provider}://{b.name} not found"
            elif spec.source.claim_name:
                obs.source_problem = kube.pvc_problem(owner.namespace, spec.source.claim_name)
        return obs
    obs.job = kube.get_job(owner.namespace, naming.job_name(owner.name, owner.version), gen)
    warming = previous.get("prefetch") or {}
    if spec.source.prefetch and obs.job is None and warming.get("jobId") and not warming.get("finishedAt"):
        obs.prefetch = ais.job_status(str(warming["jobId"]))
    obs.reports = by_worker(
        objcache.CACHE.read(ais, out.name, out.provider, naming.report_prefix(base), sticky=True, namespace=ns)
    )
    reused = naming.reused_name(base)
    obs.reused = objcache.CACHE.read(ais, out.name, out.provider, reused, sticky=True, namespace=ns).get(reused)
    converted = len(obs.reports) == conversion.converter_workers(spec, obs.plan)
    if obs.job is not None and not converted:
        obs.progress = by_worker(
            objcache.CACHE.read(ais, out.name, out.provider, naming.progress_prefix(base), namespace=ns)
        )
    if converted and spec.shuffle is not None and spec.splits is None:
        obs.dsort_attempts = find_dsort_attempts(
            dsort or ais, naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.version)
        )
        # The proxy lists the jobs of the targets that answer. While a target in its map does not answer, the
        # object listing above has already failed (the pass waits as an outage), so a job missing here is gone.
        lost = shuffle.lost_dsort_attempt(previous, shuffle.own_record(previous, None, gen, owner.version),
                                          obs.dsort_attempts)  # fmt: skip
        if lost is not None:
            obs.capacity_problems = tuple((dsort or ais).capacity_problems())
        if lost is not None or next_attempt_due(obs.dsort_attempts):
            obs.rebalancing = tuple((dsort or ais).running_rebalances())
    elif converted and spec.shuffle is not None and spec.splits is not None:
        due = False
        for split in spec.splits.names:
            desc = naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.version, split=split)
            obs.split_attempts[split] = find_dsort_attempts(dsort or ais, desc)
            record = shuffle.own_record(previous, split, gen, owner.version)
            lost = shuffle.lost_dsort_attempt(previous, record, obs.split_attempts[split], split=split)
            if lost is not None and not obs.capacity_problems:
                obs.capacity_problems = tuple((dsort or ais).capacity_problems())
            due = due or lost is not None or next_attempt_due(obs.split_attempts[split])
        if due:
            obs.rebalancing = tuple((dsort or ais).running_rebalances())
    return obs


VERIFY_THREADS = 2
"""Shards counted at once by the verifier."""

VERIFY_CHUNK = 1 << 20
"""Bytes per read of a shard's stream."""


def tally_output(
    ais: Ais,
    bucket: str,
    provider: str,
    prefix: str,
    only: frozenset[str] | None = None,
    *,
    from_bytes: bool = False,
) -> OutputTally:
    """Count the output shards under `prefix` into per-shard counters (never a list of members): the shards, their
    sizes and checksums from a plain listing, then each shard's members, `VERIFY_THREADS` shards at once, merged
    in name order. `from_bytes` (`verify.counted_from_bytes`): from the shard's bytes, read as a stream and
    counted from its tar headers (`tarmembers`); otherwise from AIS's archive listing of that shard alone.

    `only`: the shards to count among others under the prefix (a version's converted shards, without shuffle).
    A shard gone or changed between the listing and its count fails the listing, never counts as empty; a shard
    that reads whole but is not a whole tar archive is a problem of the tally (verification fails, naming it).
    """
    listed: list[tuple[str, int, str]] = []
    for page in ais.list_pages(bucket, provider, prefix, props="name,size,checksum"):
        for e in page:
            if e.name.endswith(".tar") and (only is None or e.name in only):
                listed.append((e.name, int(e.size or 0), str(e.checksum or "")))
                if len(listed) > objcache.MAX_LISTED:  # stop listing: a tenant's prefix must not fill our memory
                    raise LimitExceeded(
                        f"more than {objcache.MAX_LISTED} output shards under {provider}://{bucket}/{prefix}"
                    )
    listed.sort()
    checksum_type = ais.checksum_type(bucket, provider)

    def one_shard(shard: tuple[str, int, str]) -> OutputTally:
        name, size, checksum = shard
        part = OutputTally(name)
        part.add(name, size, {"type": checksum_type, "value": checksum} if checksum else None)
        (_count_from_bytes if from_bytes else _count_from_listing)(ais, bucket, provider, name, size, part)
        return part

    tally = OutputTally(prefix, only)
    with ThreadPoolExecutor(max(1, min(VERIFY_THREADS, len(listed))), thread_name_prefix="verify") as pool:
        for part in pool.map(one_shard, listed):
            tally.merge(part)
    counted = ais.object_count(bucket, provider, prefix)  # a second look: a listing cut short by a target down
    if (counted != len(tally.shards)) if only is None else (counted < len(tally.shards)):
        raise ListingError(
            f"listing {provider}://{bucket}/{prefix} returned {len(tally.shards)} shards "
            f"but the cluster counts {counted}"
        )
    return tally


def _count_from_bytes(ais: Ais, bucket: str, provider: str, name: str, size: int, part: OutputTally) -> None:
    """A shard's members from its tar headers as its bytes stream by; its bytes read must be its listed size."""
    read = 0

    def chunks() -> Iterator[bytes]:
        nonlocal read
        for chunk in ais.stream_chunks(bucket, name, provider, chunk_size=VERIFY_CHUNK):
            read += len(chunk)
            yield chunk

    stream = chunks()
    try:
        part.add_members(name, tar_members(stream))
    except MissingObject:
        raise ListingError(f"{provider}://{bucket}/{name} was listed but is gone") from None
    except TarFormatError as e:
        for _ in stream:  # read to the end: a shard cut short or replaced is a listing error, not a problem
            pass
        if read == size:
            part.problem(f"{name} is not a whole tar archive: {e}")
            return
    if read != size:
        raise ListingError(f"{provider}://{bucket}/{name} was listed with {size} bytes but {read} were read")


def _count_from_listing(ais: Ais, bucket: str, provider: str, name: str, size: int, part: OutputTally) -> None:
    """A shard's members from AIS's archive listing of it alone (the shard, then its members sorted by name); the
    shard must be listed once, with its listed size."""
    inside = name + "/"
    cut = len(inside)
    seen: list[int] = []

    def members(entries: Iterable[Any]) -> Iterator[tuple[str, int]]:
        for e in entries:
            if e.name.startswith(inside):
                yield e.name[cut:], e.size or 0
            elif e.name == name:
                seen.append(int(e.size or 0))

    for page in ais.list_pages(bucket, provider, name, props="name,size", archives=True):
        part.add_members(name, members(page))
    if seen != [size]:
        raise ListingError(
            f"the archive listing of {provider}://{bucket}/{name} shows the shard "
            + (f"with {seen[0]} bytes, listed with {size}" if len(seen) == 1 else f"{len(seen)} times")
        )
