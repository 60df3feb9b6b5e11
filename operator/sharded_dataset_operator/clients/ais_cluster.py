"""Cluster-level AIS calls: the cluster map and each target's health, capacity errors, rebalance jobs, dSort
(over its REST API: the SDK's `Dsort.start` does not accept a plain spec) and ETL. A mixin of `clients.ais.Ais`,
which provides the session and the SDK client."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from aistore.sdk import Client
from aistore.sdk.types import Smap

from sharded_dataset_operator.clients.ais_errors import (
    DENIED,
    AccessDenied,
    AisUnavailable,
    DsortRejected,
    EtlObjectError,
    EtlRejected,
    MissingObject,
    redact,
)
from sharded_dataset_operator.core.model import AisJob, DsortJob
from sharded_dataset_operator.core.times import epoch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Membership:
    """The cluster as the proxy's map shows it now: its version, active targets, how many of them answer, and
    when each answering target's process started (target id -> Unix time, from the uptime it reports)."""

    version: int
    targets: int
    answering: int
    started: tuple[tuple[str, float], ...] = ()


UPTIME_HEADER = "ais-node-uptime"  # nanoseconds since the node's process started (AIS /v1/health?cii=true)


class ArchivedJobs:
    """dSort jobs that AIS has archived (finished or aborted: their metrics no longer change), by (endpoint, id),
    so that a pass asks for the details of running jobs only. Bounded: the oldest entries go first."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.jobs: dict[tuple[str, str], DsortJob] = {}
        self.lock = threading.Lock()

    def get(self, endpoint: str, job_id: str) -> DsortJob | None:
        with self.lock:
            return self.jobs.get((endpoint, job_id))

    def put(self, endpoint: str, job: DsortJob) -> None:
        with self.lock:
            self.jobs[(endpoint, job.id)] = job
            while len(self.jobs) > self.limit:
                del self.jobs[next(iter(self.jobs))]


ARCHIVED = ArchivedJobs()


def started_at(now: float, uptime_ns: str | None) -> float:
    """A node's start time (Unix seconds) from its reported uptime; 0 when it reports none or garbage."""
    try:
        uptime = int(uptime_ns or "")
    except ValueError:
        return 0.0
    return now - uptime / 1e9 if uptime > 0 else 0.0


def job_from_list(j: dict[str, Any]) -> DsortJob:
    m = j.get("Metrics") or {}
    return DsortJob(
        id=str(j["id"]),
        description=str(m.get("description") or ""),
        finished=bool(j.get("archived")) and not bool(j.get("aborted")),
        aborted=bool(j.get("aborted")),
        errors=tuple(str(e) for e in (m.get("errors") or [])),
        extracted_records=0,
        created_shards=0,
    )


