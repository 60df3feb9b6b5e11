"""One reconcile pass with I/O: observe, ask `reconcile.decide`, carry out its actions, write status.

Runs in a worker thread (the kopf daemon awaits it), so everything here is plain blocking code.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from . import builders, failpoints, failures, guard, naming, reconcile, times, units, versions
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
    MissingObject,
)
from .metrics import METRICS
from .model import DsortJob
from .reconcile import Decision, Event, Observed, Outcome
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
    return times.now_iso()


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


def check_dsort_access(ais: Ais, spec: DatasetSpec, owner: Owner, shards: list[str], split: str | None = None) -> None:
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
    probe = f"{builders.output_base(spec, owner, split)}access-probe"  # among the version's (split's) objects
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


# The JSON object cache and its limits live in objcache.py; these names stay importable from here.
from . import objcache  # noqa: E402

LimitExceeded = objcache.LimitExceeded
ObjectUnreadable = objcache.ObjectUnreadable
ObjectCache = objcache.ObjectCache
MAX_OBJECT_BYTES, MAX_OBJECTS, MAX_LISTED = objcache.MAX_OBJECT_BYTES, objcache.MAX_OBJECTS, objcache.MAX_LISTED
CACHE = objcache.CACHE


def read_json(ais: Ais, bucket: str, provider: str, name: str, *, namespace: str = "") -> dict[str, Any] | None:
    """One JSON object (cached by its AIS checksum, for a dataset of `namespace`), or None when it does not
    exist; `ObjectUnreadable` when it exists but is not a JSON object."""
    return CACHE.read(ais, bucket, provider, name, namespace=namespace).get(name)


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
    bucket, provider, name = reconcile.index_location(spec)
    return IndexInfo.from_index(read_index(ais, bucket, provider, name, namespace)[0], uid)


def observe_versions(ais: Ais, spec: DatasetSpec, owner: Owner, obs: Observed) -> None:
    """The published version, every recorded version's own index (the versions that were published), and
    what each split's stable index names."""
    bucket, provider, name = reconcile.index_location(spec)
    ns = owner.namespace
    stable, foreign = read_index(ais, bucket, provider, name, ns)
    obs.output_conflict = foreign or versions.index_owner_conflict(stable, owner.namespace, owner.name, owner.uid)
    obs.published = IndexInfo.from_index(stable, owner.uid)
    wanted = reconcile.artifact_record(spec, owner)
    records = [*(obs.previous.get("artifacts") or []), wanted]
    if obs.published is not None and obs.published.record:
        records.append(obs.published.record)
    for record in records:
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


def observe_split_indexes(ais: Ais, spec: DatasetSpec, owner: Owner, obs: Observed, wanted: dict[str, Any]) -> None:
    """What each split's stable index names, and the own split indexes of the published version (and of the
    wanted one, once its own index is written) that a split's stable index is behind."""
    bucket, provider, _ = reconcile.index_location(spec)
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
        obs.plan = CACHE.read(ais, out.name, out.provider, manifest, sticky=True, namespace=ns).get(manifest)
        obs.reports = by_worker(
            CACHE.read(ais, out.name, out.provider, naming.report_prefix(base), sticky=True, namespace=ns)
        )
        obs.reused = read_json(ais, out.name, out.provider, naming.reused_name(base), namespace=ns)
        return obs
    out = spec.output.bucket
    base = builders.converted_base(spec, owner)
    manifest = naming.plan_manifest_name(base)
    obs.plan = CACHE.read(ais, out.name, out.provider, manifest, sticky=True, namespace=ns).get(manifest)
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
    obs.reports = by_worker(
        CACHE.read(ais, out.name, out.provider, naming.report_prefix(base), sticky=True, namespace=ns)
    )
    reused = naming.reused_name(base)
    obs.reused = CACHE.read(ais, out.name, out.provider, reused, sticky=True, namespace=ns).get(reused)
    converted = len(obs.reports) == reconcile.converter_workers(spec, obs.plan)
    if obs.job is not None and not converted:
        obs.progress = by_worker(CACHE.read(ais, out.name, out.provider, naming.progress_prefix(base), namespace=ns))
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


class VersionInUse(Exception):
    """A stable index readers use names the version a cleanup was about to delete: nothing was deleted."""


