"""One reconcile pass with I/O: observe, ask `reconcile.decide`, carry out its actions, write status.

Runs in a worker thread (the kopf daemon awaits it), so everything here is plain blocking code.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import builders, failpoints, failures, naming, reconcile, units, versions
from .builders import ConverterDefaults, Owner
from .clients import kube
from .clients.ais import (
    AccessDenied,
    Ais,
    AisUnavailable,
    BucketNotFound,
    DsortRejected,
    EtlRejected,
    ListingError,
)
from .metrics import METRICS
from .model import DsortJob
from .reconcile import Decision, Event, Observed
from .settings import SETTINGS, Settings
from .spec import DatasetSpec, SpecError, parse_spec
from .status import RECONCILING, STALLED, DatasetStatus, Phase, set_condition
from .verify import OutputTally
from .versions import IndexInfo, parse_duration

log = logging.getLogger("sds.operator")


@dataclass(slots=True)
class PassResult:
    requeue: float | None
    events: list[Event] = field(default_factory=list)


ETL_INIT_WAIT = 30.0  # seconds beyond the ETL's init timeout the operator waits for AIS to answer the init


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(obj: dict[str, Any], refresh: str = "") -> Owner:
    m = obj["metadata"]
    return Owner(
        name=m["name"], namespace=m["namespace"], uid=m["uid"], generation=int(m.get("generation", 1)), refresh=refresh
    )


def ais_for(spec: DatasetSpec, namespace: str) -> Ais:
    """The dataset's own AIS access: its endpoint, with its token (from a Secret labelled as an AIS token)."""
    token = None
    if spec.ais.token_secret:
        token = kube.read_secret_key(namespace, *spec.ais.token_secret, label=kube.TOKEN_SECRET_LABEL)
    return _ais_client(spec.ais.endpoint, token)


def dsort_for(spec: DatasetSpec, tenant: Ais, settings: Settings) -> Ais:
    """Who starts, lists and aborts the dataset's dSort jobs: the operator's own AIS identity when one is
    configured and the dataset uses a token (AIS with AuthN allows dSort to cluster admins only), else the
    dataset's access. The admin token is used for nothing else and never leaves the operator."""
    admin = settings.admin_token()
    return _ais_client(spec.ais.endpoint, admin) if admin and tenant.token else tenant


def check_buckets(ais: Ais, spec: DatasetSpec) -> None:
    """Every bucket the spec names may be used with the dataset's token (its HEAD is allowed; a bucket that
    does not exist is fine here). Raises AccessDenied naming the first bucket refused, before anything is read
    from or written to any of them."""
    buckets = [spec.output.bucket, *([spec.shuffle.output_bucket] if spec.shuffle else [])]
    if spec.source.bucket is not None:
        buckets.insert(0, spec.source.bucket)
    for b in dict.fromkeys(buckets):
        try:
            ais.bucket_exists(b.name, b.provider)
        except AccessDenied as e:
            raise AccessDenied(f"the dataset's AIS token may not use {b.provider}://{b.name} ({e})") from e


class OutputConflict(Exception):
    """The stable index turned out to belong to another resource just before it was to be written."""


def check_dsort_access(ais: Ais, spec: DatasetSpec, owner: Owner, shards: list[str]) -> None:
    """Before the operator's identity starts a dSort for the dataset, prove with the dataset's own token that
    it may read the input (list the converted shards, read one) and write the output (put and delete a probe
    object). Raises AccessDenied naming the bucket and what was refused."""
    assert spec.shuffle is not None
    src, dst = spec.output.bucket, spec.shuffle.output_bucket
    pool = builders.unit_pool(spec, owner)
    steps: list[tuple[str, Any]] = [
        (
            f"list {src.provider}://{src.name}/{pool}",
            lambda: next(iter(ais.list_objects(src.name, src.provider, pool)), None),
        ),
        (
            f"read {src.provider}://{src.name}/{shards[0]}",
            lambda: ais.read_first_byte(src.name, shards[0], src.provider),
        ),
    ]
    probe = f"{builders.output_base(spec, owner)}access-probe"
    steps += [
        (f"write {dst.provider}://{dst.name}/{probe}", lambda: ais.put(dst.name, probe, b"", dst.provider)),
        (f"delete {dst.provider}://{dst.name}/{probe}", lambda: ais.delete_objects(dst.name, [probe], dst.provider)),
    ]
    for what, step in steps:
        try:
            step()
        except AccessDenied as e:
            raise AccessDenied(f"the dataset's AIS token may not {what} ({e}); no dSort was started") from e


