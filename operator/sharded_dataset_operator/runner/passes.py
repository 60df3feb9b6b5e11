"""One reconcile pass with I/O: observe, ask the core (`core.decision`), carry out its actions (`executor`), let
the core read the reports (`core.decision.after_actions`), write the status (only when it changed). What a
pass cannot do because AIS or a Secret is not there is a transient status, retried with backoff.

Runs in a worker thread (the kopf daemon awaits it), so everything here is plain blocking code.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.ais import (
    AccessDenied,
    Ais,
    AisUnavailable,
    BackendDenied,
    BucketNotFound,
    ListingError,
)
from sharded_dataset_operator.core import (
    failures,
    guard,
    naming,
    times,
    versions,
)
from sharded_dataset_operator.core.actions import Event
from sharded_dataset_operator.core.builders import ConverterDefaults, Owner
from sharded_dataset_operator.core.decision import after_actions, decide
from sharded_dataset_operator.core.spec import DatasetSpec, SpecError, parse_spec
from sharded_dataset_operator.core.status import RECONCILING, STALLED, DatasetStatus, Phase, set_condition
from sharded_dataset_operator.core.versions import IndexInfo
from sharded_dataset_operator.runner import failpoints, scheduled
from sharded_dataset_operator.runner.executor import OutputConflict, execute
from sharded_dataset_operator.runner.metrics import METRICS
from sharded_dataset_operator.runner.objcache import LimitExceeded, ObjectUnreadable
from sharded_dataset_operator.runner.observation import observe, read_published, tally_output
from sharded_dataset_operator.runner.settings import SETTINGS, Settings

log = logging.getLogger("sds.operator")

SLOW_PASS_SECONDS = 2.0
"""A pass that takes longer is logged with where its time went (observing, each output listing, deciding,
the actions)."""


class PassClock:
    """Seconds spent in the named parts of one pass, in order."""

    def __init__(self) -> None:
        self.started = self._last = time.monotonic()
        self.parts: list[tuple[str, float]] = []

    def lap(self, part: str) -> None:
        now = time.monotonic()
        self.parts.append((part, now - self._last))
        self._last = now

    def summary(self) -> str | None:
        """The breakdown, when the pass was slow."""
        total = time.monotonic() - self.started
        if total < SLOW_PASS_SECONDS:
            return None
        return f"pass took {total:.1f} s: " + ", ".join(f"{part} {sec:.1f} s" for part, sec in self.parts)


@dataclass(slots=True)
class PassResult:
    requeue: float | None
    events: list[Event] = field(default_factory=list)


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


@functools.lru_cache(maxsize=64)
def _ais_client(endpoint: str, token: str | None) -> Ais:
    """One client (and connection pool) per endpoint and token, shared by every reconcile pass."""
    return Ais(endpoint, token, timeout=(5.0, SETTINGS.ais_timeout_seconds))


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


def reconcile_once(namespace: str, name: str, settings: Settings) -> PassResult:
    clock = PassClock()
    obj = kube.get_dataset(namespace, name)
    if obj is None:
        METRICS.forget(namespace, name)
        return PassResult(requeue=None)
    METRICS.seen(namespace, name, obj.get("status") or {})
    if obj["metadata"].get("deletionTimestamp"):
        return PassResult(requeue=None)
    if is_settled(obj):
        return _settled(obj, settings)
    owner = owner_of(obj)
    previous = obj.get("status") or {}
    now = times.now_iso()
    try:
        spec = parse_spec(obj.get("spec") or {}, name=owner.name, default_endpoint=settings.ais_endpoint)
    except (SpecError, KeyError, TypeError, ValueError) as e:
        return _fail_invalid(owner, previous, f"invalid spec: {e}", now)
    clock.lap("reading the resource")
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
        pod_stall_after=settings.stall_after,
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
        clock.lap("observing")
        obs.retry_request = annotations.get(failures.RETRY_ANNOTATION)
        obs.approval = annotations.get(guard.APPROVE_ANNOTATION)
        decision = decide(spec, owner, obs, defaults, now)
        bucket = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
        for _ in range(len(spec.splits.names) if spec.splits else 1):  # one output (listing) per split
            if not decision.need_output:
                break
            clock.lap("deciding")
            tally = tally_output(
                ais,
                bucket.name,
                bucket.provider,
                decision.output_prefix,
                decision.output_only,
                from_bytes=decision.output_from_bytes,
            )
            clock.lap(f"listing {decision.output_prefix}")
            obs.output = obs.outputs[decision.output_key] = tally
            decision = decide(spec, owner, obs, defaults, now)
        clock.lap("deciding")
        if decision.record_first is not None:  # where this pass writes, and the attempts it starts, known first
            kube.patch_status(namespace, name, decision.record_first)
        mark = functools.partial(kube.annotate_dataset, namespace, name, failpoints.FIRED_ANNOTATION)
        outcomes = execute(
            ais, decision, owner, failpoints.for_dataset(settings.failpoints, annotations, mark), dsort, spec
        )
        decision = after_actions(decision, outcomes)
        clock.lap(f"{len(outcomes)} actions")
    except kube.SecretNotAllowed as e:
        return _transient(owner, previous, "SecretNotAllowed", str(e), now, settings.stall_after, stalled=True)
    except LookupError as e:  # token Secret missing
        return _transient(owner, previous, "SecretNotFound", str(e), now, settings.stall_after, stalled=True)
    except AccessDenied as e:
        msg = str(e) if isinstance(e, BackendDenied) else f"AIS denied this dataset's token: {e}"
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
    clock.lap("status")
    slow = clock.summary()
    if slow is not None:
        log.info("%s/%s: %s", namespace, name, slow)
    METRICS.passed(previous, status, decision.events)
    METRICS.seen(namespace, name, status)
    requeue, events = decision.requeue, decision.events
    published = obs.published
    if spec.refresh is not None and published is not None and published.version == owner.version:
        # the wanted version was published by an earlier pass (this pass compares with what it read), though
        # there is still work (a previous version kept for its readers, say): the schedule's checks go on

        def connect() -> tuple[Ais, IndexInfo | None]:
            return ais, published

        wait, checked = scheduled.check({**obj, "status": {**previous, **status}}, spec, connect, scheduled.utcnow())
        events = [*events, *checked]
        if wait is not None and wait < settings.idle_interval:
            requeue = max(wait, 1.0) if requeue is None else min(requeue, max(wait, 1.0))
    return PassResult(requeue=requeue, events=events)


def _settled(obj: dict[str, Any], settings: Settings) -> PassResult:
    """Nothing to build: only the refresh schedule (`runner.scheduled`), when the spec has one or had one."""
    if not ((obj.get("spec") or {}).get("refresh") or {}).get("schedule") and not (obj.get("status") or {}).get(
        "refresh"
    ):
        return PassResult(requeue=None)
    meta = obj["metadata"]
    try:
        spec = parse_spec(obj.get("spec") or {}, name=meta["name"], default_endpoint=settings.ais_endpoint)
    except (SpecError, KeyError, TypeError, ValueError):
        return PassResult(requeue=None)  # (a spec that does not parse is never settled: its pass says why)

    def connect() -> tuple[Ais, IndexInfo | None]:
        ais = ais_for(spec, meta["namespace"])
        return ais, read_published(ais, spec, meta["uid"], meta["namespace"])

    wait, events = scheduled.check(obj, spec, connect, scheduled.utcnow())
    return PassResult(requeue=None if wait is None or wait >= settings.idle_interval else max(wait, 1.0), events=events)


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