class ClusterCalls:
    """The cluster-level calls of `Ais` (see the module)."""

    endpoint: str
    token: str | None
    timeout: tuple[float, float]
    client: Client
    session: requests.Session

    def _call(self, fn: Any) -> Any:  # provided by Ais
        raise NotImplementedError

    def membership(self) -> Membership | None:
        """The proxy's cluster map, each active target probed on its own health endpoint; None if unreachable."""
        try:
            r = self.session.get(f"{self.endpoint}/v1/daemon", params={"what": "smap"}, timeout=(2.0, 5.0))
            if r.status_code in DENIED:  # AIS answers, but this token may not see the map (no SHOW-CLUSTER)
                return Membership(version=0, targets=0, answering=0)
            r.raise_for_status()
            smap = Smap.model_validate(r.json())
        except (requests.RequestException, ValueError) as e:
            log.debug("cluster map unavailable: %s", e)
            return None
        active = [t for t in smap.tmap.values() if not t.in_maint_or_decomm()]
        started: list[tuple[str, float]] = []
        for t in sorted(active, key=lambda t: t.daemon_id):
            at = self._started_at(t.public_net.direct_url) if t.public_net else None
            if at is not None:
                started.append((t.daemon_id, at))
        return Membership(version=smap.version, targets=len(active), answering=len(started), started=tuple(started))

    def capacity_problems(self) -> list[str]:
        """Each target's capacity error (above its high watermark, out of space), as the target states it.

        Best effort: asked for through the proxy only when AIS has dropped a dSort job without saying why.
        """
        try:
            r = self.session.get(f"{self.endpoint}/v1/daemon", params={"what": "smap"}, timeout=(2.0, 5.0))
            r.raise_for_status()
            targets = sorted(Smap.model_validate(r.json()).tmap)
        except (requests.RequestException, ValueError):
            return []
        problems: list[str] = []
        for tid in targets:
            try:
                d = self.session.get(
                    f"{self.endpoint}/v1/reverse/daemon",
                    params={"what": "node_status"},
                    headers={"ais-node-id": tid},
                    timeout=(2.0, 5.0),
                )
                capacity = (d.json() or {}).get("capacity") or {} if d.status_code == 200 else {}
                error = str(capacity.get("cs_err") or "")
            except (requests.RequestException, ValueError):
                continue
            if error:
                problems.append(f"target {tid}: {error}")
        return problems

    def _started_at(self, url: str) -> float | None:
        """When the node at `url` started (Unix time, from its uptime), if it answers its health check now (one
        quick request, no retries); None if it does not. A node that does not report its uptime counts as
        started at 0."""
        try:
            r = self.session.get(f"{url.rstrip('/')}/v1/health", params={"cii": "true"}, timeout=(2.0, 3.0))
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        return started_at(time.time(), r.headers.get(UPTIME_HEADER))

    def _rest(self, method: str, path: str, **kw: Any) -> requests.Response:
        try:
            r = self.session.request(method, f"{self.endpoint}{path}", timeout=self.timeout, **kw)
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e
        if r.status_code >= 500 and r.status_code != 501:
            raise AisUnavailable(f"AIS {method} {path}: HTTP {r.status_code}: {redact(r.text)[:300]}")
        if r.status_code in DENIED:
            raise AccessDenied(f"{method} {path}: HTTP {r.status_code}: {redact(r.text)[:300]}")
        return r

    def running_rebalances(self) -> list[str]:
        """The cluster's running rebalance jobs ("rebalance[<id>]"): while one runs, objects are moving between
        targets and a new dSort job may not find its input shards. Empty for a token that may not see jobs."""
        try:
            jobs = self._call(lambda: self.client.cluster().list_running_jobs(job_kind="rebalance"))
        except AccessDenied:  # a token that may not see the cluster's jobs: nothing to wait for that it can see
            return []
        return sorted(str(j) for j in jobs or [])

    def dsort_start(self, spec: dict[str, Any]) -> str:
        r = self._rest("POST", "/v1/sort", json=spec)
        if r.status_code == 501:
            raise DsortRejected("this AIS cluster was built without dSort (aisnode -tags dsort)")
        if r.status_code >= 400:
            raise DsortRejected(f"dSort rejected the request: HTTP {r.status_code}: {r.text[:500]}")
        return r.text.strip().strip('"')

    def dsort_find(self, regex: str) -> list[DsortJob]:
        """dSort jobs whose description matches the POSIX `regex` (finished ones included): one listing, and the
        details of each job that is still running or not seen archived before (`ARCHIVED`)."""
        r = self._rest("GET", "/v1/sort", params={"regex": regex})
        if r.status_code >= 400:
            raise AisUnavailable(f"listing dSort jobs: HTTP {r.status_code}: {r.text[:300]}")
        jobs: list[DsortJob] = []
        for j in r.json() or []:
            job_id, archived = str(j["id"]), bool(j.get("archived"))
            known = ARCHIVED.get(self.endpoint, job_id) if archived else None
            if known is None:
                known = self.dsort_job(job_id) or job_from_list(j)
                if archived:
                    ARCHIVED.put(self.endpoint, known)
            jobs.append(known)
        return jobs

    def dsort_job(self, job_id: str) -> DsortJob | None:
        r = self._rest("GET", "/v1/sort", params={"uuid": job_id})
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise AisUnavailable(f"dSort job {job_id}: HTTP {r.status_code}: {r.text[:300]}")
        per_target: dict[str, Any] = r.json() or {}
        if not per_target:
            return None
        finished, aborted, records, shards, desc = True, False, 0, 0, ""
        inputs = extracted = to_create = 0
        ended: list[float] = []
        errors: list[str] = []
        for info in per_target.values():
            m = info.get("Metrics") or {}
            desc = m.get("description") or desc
            aborted = aborted or bool(info.get("aborted") or m.get("aborted"))
            creation = m.get("shard_creation") or {}
            finished = finished and bool(creation.get("finished"))
            errors.extend(str(e) for e in (m.get("errors") or []))
            ended.extend(t for t in [epoch(info.get("finish_time"))] if t is not None)
            extraction = m.get("local_extraction") or {}
            records += int(extraction.get("extracted_record_count") or 0)
            inputs += int(extraction.get("total_count") or 0)
            extracted += int(extraction.get("extracted_count") or 0)
            shards += int(creation.get("created_count") or 0)
            to_create += int(creation.get("to_create") or 0)
        return DsortJob(
            id=job_id,
            description=desc,
            finished=finished and not aborted,
            aborted=aborted,
            errors=tuple(dict.fromkeys(errors)),
            extracted_records=records,
            created_shards=shards,
            input_shards=inputs,
            extracted_shards=extracted,
            to_create=to_create,
            ended_at=max(ended) if ended else None,
        )

    def prefetch_start(self, bucket: str, provider: str, prefix: str) -> str:
        """Start one AIS prefetch job over a remote bucket's objects under `prefix` (all of them when it is
        empty), each at the backend's latest version; returns the job id."""
        value = {"template": prefix, "latest-ver": True}
        r = self._rest("POST", f"/v1/buckets/{bucket}", params={"provider": provider},
                       json={"action": "prefetch-listrange", "value": value})  # fmt: skip
        if r.status_code >= 400:
            raise AisUnavailable(f"prefetch of {provider}://{bucket}/{prefix}: HTTP {r.status_code}: {r.text[:300]}")
        return r.text.strip().strip('"')

    def job_status(self, job_id: str) -> AisJob | None:
        """An AIS job (xaction) as AIS reports it; None when AIS does not know it (any more)."""
        r = self._rest("GET", "/v1/cluster", params={"what": "status"}, json={"ID": job_id, "Kind": ""})
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise AisUnavailable(f"AIS job {job_id}: HTTP {r.status_code}: {r.text[:300]}")
        body: dict[str, Any] = r.json() or {}
        finished = bool(body.get("end_time")) and not str(body.get("end_time")).startswith("0001")
        return AisJob(job_id, finished, bool(body.get("aborted")), str(body.get("err") or ""))

    def dsort_abort(self, job_id: str) -> None:
        self._rest("DELETE", "/v1/sort/abort", params={"uuid": job_id})

    def etl_list(self, prefix: str = "") -> dict[str, str]:
        """The ETLs AIS knows whose name starts with `prefix`: name -> stage (Initializing, Running, Aborted,
        Unknown)."""
        r = self._rest("GET", "/v1/etl")
        if r.status_code == 501:
            return {}  # built without the etl tag: no ETL exists
        if r.status_code >= 400:
            raise AisUnavailable(f"listing ETLs: HTTP {r.status_code}: {redact(r.text)[:300]}")
        return {
            str(e.get("id")): str(e.get("stage") or "Unknown")
            for e in r.json() or []
            if str(e.get("id")).startswith(prefix)
        }

    def etl_init(self, message: dict[str, Any], timeout: float) -> None:
        """Start an ETL (`PUT /v1/etl`); returns once its pods run on every target. `EtlRejected` when AIS
        refuses it or its pods do not become ready within the message's init timeout."""
        try:
            r = self.session.put(f"{self.endpoint}/v1/etl", json=message, timeout=(self.timeout[0], timeout))
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e
        if r.status_code in DENIED:
            raise AccessDenied(f"PUT /v1/etl: HTTP {r.status_code}: {redact(r.text)[:300]}")
        if r.status_code == 501 or "requires Kubernetes" in r.text or "not built" in r.text:
            raise EtlRejected(f"this AIS cluster cannot run ETLs: {redact(r.text)[:300]}")
        if r.status_code == 503:
            raise AisUnavailable(f"AIS PUT /v1/etl: HTTP 503: {redact(r.text)[:300]}")
        if r.status_code >= 400:
            raise EtlRejected(
                f"AIS did not start ETL {message.get('name')}: HTTP {r.status_code}: {redact(r.text)[:500]}"
            )

    def etl_delete(self, name: str) -> None:
        """Stop and remove an ETL (its pods and Services go); an ETL that is already gone is fine."""
        # A stop can be refused (an ETL still starting); the DELETE that follows removes it all the same.
        self._rest("POST", f"/v1/etl/{name}/stop")
        r = self._rest("DELETE", f"/v1/etl/{name}")
        if r.status_code >= 400 and r.status_code != 404:
            raise AisUnavailable(f"DELETE /v1/etl/{name}: HTTP {r.status_code}: {redact(r.text)[:300]}")

    def get_through_etl(self, bucket: str, name: str, etl: str, provider: str = "ais") -> bytes:
        """The object as ETL `etl` returns it: the transform runs in the ETL pod next to the target that holds
        the object. `EtlObjectError` when the ETL failed on this object; AisUnavailable when AIS did not answer."""
        url = f"{self.endpoint}/v1/objects/{bucket}/{quote(name, safe='/')}"
        try:
            r = self.session.get(url, params={"provider": provider, "etl_name": etl}, timeout=self.timeout)
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e
        if r.status_code == 200:
            return r.content
        text = redact(r.text)[:300]
        if r.status_code in DENIED:
            raise AccessDenied(f"GET {bucket}/{name} through ETL {etl}: HTTP {r.status_code}: {text}")
        if r.status_code == 404 and "etl" in text.lower() and "not exist" in text.lower():
            raise AisUnavailable(f"ETL {etl} is gone: {text}")
        if r.status_code == 404:
            raise MissingObject(f"{bucket}/{name}: not found")
        if "transform error" in text or "ETL" in text:
            raise EtlObjectError(f"HTTP {r.status_code}: {text}")
        raise AisUnavailable(f"GET {bucket}/{name} through ETL {etl}: HTTP {r.status_code}: {text}")