@functools.lru_cache(maxsize=64)
def _ais_client(endpoint: str, token: str | None) -> Ais:
    """One client (and connection pool) per endpoint and token, shared by every reconcile pass."""
    return Ais(endpoint, token, timeout=(5.0, SETTINGS.ais_timeout_seconds))


def find_dsort_attempts(ais: Ais, description: str) -> dict[int, DsortJob]:
    """The generation's dSort jobs by attempt (a live or finished job wins over an aborted one of the same
    attempt, e.g. one aborted while the operator was down)."""
    jobs = [j for j in ais.dsort_find(naming.dsort_regex(description)) if j.description]
    jobs.sort(key=lambda j: (not j.aborted, j.finished))
    return {naming.dsort_attempt(j.description): j for j in jobs}


def is_settled(obj: dict[str, Any]) -> bool:
    """Nothing to do: the wanted version (generation and refresh request) is Ready, or Failed without a new
    retry request, and no other version waits to be deleted."""
    status = obj.get("status") or {}
    generation = int(obj["metadata"].get("generation") or 1)
    if status.get("observedGeneration") != generation:
        return False
    annotations = obj["metadata"].get("annotations") or {}
    v = status.get("versions") or {}
    published = v.get("published") or {}
    if v.get("previous") or len(status.get("artifacts") or []) > (2 if v.get("building") else 1):
        return False  # a previous version or a superseded build still to delete
    served = IndexInfo(str(published.get("version") or ""), int(published.get("generation") or 0),
                       str(published.get("refresh") or ""), "", 0, 0, 0, "") if published else None  # fmt: skip
    wanted = naming.version_id(generation, versions.desired_refresh(
        annotations.get(versions.REFRESH_ANNOTATION), generation, served))  # fmt: skip
    if status.get("phase") == Phase.READY:
        return not v or published.get("version") == wanted
    if status.get("phase") != Phase.FAILED or (v.get("building") or {}).get("version", wanted) != wanted:
        return False
    request = annotations.get(failures.RETRY_ANNOTATION)
    return not request or request == (status.get("retry") or {}).get("request")


class LimitExceeded(Exception):
    """A dataset's objects in AIS (written by its pods, so by its tenant) are larger or more numerous than the
    operator reads: a clear failure of that dataset, never an operator that runs out of memory."""


MAX_OBJECT_BYTES = 64 * 1024 * 1024  # a plan manifest, report, progress object, reused.json or index
MAX_OBJECTS = 10_000  # JSON objects under one prefix (reports and progress: one per worker)
MAX_LISTED = 500_000  # output shards counted in a verification, units held by the versions in a sweep