def cleanup_record(
    ais: Ais,
    record: dict[str, Any],
    uid: str = "",
    dsort: Ais | None = None,
    namespace: str = "",
    in_use: tuple[tuple[str, str, str], ...] = (),
) -> None:
    """Abort the version's dSort if it still runs (with `dsort`'s access), then delete everything under its
    prefixes, its own index last (with it gone the version counts as never published), and a stable index
    that still names it (one left at a location the spec no longer uses).

    `in_use`: (bucket, provider, name) of the stable indexes readers use now; the last look before deleting
    (promise P1): if one names this version, VersionInUse and nothing is deleted, and none of them is."""
    version = versions.record_version(record)
    for bucket, provider, name in in_use if uid else ():
        info = IndexInfo.from_index(read_index(ais, bucket, provider, name, namespace)[0], uid)
        if info is not None and info.version == version:
            raise VersionInUse(f"version {version} is named by {provider}://{bucket}/{name}: not deleted")
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
        if not stable or (bucket, provider, stable) in in_use:
            continue
        info = IndexInfo.from_index(read_json(ais, bucket, provider, stable, namespace=namespace), uid)
        if info is not None and info.version == versions.record_version(record):
            ais.delete_objects(bucket, [stable], provider)
            CACHE.evict(ais, bucket, provider, (stable,))
    own = [str((n or {}).get("versioned") or "") for n in (index.get("splits") or {}).values()]
    own = [n for n in own if n]  # the splits' own indexes (outside the locations when there is no shuffle)
    if own:
        ais.delete_objects(bucket, own, provider)
        CACHE.evict(ais, bucket, provider, tuple(own))
    if versioned:
        ais.delete_objects(bucket, [versioned], provider)
        CACHE.evict(ais, bucket, provider, (versioned,))


class UnitsUnreadable(Exception):
    """A live version's plan or unit table could not be read: which units it holds is unknown, so nothing is
    swept (promise P2: what cannot be read is never taken for "nothing to keep")."""


def live_units(ais: Ais, records: tuple[dict[str, Any], ...], namespace: str = "") -> set[str]:
    """The unit ids the versions of `records` hold, from their plans' unit tables (streamed). Raises
    UnitsUnreadable when a plan or a unit table chunk is missing or unreadable."""
    ids: set[str] = set()
    for record in records:
        pool = record.get("pool") or {}
        if not record.get("plan") or not pool.get("bucket"):
            continue  # a record from before the unit pool: its version holds no units
        bucket, provider = str(pool["bucket"]), str(pool.get("provider") or "ais")
        manifest = read_json(ais, bucket, provider, str(record["plan"]), namespace=namespace)
        table = (manifest or {}).get("units")
        if not isinstance(table, dict) or not isinstance(table.get("chunks"), list):
            why = "missing" if manifest is None else "without a unit table"
            raise UnitsUnreadable(f"the plan {provider}://{bucket}/{record['plan']} of version "
                                  f"{versions.record_version(record)} is {why}: nothing is swept")  # fmt: skip
        for chunk in table["chunks"]:
            for line in ais.stream_lines(bucket, str(chunk), provider, missing_ok=False):
                if line:
                    ids.add(units.Unit.parse(line)[0].id)
                    if len(ids) > MAX_LISTED:
                        raise LimitExceeded(f"the versions' unit tables list more than {MAX_LISTED} units")
    return ids


def sweep_units(
    ais: Ais,
    bucket: str,
    provider: str,
    pool: str,
    live: tuple[dict[str, Any], ...],
    namespace: str = "",
    uid: str = "",
    in_use: tuple[tuple[str, str, str], ...] = (),
) -> int:
    """Delete the converted shards under `pool` whose unit no live version holds; returns how many. The
    versions the stable indexes `in_use` name now are live too (the last look, promise P1)."""
    named = []
    for b, p, name in in_use if uid else ():
        info = IndexInfo.from_index(read_index(ais, b, p, name, namespace)[0], uid)
        if info is not None and info.record:
            named.append(info.record)
    keep = live_units(ais, (*live, *named), namespace)
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
) -> list[Outcome]:
    """Carry out the decision's actions with the dataset's access, dSort jobs with `dsort`'s (default `ais`),
    started only after `check_dsort_access` (when `spec` is given). Decides nothing: it reports what happened
    to each action it reached (`reconcile.after_actions` decides what that means) and stops after a report that
    stops the pass. Errors of the pass itself (AIS unavailable for a write, an index of another resource)
    raise."""
    dsort = dsort or ais
    done: list[Outcome] = []
    for action in decision.actions:
        outcome = _carry_out(action, ais, dsort, owner, failpoint, spec)
        done.append(outcome)
        if outcome.kind in reconcile.STOPS and not (isinstance(action, reconcile.InitEtl) and action.serving):
            break
    return done


CLEANUP_ERRORS = (
    VersionInUse,
    AisUnavailable,
    AccessDenied,
    BucketNotFound,
    ListingError,
    MissingObject,
    ObjectUnreadable,
    UnitsUnreadable,
    LimitExceeded,
)


