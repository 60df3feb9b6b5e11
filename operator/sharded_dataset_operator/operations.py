"""One reconcile pass with I/O: observe, ask `reconcile.decide`, carry out its actions, write status.

Runs in a worker thread (the kopf daemon awaits it), so everything here is plain blocking code.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import builders, naming, reconcile
from .builders import ConverterDefaults, Owner
from .clients import kube
from .clients.ais import Ais, AisUnavailable, BucketNotFound, DsortRejected
from .model import DsortJob
from .reconcile import Decision, Event, Observed
from .settings import Settings
from .spec import DatasetSpec, SpecError, parse_spec
from .status import RECONCILING, STALLED, DatasetStatus, Phase, set_condition

log = logging.getLogger("sds.operator")


@dataclass(slots=True)
class PassResult:
    requeue: float | None
    events: list[Event] = field(default_factory=list)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(obj: dict[str, Any]) -> Owner:
    m = obj["metadata"]
    return Owner(name=m["name"], namespace=m["namespace"], uid=m["uid"], generation=int(m.get("generation", 1)))


def ais_for(spec: DatasetSpec, namespace: str) -> Ais:
    token = None
    if spec.ais.token_secret:
        token = kube.read_secret_key(namespace, *spec.ais.token_secret)
    return _ais_client(spec.ais.endpoint, token)


@functools.lru_cache(maxsize=64)
def _ais_client(endpoint: str, token: str | None) -> Ais:
    """One client (and connection pool) per endpoint and token, shared by every reconcile pass."""
    return Ais(endpoint, token)


def is_settled(obj: dict[str, Any]) -> bool:
    """Ready or Failed for the current generation: nothing to do until the spec changes."""
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation") and status.get("phase") in (
        Phase.READY,
        Phase.FAILED,
    )


def find_dsort(ais: Ais, description: str) -> DsortJob | None:
    jobs = ais.dsort_find(naming.dsort_regex(description))
    jobs = [j for j in jobs if j.description in ("", description)]
    if not jobs:
        return None
    # A live or finished job wins over an aborted one (e.g. a job aborted while the operator was down).
    jobs.sort(key=lambda j: (not j.aborted, j.finished))
    return jobs[-1]


def observe(ais: Ais, spec: DatasetSpec, owner: Owner, previous: dict[str, Any]) -> Observed:
    obs = Observed(previous=previous)
    obs.job = kube.get_job(owner.namespace, naming.job_name(owner.name, owner.generation), owner.generation)
    obs.stale_jobs = kube.stale_jobs(owner.namespace, owner.name, owner.generation)
    base = builders.converted_base(spec, owner)
    if obs.job is None or obs.job.complete:
        try:
            for e in ais.list_objects(spec.output.bucket.name, spec.output.bucket.provider, f"{base}report-"):
                data = ais.get(spec.output.bucket.name, e.name, spec.output.bucket.provider)
                if data:
                    r = json.loads(data)
                    obs.reports[int(r["worker"])] = r
        except BucketNotFound:
            pass
    converted = len(obs.reports) == spec.conversion.workers
    if obs.job is None and not converted:
        if spec.source.bucket is not None:
            b = spec.source.bucket
            if not ais.bucket_exists(b.name, b.provider):
                obs.source_problem = f"source bucket {b.provider}://{b.name} not found"
        elif spec.source.claim_name:
            obs.source_problem = kube.pvc_problem(owner.namespace, spec.source.claim_name)
    if converted and spec.shuffle is not None:
        obs.dsort = find_dsort(ais, naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.generation))
    return obs


def cleanup_record(ais: Ais, record: dict[str, Any]) -> None:
    """Abort the generation's dSort if it still runs, then delete everything under its prefixes."""
    desc = record.get("dsortDescription")
    if desc:
        job = find_dsort(ais, str(desc))
        if job is not None and not job.finished and not job.aborted:
            ais.dsort_abort(job.id)
    for loc in record.get("locations") or []:
        n = ais.delete_prefix(loc["bucket"], loc["prefix"], loc.get("provider", "ais"))
        log.info("deleted %d objects under %s://%s/%s", n, loc.get("provider", "ais"), loc["bucket"], loc["prefix"])