class ObjectCache:
    """JSON objects (plan, reports, progress) by name, re-read only when their AIS checksum changes.

    Bounded (least recently used first out), so the operator's memory does not grow with the number of
    datasets or passes. What it reads is bounded too: an object is read only if the listing gives it at most
    `max_bytes`, and at most `max_objects` under a prefix (`LimitExceeded` otherwise).
    """

    def __init__(self, limit: int = 4096, max_bytes: int = MAX_OBJECT_BYTES, max_objects: int = MAX_OBJECTS) -> None:
        self.limit, self.max_bytes, self.max_objects = limit, max_bytes, max_objects
        self.items: OrderedDict[tuple[str, str, str], tuple[str, dict[str, Any]]] = OrderedDict()
        self.reads = 0

    def evict(self, ais: Ais, bucket: str, provider: str, names: tuple[str, ...]) -> None:
        """Forget deleted objects (a sticky one would otherwise outlive its deletion)."""
        for name in names:
            self.items.pop((ais.endpoint, f"{provider}://{bucket}", name), None)

    def evict_prefix(self, ais: Ais, bucket: str, provider: str, prefix: str, keep: str = "") -> None:
        """Forget every object under `prefix` (but `keep`)."""
        where = (ais.endpoint, f"{provider}://{bucket}")
        for key in [k for k in self.items if k[:2] == where and k[2].startswith(prefix) and k[2] != keep]:
            del self.items[key]

    def read(
        self, ais: Ais, bucket: str, provider: str, prefix: str, sticky: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Every JSON object under `prefix` (name -> content); unreadable or vanished objects are left out.

        `sticky`: the objects are immutable once written (worker reports), so one seen before stays known
        even when a listing misses it (a target that holds it is down for a while).
        """
        found: dict[str, dict[str, Any]] = {}
        if sticky:
            where = (ais.endpoint, f"{provider}://{bucket}")
            for (endpoint, bck, name), (_, body) in self.items.items():
                if (endpoint, bck) == where and name.startswith(prefix):
                    found[name] = body
        entries: list[Any] = []
        try:
            for page in ais.list_pages(bucket, provider, prefix, props="name,size,checksum"):
                entries.extend(page)
                if len(entries) > self.max_objects:
                    raise LimitExceeded(
                        f"more than {self.max_objects} objects under {provider}://{bucket}/{prefix}: the operator "
                        "reads at most that many"
                    )
        except BucketNotFound:
            return found
        for e in entries:
            if int(e.size or 0) > self.max_bytes:
                raise LimitExceeded(
                    f"{provider}://{bucket}/{e.name} is {int(e.size)} bytes; the operator reads objects of at most "
                    f"{self.max_bytes} bytes (it was not read)"
                )
        for e in entries:
            key = (ais.endpoint, f"{provider}://{bucket}", str(e.name))
            checksum = str(e.checksum or "") or f"size:{e.size}"
            hit = self.items.get(key)
            if hit is not None and hit[0] == checksum:
                self.items.move_to_end(key)
                found[e.name] = hit[1]
                continue
            data = ais.get(bucket, e.name, provider)
            self.reads += 1
            if not data:
                continue
            try:
                body = json.loads(data)
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            self.items[key] = (checksum, body)
            while len(self.items) > self.limit:
                self.items.popitem(last=False)
            found[e.name] = body
        return found


CACHE = ObjectCache(max_bytes=SETTINGS.max_object_bytes)


def read_json(ais: Ais, bucket: str, provider: str, name: str) -> dict[str, Any] | None:
    """One JSON object (cached by its AIS checksum), or None when it does not exist."""
    return CACHE.read(ais, bucket, provider, name).get(name)


def read_published(ais: Ais, spec: DatasetSpec, uid: str) -> IndexInfo | None:
    """The version the stable index names, when this resource wrote it."""
    bucket, provider, name = reconcile.index_location(spec)
    return IndexInfo.from_index(read_json(ais, bucket, provider, name), uid)


def observe_versions(ais: Ais, spec: DatasetSpec, owner: Owner, obs: Observed) -> None:
    """The published version, and every recorded version's own index (the versions that were published)."""
    bucket, provider, name = reconcile.index_location(spec)
    stable = read_json(ais, bucket, provider, name)
    obs.output_conflict = versions.index_owner_conflict(stable, owner.namespace, owner.name, owner.uid)
    obs.published = IndexInfo.from_index(stable, owner.uid)
    records = [*(obs.previous.get("artifacts") or []), reconcile.artifact_record(spec, owner)]
    if obs.published is not None and obs.published.record:
        records.append(obs.published.record)
    for record in records:
        index = record.get("index") or {}
        if not index.get("versioned"):
            continue
        body = read_json(ais, str(index["bucket"]), str(index.get("provider") or "ais"), str(index["versioned"]))
        info = IndexInfo.from_index(body, owner.uid)
        if info is None:
            continue
        if info.version == owner.version:
            obs.wanted_index = body
        else:
            obs.version_indexes[info.version] = info


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
    gen = owner.generation
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
        obs.plan = CACHE.read(ais, out.name, out.provider, manifest, sticky=True).get(manifest)
        obs.reports = by_worker(CACHE.read(ais, out.name, out.provider, f"{base}report-", sticky=True))
        obs.reused = read_json(ais, out.name, out.provider, naming.reused_name(base))
        return obs
    out = spec.output.bucket
    base = builders.converted_base(spec, owner)
    manifest = naming.plan_manifest_name(base)
    obs.plan = CACHE.read(ais, out.name, out.provider, manifest, sticky=True).get(manifest)
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
    obs.reports = by_worker(CACHE.read(ais, out.name, out.provider, f"{base}report-", sticky=True))
    reused = naming.reused_name(base)
    obs.reused = CACHE.read(ais, out.name, out.provider, reused, sticky=True).get(reused)
    converted = len(obs.reports) == reconcile.converter_workers(spec, obs.plan)
    if obs.job is not None and not converted:
        obs.progress = by_worker(CACHE.read(ais, out.name, out.provider, f"{base}progress-"))
    if converted and spec.shuffle is not None and spec.splits is None:
        obs.dsort_attempts = find_dsort_attempts(
            dsort or ais, naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.version)
        )
        # The proxy lists the jobs of the targets that answer. While a target in its map does not answer, the
        # object listing above has already failed (the pass waits as an outage), so a job missing here is gone.
        lost = reconcile.lost_dsort_attempt(previous, gen, obs.dsort_attempts)
        if lost is not None:
            obs.capacity_problems = tuple((dsort or ais).capacity_problems())
        if lost is not None or next_attempt_due(obs.dsort_attempts):
            obs.rebalancing = tuple((dsort or ais).running_rebalances())
    elif converted and spec.shuffle is not None and spec.splits is not None:
        due = False
        for split in spec.splits.names:
            desc = naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.version, split=split)
            obs.split_attempts[split] = find_dsort_attempts(dsort or ais, desc)
            record = ((previous.get("splits") or {}).get(split) or {}).get("shuffle") or {}
            lost = reconcile.lost_dsort_attempt(previous, gen, obs.split_attempts[split], record=record)
            if lost is not None and not obs.capacity_problems:
                obs.capacity_problems = tuple((dsort or ais).capacity_problems())
            due = due or lost is not None or next_attempt_due(obs.split_attempts[split])
        if due:
            obs.rebalancing = tuple((dsort or ais).running_rebalances())
    return obs


