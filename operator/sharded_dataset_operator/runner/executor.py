"""Carrying out the core's actions with the dataset's AIS access (dSort and ETL with the operator's, when it has
one), reporting what happened to each (`core.actions.Outcome`); and the deletions they name, each with a
last look at what readers use."""

from __future__ import annotations

import json
import logging
from typing import Any

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.ais import (
    AccessDenied,
    Ais,
    AisUnavailable,
    BucketNotFound,
    DsortRejected,
    EtlRejected,
    ListingError,
    MissingObject,
)
from sharded_dataset_operator.core import (
    actions,
    builders,
    naming,
    times,
    units,
    versions,
)
from sharded_dataset_operator.core.actions import Decision, Outcome
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.spec import DatasetSpec
from sharded_dataset_operator.core.versions import IndexInfo, parse_duration
from sharded_dataset_operator.runner import failpoints, objcache
from sharded_dataset_operator.runner.objcache import LimitExceeded, ObjectUnreadable
from sharded_dataset_operator.runner.observation import read_index, read_json

log = logging.getLogger("sds.operator")


ETL_INIT_WAIT = 30.0  # seconds beyond the ETL's init timeout the operator waits for AIS to answer the init


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
        for job in (dsort or ais).dsort_find(naming.dsort_regex(str(desc))):  # every split's, every attempt's
            if not job.finished and not job.aborted:
                (dsort or ais).dsort_abort(job.id)
    index = record.get("index") or {}
    versioned = str(index.get("versioned") or "")
    for loc in record.get("locations") or []:
        provider = loc.get("provider", "ais")
        n = ais.delete_prefix(loc["bucket"], loc["prefix"], provider, keep=frozenset({versioned}))
        objcache.CACHE.evict_prefix(ais, loc["bucket"], provider, loc["prefix"], keep=versioned)
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
            objcache.CACHE.evict(ais, bucket, provider, (stable,))
    own = [str((n or {}).get("versioned") or "") for n in (index.get("splits") or {}).values()]
    own = [n for n in own if n]  # the splits' own indexes (outside the locations when there is no shuffle)
    if own:
        ais.delete_objects(bucket, own, provider)
        objcache.CACHE.evict(ais, bucket, provider, tuple(own))
    if versioned:
        ais.delete_objects(bucket, [versioned], provider)
        objcache.CACHE.evict(ais, bucket, provider, (versioned,))


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
                    if len(ids) > objcache.MAX_LISTED:
                        raise LimitExceeded(f"the versions' unit tables list more than {objcache.MAX_LISTED} units")
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
    to each action it reached (`decision.after_actions` decides what that means) and stops after a report that
    stops the pass. Errors of the pass itself (AIS unavailable for a write, an index of another resource)
    raise."""
    dsort = dsort or ais
    done: list[Outcome] = []
    for action in decision.actions:
        outcome = _carry_out(action, ais, dsort, owner, failpoint, spec)
        done.append(outcome)
        if outcome.kind in actions.STOPS and not (isinstance(action, actions.InitEtl) and action.serving):
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
    action: actions.Action,
    ais: Ais,
    dsort: Ais,
    owner: Owner,
    failpoint: failpoints.Failpoint,
    spec: DatasetSpec | None,
) -> Outcome:

    match action:
        case actions.CleanupArtifacts(record=record, in_use=in_use):
            if kube.converter_pods(owner.namespace, owner.name, versions.record_version(record)):
                return Outcome(action, actions.BUSY)  # an old converter could still write after the cleanup
            try:
                cleanup_record(ais, record, owner.uid, dsort, owner.namespace, in_use)
            except CLEANUP_ERRORS as e:  # never holds anything else back: the next pass tries again
                log.warning("%s/%s: deleting %s failed: %s", owner.namespace, owner.name, record.get("version"), e)
                return Outcome(action, actions.FAILED_CLEANUP, error=str(e))
        case actions.SweepUnits(bucket=bucket, provider=provider, pool=pool, live=live, in_use=in_use):
            try:
                n = sweep_units(ais, bucket, provider, pool, live, owner.namespace, owner.uid, in_use)
                log.info("%s/%s: deleted %d converted shards no version holds", owner.namespace, owner.name, n)
            except CLEANUP_ERRORS as e:
                return Outcome(action, actions.FAILED_CLEANUP, error=str(e))
        case actions.DeleteJobs(names=names):
            kube.delete_jobs(owner.namespace, names)
        case actions.EnsureBucket(bucket=bucket, provider=provider):
            ais.ensure_bucket(bucket, provider)
        case actions.CreateJob(manifest=manifest):
            kube.create_job(manifest)
        case actions.StartDsort(spec=request, split=split):
            if spec is not None:
                try:
                    check_dsort_access(ais, spec, owner, list(request["input_format"]["objnames"]), split)
                except AccessDenied as e:
                    return Outcome(action, actions.DENIED, error=str(e))
            try:
                job_id = dsort.dsort_start(request)
            except DsortRejected as e:
                return Outcome(action, actions.REJECTED, error=str(e))
            log.info("%s/%s: started dSort job %s", owner.namespace, owner.name, job_id)
            failpoint(failpoints.AFTER_DSORT_START)
            return Outcome(action, result=job_id)
        case actions.CopyObjects(bucket=bucket, provider=provider, pairs=pairs):
            try:
                ais.copy_objects(bucket, list(pairs), provider)
            except (MissingObject, AisUnavailable, AccessDenied) as e:
                return Outcome(action, actions.COPY_FAILED, error=str(e)[:500], at=times.now_iso())
            log.info("%s/%s: copied %d objects in %s://%s", owner.namespace, owner.name, len(pairs), provider, bucket)
        case actions.StartPrefetch(bucket=bucket, provider=provider, prefix=prefix):
            try:
                job_id = ais.prefetch_start(bucket, provider, prefix)
            except (AisUnavailable, AccessDenied) as e:  # optional: the build goes on, reading cold
                return Outcome(action, actions.NOT_STARTED, error=str(e)[:500], at=times.now_iso())
            log.info("%s/%s: started AIS prefetch job %s", owner.namespace, owner.name, job_id)
            return Outcome(action, result=job_id)
        case actions.WriteIndex(
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
            objcache.CACHE.evict(ais, bucket, provider, (name,))
            failpoint(failpoints.AFTER_PUBLISH if publishes else failpoints.AFTER_INDEX_WRITE)
        case actions.DeleteObjects(bucket=bucket, provider=provider, names=names):
            ais.delete_objects(bucket, list(names), provider)
            objcache.CACHE.evict(ais, bucket, provider, names)
        case actions.DeletePrefix(bucket=bucket, provider=provider, prefix=prefix):
            n = ais.delete_prefix(bucket, prefix, provider)
            objcache.CACHE.evict_prefix(ais, bucket, provider, prefix)
            log.info("%s/%s: deleted %d objects under %s", owner.namespace, owner.name, n, prefix)
        case actions.InitEtl(name=name, message=message):
            try:
                dsort.etl_init(message, ETL_INIT_WAIT + parse_duration(str(message.get("init_timeout") or "3m")))
            except EtlRejected as e:
                dsort.etl_delete(name)  # whatever AIS started of it: a retry starts afresh
                return Outcome(action, actions.ETL_FAILED, error=str(e), at=times.now_iso())
            log.info("%s/%s: AIS ETL %s runs", owner.namespace, owner.name, name)
        case actions.DeleteEtls(names=names):
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