def execute(ais: Ais, decision: Decision, owner: Owner) -> None:
    for action in decision.actions:
        match action:
            case reconcile.CleanupArtifacts(record=record):
                if kube.converter_pods(owner.namespace, owner.name, int(record.get("generation", 0))):
                    # an old converter could still write after the cleanup: keep the record, retry next pass
                    decision.status.artifacts = [*(decision.status.artifacts or []), record]
                else:
                    cleanup_record(ais, record)
            case reconcile.DeleteJobs(names=names):
                kube.delete_jobs(owner.namespace, names)
            case reconcile.EnsureBucket(bucket=bucket, provider=provider):
                ais.ensure_bucket(bucket, provider)
            case reconcile.CreateJob(manifest=manifest):
                kube.create_job(manifest)
            case reconcile.StartDsort(spec=spec):
                try:
                    job_id = ais.dsort_start(spec)
                except DsortRejected as e:
                    reconcile.fail(decision, "ShuffleRejected", str(e))
                    return
                decision.status.dsort_job_id = job_id
                log.info("%s/%s: started dSort job %s", owner.namespace, owner.name, job_id)
            case reconcile.WriteIndex(bucket=bucket, provider=provider, name=name, body=body):
                ais.put(bucket, name, json.dumps(body, indent=1, sort_keys=True).encode(), provider)
            case reconcile.DeleteObjects(bucket=bucket, provider=provider, names=names):
                ais.delete_objects(bucket, list(names), provider)


def reconcile_once(namespace: str, name: str, settings: Settings) -> PassResult:
    obj = kube.get_dataset(namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp") or is_settled(obj):
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
    )
    try:
        ais = ais_for(spec, namespace)
        obs = observe(ais, spec, owner, previous)
        decision = reconcile.decide(spec, owner, obs, defaults, now)
        if decision.need_output:
            prefix = reconcile_prefix(spec, owner)
            bucket = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
            obs.output = list(ais.list_objects(bucket.name, bucket.provider, prefix, archives=True))
            decision = reconcile.decide(spec, owner, obs, defaults, now)
        execute(ais, decision, owner)
    except LookupError as e:  # token Secret missing
        return _transient(owner, previous, "SecretNotFound", str(e), now, stalled=True)
    except (AisUnavailable, BucketNotFound) as e:
        return _transient(owner, previous, "AISUnavailable", str(e), now)
    kube.patch_status(namespace, name, decision.status.to_dict(previous.get("conditions") or [], now))
    return PassResult(requeue=decision.requeue, events=decision.events)


def reconcile_prefix(spec: DatasetSpec, owner: Owner) -> str:
    return builders.output_base(spec, owner) if spec.shuffle else builders.converted_base(spec, owner)


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
    kube.patch_status(owner.namespace, owner.name, st.to_dict(previous.get("conditions") or [], now))
    return PassResult(requeue=None, events=[Event("Warning", reason, message)])


def _transient(
    owner: Owner, previous: dict[str, Any], reason: str, message: str, now: str, stalled: bool = False
) -> PassResult:
    """Keep the phase and counts, flag the problem in the conditions, and retry with backoff."""
    gen = owner.generation
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
            "phase": previous.get("phase") if previous.get("observedGeneration") == gen else Phase.PENDING,
            "observedGeneration": gen,
        },
    )
    events = [] if was.get("reason") == reason and was.get("status") == "True" else [Event("Warning", reason, message)]
    return PassResult(requeue=10.0, events=events)


def delete_everything(obj: dict[str, Any], settings: Settings) -> int:
    """deletionPolicy Delete: remove every object any generation of this resource wrote in AIS."""
    owner = owner_of(obj)
    spec = parse_spec(obj.get("spec") or {}, name=owner.name, default_endpoint=settings.ais_endpoint)
    ais = ais_for(spec, owner.namespace)
    # Converters still running would write after the cleanup: stop them first.
    if not kube.stop_converters(owner.namespace, owner.name):
        raise RuntimeError("converter pods are still terminating")
    records = list((obj.get("status") or {}).get("artifacts") or [])
    records.append(reconcile.artifact_record(spec, owner))
    deleted = 0
    for record in records:
        cleanup_record(ais, record)
        deleted += 1
    # Every generation of this uid, including ones whose records were lost.
    for bucket, prefix in {
        (spec.output.bucket, naming.uid_base(spec.output.prefix, owner.uid)),
        *(
            [(spec.shuffle.output_bucket, naming.uid_base(spec.shuffle.output_prefix, owner.uid))]
            if spec.shuffle
            else []
        ),
    }:
        ais.delete_prefix(bucket.name, prefix, bucket.provider)
    bucket_name, provider, index = reconcile.index_location(spec)
    data = ais.get(bucket_name, index, provider)
    if data:
        try:
            mine = json.loads(data).get("info", {}).get("uid") == owner.uid
        except ValueError:
            mine = False
        if mine:
            ais.delete_objects(bucket_name, [index], provider)
    return deleted