def tally_output(ais: Ais, bucket: str, provider: str, prefix: str, only: frozenset[str] | None = None) -> OutputTally:
    """Stream the archive listing of the output shards into per-shard counters (never a list of members).

    `only`: the shards to count among others under the prefix (a version's converted shards, without shuffle).
    """
    tally = OutputTally(prefix, only)
    checksum_type = ais.checksum_type(bucket, provider)
    for page in ais.list_pages(bucket, provider, prefix, props="name,size,checksum", archives=True):
        if len(tally.shards) > MAX_LISTED:
            raise LimitExceeded(f"more than {MAX_LISTED} output shards under {provider}://{bucket}/{prefix}")
        for e in page:
            value = str(e.checksum or "")
            tally.add(str(e.name), int(e.size or 0), {"type": checksum_type, "value": value} if value else None)
    counted = ais.object_count(bucket, provider, prefix)
    if (counted != len(tally.shards)) if only is None else (counted < len(tally.shards)):
        raise ListingError(
            f"listing {provider}://{bucket}/{prefix} returned {len(tally.shards)} shards "
            f"but the cluster counts {counted}"
        )
    return tally


def cleanup_record(ais: Ais, record: dict[str, Any], uid: str = "", dsort: Ais | None = None) -> None:
    """Abort the version's dSort if it still runs (with `dsort`'s access), then delete everything under its
    prefixes, its own index last (with it gone the version counts as never published), and a stable index
    that still names it (one left at a location the spec no longer uses)."""
    desc = record.get("dsortDescription")
    if desc:
        for job in find_dsort_attempts(dsort or ais, str(desc)).values():
            if not job.finished and not job.aborted:
                (dsort or ais).dsort_abort(job.id)
    index = record.get("index") or {}
    versioned = str(index.get("versioned") or "")
    for loc in record.get("locations") or []:
        provider = loc.get("provider", "ais")
        n = ais.delete_prefix(loc["bucket"], loc["prefix"], provider, keep=frozenset({versioned}))
        CACHE.evict_prefix(ais, loc["bucket"], provider, loc["prefix"], keep=versioned)
        log.info("deleted %d objects under %s://%s/%s", n, provider, loc["bucket"], loc["prefix"])
    if not index.get("bucket"):
        return
    bucket, provider = str(index["bucket"]), str(index.get("provider") or "ais")
    stables = [
        str(index.get("stable") or ""),
        *(str((n or {}).get("stable") or "") for n in (index.get("splits") or {}).values()),
    ]
    for stable in stables if uid else ():
        if not stable:
            continue
        info = IndexInfo.from_index(read_json(ais, bucket, provider, stable), uid)
        if info is not None and info.version == versions.record_version(record):
            ais.delete_objects(bucket, [stable], provider)
            CACHE.evict(ais, bucket, provider, (stable,))
    if versioned:
        ais.delete_objects(bucket, [versioned], provider)
        CACHE.evict(ais, bucket, provider, (versioned,))