def _carry_out(
    action: reconcile.Action,
    ais: Ais,
    dsort: Ais,
    owner: Owner,
    failpoint: failpoints.Failpoint,
    spec: DatasetSpec | None,
) -> Outcome:
    match action:
        case reconcile.CleanupArtifacts(record=record, in_use=in_use):
            if kube.converter_pods(owner.namespace, owner.name, versions.record_version(record)):
                return Outcome(action, reconcile.BUSY)  # an old converter could still write after the cleanup
            try:
                cleanup_record(ais, record, owner.uid, dsort, owner.namespace, in_use)
            except CLEANUP_ERRORS as e:  # never holds anything else back: the next pass tries again
                log.warning("%s/%s: deleting %s failed: %s", owner.namespace, owner.name, record.get("version"), e)
                return Outcome(action, reconcile.FAILED_CLEANUP, error=str(e))
        case reconcile.SweepUnits(bucket=bucket, provider=provider, pool=pool, live=live, in_use=in_use):
            try:
                n = sweep_units(ais, bucket, provider, pool, live, owner.namespace, owner.uid, in_use)
                log.info("%s/%s: deleted %d converted shards no version holds", owner.namespace, owner.name, n)
            except CLEANUP_ERRORS as e:
                return Outcome(action, reconcile.FAILED_CLEANUP, error=str(e))
        case reconcile.DeleteJobs(names=names):
            kube.delete_jobs(owner.namespace, names)
        case reconcile.EnsureBucket(bucket=bucket, provider=provider):
            ais.ensure_bucket(bucket, provider)
        case reconcile.CreateJob(manifest=manifest):
            kube.create_job(manifest)
        case reconcile.StartDsort(spec=request, split=split):
            if spec is not None:
                try:
                    check_dsort_access(ais, spec, owner, list(request["input_format"]["objnames"]), split)
                except AccessDenied as e:
                    return Outcome(action, reconcile.DENIED, error=str(e))
            try:
                job_id = dsort.dsort_start(request)
            except DsortRejected as e:
                return Outcome(action, reconcile.REJECTED, error=str(e))
            log.info("%s/%s: started dSort job %s", owner.namespace, owner.name, job_id)
            failpoint(failpoints.AFTER_DSORT_START)
            return Outcome(action, result=job_id)
        case reconcile.WriteIndex(
            bucket=bucket, provider=provider, name=name, body=body, publishes=publishes, guarded=guarded
        ):
            if publishes or guarded:  # the last look before the PUT: never over another resource's index
                conflict = versions.index_owner_conflict(
                    parse_index(ais.get(bucket, name, provider), f"{provider}://{bucket}/{name}"),
                    owner.namespace,
                    owner.name,
                    owner.uid,
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
            CACHE.evict_prefix(ais, bucket, provider, prefix)
            log.info("%s/%s: deleted %d objects under %s", owner.namespace, owner.name, n, prefix)
        case reconcile.InitEtl(name=name, message=message):
            try:
                dsort.etl_init(message, ETL_INIT_WAIT + parse_duration(str(message.get("init_timeout") or "3m")))
            except EtlRejected as e:
                dsort.etl_delete(name)  # whatever AIS started of it: a retry starts afresh
                return Outcome(action, reconcile.ETL_FAILED, error=str(e), at=now_iso())
            log.info("%s/%s: AIS ETL %s runs", owner.namespace, owner.name, name)
        case reconcile.DeleteEtls(names=names):
            for name in names:
                dsort.etl_delete(name)
                log.info("%s/%s: removed AIS ETL %s", owner.namespace, owner.name, name)
    return Outcome(action)


def parse_index(data: bytes | None, where: str) -> dict[str, Any] | None:
    """An index object's content (None: there is none). Something at an index's name that is not a JSON object
    is not this resource's to overwrite: `OutputConflict` naming it."""
    if not data:
        return None
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OutputConflict(f"{where} is not a ShardedDataset index (not a JSON object); choose another output "
                             "prefix or bucket, or remove that object")  # fmt: skip
    return body


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
            annotations.get(versions.REFRESH_ANNOTATION),
            owner.generation,
            read_published(ais, spec, owner.uid, owner.namespace),
        )
        owner = owner_of(obj, refresh)
        obs = observe(ais, spec, owner, previous, dsort)
        obs.retry_request = annotations.get(failures.RETRY_ANNOTATION)
        obs.approval = annotations.get(guard.APPROVE_ANNOTATION)
        decision = reconcile.decide(spec, owner, obs, defaults, now)
        bucket = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
        for _ in range(len(spec.splits.names) if spec.splits else 1):  # one output (listing) per split
            if not decision.need_output:
                break
            tally = tally_output(ais, bucket.name, bucket.provider, decision.output_prefix, decision.output_only)
            obs.output = obs.outputs[decision.output_key] = tally
            decision = reconcile.decide(spec, owner, obs, defaults, now)
        if decision.record_first:  # the core asks: where this pass will write is known before it writes
            kube.patch_status(namespace, name, {"artifacts": decision.status.artifacts})
        mark = functools.partial(kube.annotate_dataset, namespace, name, failpoints.FIRED_ANNOTATION)
        outcomes = execute(
            ais, decision, owner, failpoints.for_dataset(settings.failpoints, annotations, mark), dsort, spec
        )
        decision = reconcile.after_actions(decision, outcomes)
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
    except ObjectUnreadable as e:  # promise P2: never taken for absent; nothing is deleted or published on it
        msg = f"could not read {e} (waiting; nothing is deleted or published meanwhile)"
        return _transient(owner, previous, "ObjectUnreadable", msg, now, settings.stall_after)
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
        cleanup_record(ais, record, owner.uid, dsort, owner.namespace)
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
