"""kopf registrations only: configuration, one daemon per ShardedDataset, and the deletion handler.

All decisions live in `core/`; the passes run in `runner/` (observe, execute), all AIS and Kubernetes I/O in `clients/`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import prometheus_client

from sharded_dataset_operator.clients.ais import redact
from sharded_dataset_operator.core import actions, failures, guard, naming, versions
from sharded_dataset_operator.core.spec import API_GROUP, API_VERSION, PLURAL
from sharded_dataset_operator.runner import finalizer, passes
from sharded_dataset_operator.runner.metrics import METRICS
from sharded_dataset_operator.runner.settings import SETTINGS

log = logging.getLogger("sds.operator")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # explicit Events below; handler logs stay in the log
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 15
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 16
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    if SETTINGS.metrics_port:
        prometheus_client.start_http_server(SETTINGS.metrics_port, addr="0.0.0.0", registry=METRICS.registry)


POOL = ThreadPoolExecutor(max_workers=SETTINGS.workers, thread_name_prefix="pass")
_SLOTS: dict[str, asyncio.Semaphore] = {}


def _slot(namespace: str) -> asyncio.Semaphore:
    """The namespace's share of the pass threads: a tenant whose AIS stalls (or whose objects are slow to
    read) holds at most `workers_per_namespace` of them, and every other namespace keeps running."""
    if namespace not in _SLOTS:
        _SLOTS[namespace] = asyncio.Semaphore(SETTINGS.workers_per_namespace)
    return _SLOTS[namespace]


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=15.0)
async def pipeline(
    stopped: kopf.DaemonStopped, body: kopf.Body, name: str, namespace: str | None, logger: Any, **_: Any
) -> None:
    """Level-triggered loop: reconcile, wait (short while work runs, long when settled), repeat.

    A spec change (new metadata.generation), a new retry request (the `shardeddataset.dev/retry` annotation)
    a new refresh request (`shardeddataset.dev/refresh`) or an approval (`shardeddataset.dev/approve`) cuts any
    wait short.
    """
    backoff = 1.0
    while not stopped:
        try:
            async with _slot(namespace or ""):
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(POOL, passes.reconcile_once, namespace or "", name, SETTINGS)
            backoff = 1.0
        except Exception as e:  # API hiccups and bugs alike: log, back off, never kill the daemon
            logger.exception("reconcile failed: %s", e)
            METRICS.error(type(e).__name__)
            result = passes.PassResult(requeue=min(backoff, 60.0))
            backoff *= 2
        for ev in result.events:
            kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message[:1000])
        if result.requeue is None:
            wait = SETTINGS.idle_interval
        elif result.requeue == actions.ACTIVE_REQUEUE:
            wait = SETTINGS.active_interval
        else:
            wait = result.requeue
        seen = _trigger(body)
        waited = 0.0
        while not stopped and waited < wait and _trigger(body) == seen:
            await asyncio.sleep(0.5)
            waited += 0.5


def _trigger(body: kopf.Body) -> tuple[Any, Any, Any, Any]:
    annotations = body.meta.get("annotations") or {}
    return (
        body.meta.get("generation"),
        annotations.get(failures.RETRY_ANNOTATION),
        annotations.get(versions.REFRESH_ANNOTATION),
        annotations.get(guard.APPROVE_ANNOTATION),
    )


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL)
def cleanup(body: kopf.Body, spec: Any, logger: Any, retry: int, **_: Any) -> None:
    """deletionPolicy Delete removes what the resource wrote in AIS; Retain keeps it.

    A deletion that keeps failing (AIS refuses a revoked token, say) is tried `SDS_CLEANUP_ATTEMPTS` times,
    then given up with a Warning Event that says what is left: the resource goes, its namespace can be
    deleted, and the objects stay in AIS for an administrator. Converter Jobs are garbage-collected through
    their ownerReferences either way.
    """
    METRICS.forget(body.meta.get("namespace") or "", body.meta.get("name") or "")
    if spec.get("deletionPolicy", "Retain") != "Delete":
        logger.info("deletionPolicy Retain: shards and index kept in AIS")
        return
    try:
        finalizer.delete_everything(dict(body), SETTINGS)
    except Exception as e:
        attempt = retry + 1
        if attempt >= SETTINGS.cleanup_attempts:
            kopf.warn(body, reason="CleanupAbandoned", message=(
                f"gave up deleting the dataset's objects in AIS after {attempt} attempts; they are left in AIS: "
                f"{finalizer.leftover_summary(dict(body), SETTINGS)} (last error: {redact(str(e))[:300]})"
            )[:1000])  # fmt: skip
            return
        kopf.warn(body, reason="CleanupFailed",
                  message=f"could not delete the dataset's objects in AIS (attempt {attempt}/"
                          f"{SETTINGS.cleanup_attempts}): {redact(str(e))}"[:1000])  # fmt: skip
        raise kopf.TemporaryError(f"cleanup failed: {redact(str(e))}", delay=SETTINGS.cleanup_retry_seconds) from e
    kopf.info(body, reason="Deleted", message="deleted every object this dataset wrote in AIS")