def live_units(ais: Ais, records: tuple[dict[str, Any], ...]) -> set[str]:
    """The unit ids the versions of `records` hold, from their plans' unit tables (streamed)."""
    ids: set[str] = set()
    for record in records:
        pool = record.get("pool") or {}
        if not record.get("plan") or not pool.get("bucket"):
            continue
        bucket, provider = str(pool["bucket"]), str(pool.get("provider") or "ais")
        manifest = read_json(ais, bucket, provider, str(record["plan"]))
        for chunk in ((manifest or {}).get("units") or {}).get("chunks") or []:
            for line in ais.stream_lines(bucket, str(chunk), provider):
                if line:
                    ids.add(units.Unit.parse(line)[0].id)
                    if len(ids) > MAX_LISTED:
                        raise LimitExceeded(f"the versions' unit tables list more than {MAX_LISTED} units")
    return ids


def sweep_units(ais: Ais, bucket: str, provider: str, pool: str, live: tuple[dict[str, Any], ...]) -> int:
    """Delete the converted shards under `pool` whose unit no live version holds; returns how many."""
    keep = live_units(ais, live)
    doomed: list[str] = []
    deleted = 0
    for e in ais.list_objects(bucket, provider, pool):
        if naming.unit_of(pool, e.name) not in keep:
            doomed.append(e.name)
            if len(doomed) >= 10_000:  # a batch at a time: the names held stay bounded
                deleted += ais.delete_objects(bucket, doomed, provider)
                doomed = []
    return deleted + ais.delete_objects(bucket, doomed, provider)


def execute(
    ais: Ais,
    decision: Decision,
    owner: Owner,
    failpoint: failpoints.Failpoint = failpoints.none,
    dsort: Ais | None = None,
    spec: DatasetSpec | None = None,
) -> None:
    """Carry out the decision's actions with the dataset's access; dSort jobs with `dsort`'s (default `ais`),
    started only after `check_dsort_access` (when `spec` is given)."""
    dsort = dsort or ais
    for action in decision.actions:
        match action:
            case reconcile.CleanupArtifacts(record=record):
                if kube.converter_pods(owner.namespace, owner.name, versions.record_version(record)):
                    # an old converter could still write after the cleanup: keep the record, retry next pass
                    decision.status.artifacts = [*(decision.status.artifacts or []), record]
                    continue
                try:
                    cleanup_record(ais, record, owner.uid, dsort)
                except (AisUnavailable, AccessDenied, BucketNotFound, ListingError) as e:
                    # never holds anything else back: the record stays, the next pass tries again
                    decision.status.artifacts = [*(decision.status.artifacts or []), record]
                    version = versions.record_version(record)
                    decision.events.append(Event("Warning", "CleanupFailed", f"deleting version {version}: {e}"))
                    log.warning("%s/%s: deleting version %s failed: %s", owner.namespace, owner.name, version, e)
            case reconcile.SweepUnits(bucket=bucket, provider=provider, pool=pool, live=live, restore=restore):
                try:
                    n = sweep_units(ais, bucket, provider, pool, live)
                    log.info("%s/%s: deleted %d converted shards no version holds", owner.namespace, owner.name, n)
                except (AisUnavailable, AccessDenied, BucketNotFound, ListingError) as e:
                    kept = {versions.record_version(r) for r in decision.status.artifacts or []}
                    back = [r for r in restore if versions.record_version(r) not in kept]
                    decision.status.artifacts = [*(decision.status.artifacts or []), *back]
                    decision.events.append(Event("Warning", "CleanupFailed", f"deleting converted shards: {e}"))
            case reconcile.DeleteJobs(names=names):
                kube.delete_jobs(owner.namespace, names)
            case reconcile.EnsureBucket(bucket=bucket, provider=provider):
                ais.ensure_bucket(bucket, provider)
            case reconcile.CreateJob(manifest=manifest):
                kube.create_job(manifest)
            case reconcile.StartDsort(spec=request):
                if spec is not None:
                    try:
                        check_dsort_access(ais, spec, owner, list(request["input_format"]["objnames"]))
                    except AccessDenied as e:
                        reconcile.stall(decision, "AccessDenied", str(e))
                        return
                try:
                    job_id = dsort.dsort_start(request)
                except DsortRejected as e:
                    reconcile.fail(decision, "ShuffleRejected", str(e))
                    return
                log.info("%s/%s: started dSort job %s", owner.namespace, owner.name, job_id)
                failpoint(failpoints.AFTER_DSORT_START)
                decision.status.dsort_job_id = job_id
            case reconcile.WriteIndex(
                bucket=bucket, provider=provider, name=name, body=body, publishes=publishes, guarded=guarded
            ):
                if publishes or guarded:  # the last look before the PUT: never over another resource's index
                    current = ais.get(bucket, name, provider)
                    conflict = versions.index_owner_conflict(
                        json.loads(current) if current else None, owner.namespace, owner.name, owner.uid
                    )
                    if conflict:
                        raise OutputConflict(conflict)
                ais.put(bucket, name, json.dumps(body, indent=1, sort_keys=True).encode(), provider)
                CACHE.evict(ais, bucket, provider, (name,))
                failpoint(failpoints.AFTER_PUBLISH if publishes else failpoints.AFTER_INDEX_WRITE)
            case reconcile.DeleteObjects(bucket=bucket, provider=provider, names=names):
                ais.delete_objects(bucket, list(names), provider)
                CACHE.evict(ais, bucket, provider, names)
            case reconcile.DeletePrefix(bucket=bucket, provider=provider, prefix=prefix):
                n = ais.delete_prefix(bucket, prefix, provider)
                log.info("%s/%s: deleted %d objects under %s", owner.namespace, owner.name, n, prefix)
            case reconcile.InitEtl(name=name, message=message, serving=serving):
                try:
                    dsort.etl_init(message, ETL_INIT_WAIT + parse_duration(str(message.get("init_timeout") or "3m")))
                except EtlRejected as e:
                    dsort.etl_delete(name)  # whatever AIS started of it: a retry starts afresh
                    if serving:  # the build goes on; readers see why their ETL is missing
                        failed = {"stage": None, "message": str(e), "failedAt": now_iso()}
                        decision.status.serve = {**(decision.status.serve or {}), **failed}
                        decision.events.append(Event("Warning", "EtlFailed", f"serving ETL {name}: {e}"))
                        continue
                    reconcile.fail(decision, "EtlFailed", str(e))
                    return
                log.info("%s/%s: AIS ETL %s runs", owner.namespace, owner.name, name)
                decision.events.append(Event("Normal", "EtlStarted", f"AIS ETL {name} runs next to every target"))
            case reconcile.DeleteEtls(names=names):
                for name in names:
                    dsort.etl_delete(name)
                    log.info("%s/%s: removed AIS ETL %s", owner.namespace, owner.name, name)


def reconcile_once(namespace: str, name: str, settings: Settings) -> PassResult:
    obj = kube.get_dataset(namespace, name)
    if obj is None:
        METRICS.forget(namespace, name)
        return PassResult(requeue=None)
    METRICS.seen(namespace, name, obj.get("status") or {})
    if obj["metadata"].get("deletionTimestamp") or is_settled(obj):
        return PassResult(requeue=None)
    owner = owner_of(obj)
    previous = obj.get("status") or {}
    now = now_iso()
    try:
        spec = parse_spec(obj.get("spec") or {}, name=owner.name, default_endpoint=settings.ais_endpoint)
    except (SpecError, KeyError, TypeError, ValueError) as e:
        return _fail_invalid(owner, previous, f"invalid spec: {e}", now)
    defaults = ConverterDefaults(
        image=settings.converter_image,
        image_pull_policy=settings.converter_pull_policy,
        resources=settings.converter_resources,
        node_selector=settings.converter_node_selector,
        tolerations=settings.converter_tolerations,
        forbidden_toleration_keys=settings.converter_forbidden_toleration_keys,
        enforce_placement=settings.converter_enforce_placement,
        user_image_pull_policy=settings.user_image_pull_policy,
        etl_images=settings.etl_images,
        etl_init_timeout=settings.etl_init_timeout,
    )
    if not settings.endpoint_allowed(spec.ais.endpoint):
        msg = (f"spec.ais.endpoint {spec.ais.endpoint} is not one of the AIS endpoints this operator may use "
               "(operator setting ais.allowedEndpoints)")  # fmt: skip
        return _fail_invalid(owner, previous, msg, now, reason="EndpointNotAllowed")
    try:
        ais = ais_for(spec, namespace)
        dsort = dsort_for(spec, ais, settings)
        if ais.token:
            check_buckets(ais, spec)
        annotations = obj["metadata"].get("annotations") or {}
        refresh = versions.desired_refresh(
            annotations.get(versions.REFRESH_ANNOTATION), owner.generation, read_published(ais, spec, owner.uid)
        )
        owner = owner_of(obj, refresh)
        obs = observe(ais, spec, owner, previous, dsort)
        obs.retry_request = annotations.get(failures.RETRY_ANNOTATION)
        decision = reconcile.decide(spec, owner, obs, defaults, now)
        bucket = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
        for _ in range(len(spec.splits.names) if spec.splits else 1):  # one output (listing) per split
            if not decision.need_output:
                break
            tally = tally_output(ais, bucket.name, bucket.provider, decision.output_prefix, decision.output_only)
            obs.output = obs.outputs[decision.output_prefix] = tally
            decision = reconcile.decide(spec, owner, obs, defaults, now)
        mark = functools.partial(kube.annotate_dataset, namespace, name, failpoints.FIRED_ANNOTATION)
        execute(ais, decision, owner, failpoints.for_dataset(settings.failpoints, annotations, mark), dsort, spec)
    except kube.SecretNotAllowed as e:
        return _transient(owner, previous, "SecretNotAllowed", str(e), now, settings.stall_after, stalled=True)
    except LookupError as e:  # token Secret missing
        return _transient(owner, previous, "SecretNotFound", str(e), now, settings.stall_after, stalled=True)
    except AccessDenied as e:
        msg = f"AIS denied this dataset's token: {e}"
        return _transient(owner, previous, "AccessDenied", msg, now, settings.stall_after, stalled=True, retry=60.0)
    except OutputConflict as e:
        return _transient(owner, previous, "OutputConflict", str(e), now, settings.stall_after, stalled=True)
    except (AisUnavailable, BucketNotFound) as e:
        return _transient(owner, previous, "AISUnavailable", str(e), now, settings.stall_after)
    except ListingError as e:
        return _transient(owner, previous, "ListingIncomplete", str(e), now, settings.stall_after)
    except LimitExceeded as e:
        return _fail_invalid(owner, previous, str(e), now, reason="LimitExceeded")
    conds: list[dict[str, Any]] = previous.get("conditions") or []
    stalled_before: dict[str, Any] = next((c for c in conds if c.get("type") == STALLED), {})
    if stalled_before.get("status") == "True" and stalled_before.get("message") == decision.status.message:
        decision.events = [e for e in decision.events if e.reason != decision.status.reason]  # said already
    status = decision.status.to_dict(previous.get("conditions") or [], now)
    if previous.get("outage"):
        status["outage"] = None  # AIS answered: the outage is over (a merge patch removes the field)
    if any(previous.get(k) != v for k, v in status.items()):  # unchanged: no write to the API server
        kube.patch_status(namespace, name, status)
    METRICS.passed(previous, status, decision.events)
    METRICS.seen(namespace, name, status)
    return PassResult(requeue=decision.requeue, events=decision.events)


def _fail_invalid(
    owner: Owner, previous: dict[str, Any], message: str, now: str, reason: str = "InvalidSpec"
) -> PassResult:
    st = DatasetStatus(
        phase=Phase.FAILED,
        observed_generation=owner.generation,
        reason=reason,
        message=message,
        stalled=True,
        artifacts=previous.get("artifacts"),
    )
    status = st.to_dict(previous.get("conditions") or [], now)
    kube.patch_status(owner.namespace, owner.name, status)
    METRICS.passed(previous, status, [])
    METRICS.seen(owner.namespace, owner.name, status)
    return PassResult(requeue=None, events=[Event("Warning", reason, message)])


def _transient(
    owner: Owner,
    previous: dict[str, Any],
    reason: str,
    message: str,
    now: str,
    stall_after: float,
    stalled: bool = False,
    retry: float = 10.0,
) -> PassResult:
    """Keep the phase and counts, flag the problem in the conditions, and retry with backoff.

    Reconciling while the outage is young; Stalled (same reason) once it has lasted `stall_after` seconds,
    or at once when `stalled`. The pass that next reaches AIS clears the outage record.
    """
    gen = owner.generation
    record, long_enough = failures.outage(previous.get("outage"), reason, now, stall_after)
    stalled = stalled or long_enough
    if stalled and reason == "AISUnavailable":
        message = f"{message} (unreachable since {record['since']}; resumes by itself when AIS answers)"
    conds = previous.get("conditions") or []
    was: dict[str, Any] = next((c for c in conds if c.get("type") == (STALLED if stalled else RECONCILING)), {})
    conds = set_condition(conds, RECONCILING, not stalled, reason, message, gen, now)
    conds = set_condition(
        conds, STALLED, stalled, reason if stalled else "Healthy", message if stalled else "", gen, now
    )
    conds = set_condition(conds, "Ready", False, reason, message, gen, now)
    kube.patch_status(
        owner.namespace,
        owner.name,
        {
            "conditions": conds,
            "message": message,
            "outage": record,
            "phase": previous.get("phase") if previous.get("observedGeneration") == gen else Phase.PENDING,
            "observedGeneration": gen,
        },
    )
    METRICS.passes.inc()
    METRICS.error(reason)
    events = [] if was.get("reason") == reason and was.get("status") == "True" else [Event("Warning", reason, message)]
    return PassResult(requeue=retry, events=events)


def leftover_summary(obj: dict[str, Any], settings: Settings) -> str:
    """Where a dataset whose deletion was given up wrote in AIS (bucket and prefix per location)."""
    owner = owner_of(obj)
    try:
        spec = parse_spec(obj.get("spec") or {}, name=owner.name, default_endpoint=settings.ais_endpoint)
    except (SpecError, KeyError, TypeError, ValueError):
        return "unknown (the spec does not parse)"
    places = {
        f"{spec.output.bucket.provider}://{spec.output.bucket.name}/{naming.uid_base(spec.output.prefix, owner.uid)}*",
        f"{spec.output.bucket.provider}://{spec.output.bucket.name}/{naming.unit_pool(spec.output.prefix, owner.uid)}*",
    }
    for prefix in _output_prefixes(spec):
        b = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
        places.add(f"{b.provider}://{b.name}/{naming.uid_base(prefix, owner.uid)}*")
    bucket, provider, index = reconcile.index_location(spec)
    places.add(f"{provider}://{bucket}/{index}")
    return ", ".join(sorted(places))


def delete_everything(obj: dict[str, Any], settings: Settings) -> int:
    """deletionPolicy Delete: remove every object any version of this resource wrote in AIS."""
    owner = owner_of(obj)
    spec = parse_spec(obj.get("spec") or {}, name=owner.name, default_endpoint=settings.ais_endpoint)
    if not settings.endpoint_allowed(spec.ais.endpoint):
        raise RuntimeError(f"spec.ais.endpoint {spec.ais.endpoint} is not an allowed AIS endpoint: nothing deleted")
    ais = ais_for(spec, owner.namespace)
    dsort = dsort_for(spec, ais, settings)
    # Converters still running would write after the cleanup: stop them first.
    if not kube.stop_converters(owner.namespace, owner.name):
        raise RuntimeError("converter pods are still terminating")
    records = [
        r
        for r in (obj.get("status") or {}).get("artifacts") or []
        if versions.record_problem(r, owner.namespace, owner.name, owner.uid) is None
    ]
    records.append(reconcile.artifact_record(spec, owner))
    deleted = 0
    for record in records:
        cleanup_record(ais, record, owner.uid, dsort)
        pool = record.get("pool") or {}
        if pool.get("prefix"):
            ais.delete_prefix(str(pool["bucket"]), str(pool["prefix"]), str(pool.get("provider") or "ais"))
        deleted += 1
    # Every version of this uid, including ones whose records were lost.
    shuffled = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
    for bucket, prefix in {
        (spec.output.bucket, naming.uid_base(spec.output.prefix, owner.uid)),
        (spec.output.bucket, naming.unit_pool(spec.output.prefix, owner.uid)),
        *((shuffled, naming.uid_base(prefix, owner.uid)) for prefix in _output_prefixes(spec)),
    }:
        ais.delete_prefix(bucket.name, prefix, bucket.provider)
    for name in dsort.etl_list(naming.etl_prefix(owner.uid)):
        dsort.etl_delete(name)
    bucket_name, provider, index = reconcile.index_location(spec)
    indexes = [index]
    if spec.splits:
        indexes += [
            naming.index_name(builders.split_prefix(reconcile.index_prefix(spec), s)) for s in spec.splits.names
        ]
    for name in indexes:
        data = ais.get(bucket_name, name, provider)
        if data:
            try:
                mine = (json.loads(data).get("info") or {}).get("uid") == owner.uid
            except (ValueError, AttributeError):
                mine = False
            if mine:
                ais.delete_objects(bucket_name, [name], provider)
    return deleted


def _output_prefixes(spec: DatasetSpec) -> list[str]:
    """The prefixes the shuffled shards of every version are written under (one per split)."""
    if spec.shuffle is None:
        return []
    return [
        builders.split_prefix(spec.shuffle.output_prefix, s) for s in (spec.splits.names if spec.splits else [None])
    ]
