"""Small AIS client used by the operator and the converter: buckets, objects, archive listings, dSort.

Bucket and object calls go through the AIS Python SDK; dSort is driven over its REST API directly (the SDK's
`Dsort.start` does not accept a plain spec). Retries are short so that an unreachable cluster surfaces quickly
as `AisUnavailable` and the caller decides how to back off.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import requests
import urllib3
from aistore.sdk import Client
from aistore.sdk.const import ACT_LIST, HEADER_ACCEPT, HTTP_METHOD_GET, MSGPACK_CONTENT_TYPE, URL_PATH_BUCKETS
from aistore.sdk.errors import AISError, ErrBckNotFound, ErrObjNotFound, ErrRemoteBckNotFound
from aistore.sdk.list_object_flag import ListObjectFlag
from aistore.sdk.retry_config import RetryConfig
from aistore.sdk.types import ActionMsg, BucketList, ListObjectsMsg, Smap
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from urllib3.util.retry import Retry

from sharded_dataset_operator.core.model import DsortJob, Entry
from sharded_dataset_operator.core.times import epoch

log = logging.getLogger(__name__)
T = TypeVar("T")


class AisUnavailable(Exception):
    """AIS could not be reached or answered with a server error; worth retrying later."""


class BucketNotFound(Exception):
    """The bucket does not exist."""


class AccessDenied(Exception):
    """AIS refused the request for this token (HTTP 401: no or an invalid, expired or revoked token; 403: the
    token's user may not do this). Not an outage: retrying with the same token does not help."""


class ListingError(Exception):
    """A listing ended early or paged inconsistently: never to be read as a smaller dataset."""


class BatchUnsupported(Exception):
    """The cluster does not serve Get-Batch (an older AIS): read one object at a time instead."""


class MissingObject(Exception):
    """An object asked for in a Get-Batch request does not exist."""


@dataclass(frozen=True)
class Membership:
    """The cluster as the proxy's map shows it now: its version, active targets, how many of them answer, and
    when each answering target's process started (target id -> Unix time, from the uptime it reports)."""

    version: int
    targets: int
    answering: int
    started: tuple[tuple[str, float], ...] = ()


UPTIME_HEADER = "ais-node-uptime"  # nanoseconds since the node's process started (AIS /v1/health?cii=true)


def started_at(now: float, uptime_ns: str | None) -> float:
    """A node's start time (Unix seconds) from its reported uptime; 0 when it reports none or garbage."""
    try:
        uptime = int(uptime_ns or "")
    except ValueError:
        return 0.0
    return now - uptime / 1e9 if uptime > 0 else 0.0


MAX_EMPTY_PAGES = 100  # pages with no entries but a continuation token, in a row, before a listing is refused


def _retry_config(attempts: int) -> RetryConfig:
    return RetryConfig(
        http_retry=Retry(total=attempts, backoff_factor=0.5, status_forcelist=[429, 502, 503, 504], connect=0, read=0),
        network_retry=Retrying(
            wait=wait_exponential(multiplier=0.5, max=4),
            stop=stop_after_attempt(attempts),
            retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout)),
            reraise=True,
        ),
    )


class Ais:
    """AIS access for one endpoint (and optional AuthN token)."""

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        attempts: int = 3,
        timeout: tuple[float, float] = (5.0, 120.0),
        pool: int = 16,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.client = Client(
            self.endpoint,
            token=token,
            retry_config=_retry_config(attempts),
            timeout=timeout,
            max_pool_size=pool,
        )
        _skip_environment_lookups(self.client)
        self.session = requests.Session()
        self.session.trust_env = False
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # ------------------------------------------------------------------ buckets and objects

    def _bucket(self, name: str, provider: str) -> Any:
        return self.client.bucket(name, provider=provider)

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

    def bucket_exists(self, name: str, provider: str = "ais") -> bool:
        try:
            self._bucket(name, provider).head()
            return True
        except (ErrBckNotFound, ErrRemoteBckNotFound):
            return False
        except AISError as e:
            if e.status_code == 404:
                return False
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    def ensure_bucket(self, name: str, provider: str = "ais") -> None:
        if not self.bucket_exists(name, provider):
            self._call(lambda: self._bucket(name, provider).create(exist_ok=True))

    def list_objects(
        self, bucket: str, provider: str = "ais", prefix: str = "", archives: bool = False
    ) -> Iterator[Entry]:
        """Objects under `prefix`; with `archives`, members of archives too, as `shard.tar/member`."""
        flags = [ListObjectFlag.ARCH_DIR] if archives else None
        try:
            for e in self._bucket(bucket, provider).list_objects_iter(
                prefix=prefix, props="name,size", page_size=0, flags=flags
            ):
                yield Entry(name=e.name, size=int(e.size or 0))
        except (ErrBckNotFound, ErrRemoteBckNotFound) as e:
            raise BucketNotFound(f"bucket {provider}://{bucket} not found") from e
        except AISError as e:
            if e.status_code == 404:
                raise BucketNotFound(f"bucket {provider}://{bucket} not found") from e
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    def list_pages(
        self,
        bucket: str,
        provider: str = "ais",
        prefix: str = "",
        *,
        props: str = "name,size",
        archives: bool = False,
        page_size: int = 0,
        ahead: bool = False,
    ) -> Iterator[list[Any]]:
        """The listing page by page (SDK `BucketEntry` lists), strictly: it must end with an empty
        continuation token, and a run of empty pages that never ends is a `ListingError`.

        `ahead`: ask for the next page while the caller works on this one (the planner: AIS takes about as long
        to produce a page as the planner takes to classify it).
        """
        flags = [ListObjectFlag.ARCH_DIR] if archives else []
        bck = self._bucket(bucket, provider)

        def fetch(token: str, uuid: str) -> BucketList:
            try:
                return self._list_page(bck, prefix, props, page_size, uuid, token, flags)
            except (ErrBckNotFound, ErrRemoteBckNotFound) as e:
                raise BucketNotFound(f"bucket {provider}://{bucket} not found") from e
            except AISError as e:
                raise _unavailable(e) from e
            except requests.RequestException as e:
                raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

        pool = ThreadPoolExecutor(1, thread_name_prefix="list") if ahead else None
        pending: Future[BucketList] | None = None
        token, uuid, empty = "", "", 0
        try:
            while True:
                page = pending.result() if pending is not None else fetch(token, uuid)
                pending = None
                entries = list(page.entries or [])
                next_token = page.continuation_token or ""
                uuid = page.uuid or uuid
                if next_token and next_token == token and not entries:
                    raise ListingError(f"listing {provider}://{bucket}/{prefix} does not advance past {token!r}")
                if next_token and pool is not None:
                    pending = pool.submit(fetch, next_token, uuid)
                if entries:
                    empty = 0
                    yield entries
                elif next_token:
                    empty += 1
                    if empty > MAX_EMPTY_PAGES:
                        raise ListingError(
                            f"listing {provider}://{bucket}/{prefix} returned {empty} empty pages in a row"
                        )
                if not next_token:
                    return
                token = next_token
        finally:
            if pool is not None:
                if pending is not None:
                    pending.cancel()
                pool.shutdown(wait=True)

    @staticmethod
    def _list_page(
        bck: Any, prefix: str, props: str, page_size: int, uuid: str, token: str, flags: list[ListObjectFlag]
    ) -> BucketList:
        """One page of a listing, as the SDK's `Bucket.list_objects` requests it, without the `Object` it builds
        for every entry (25 µs each: 10 s of the planner's 37 s on 400 k files, measured with cProfile)."""
        value = ListObjectsMsg(
            prefix=prefix, page_size=page_size, uuid=uuid, props=props, continuation_token=token, flags=flags, target=""
        ).as_dict()
        page: BucketList = bck.client.request_deserialize(
            HTTP_METHOD_GET,
            path=f"{URL_PATH_BUCKETS}/{bck.name}",
            headers={HEADER_ACCEPT: MSGPACK_CONTENT_TYPE},
            res_model=BucketList,
            json=ActionMsg(action=ACT_LIST, value=value).model_dump(),
            params=bck.qparam,
        )
        return page

    def object_count(self, bucket: str, provider: str = "ais", prefix: str = "") -> int:
        """How many objects the bucket holds under `prefix`, counted by the targets (bucket summary)."""
        summary = self._call(lambda: self._bucket(bucket, provider).summary(prefix=prefix))
        return int((summary or {}).get("ObjCount", {}).get("obj_count_present") or 0)

    def checksum_type(self, bucket: str, provider: str = "ais") -> str:
        """The bucket's checksum algorithm (what listings' `checksum` values are): xxhash2 by default."""
        info = self._call(lambda: self._bucket(bucket, provider).info())
        props = info[0] if isinstance(info, tuple) else info
        if isinstance(props, str):
            props = json.loads(props)
        return str(((props or {}).get("checksum") or {}).get("type") or "unknown")

    def get_batch(self, bucket: str, names: list[str], provider: str = "ais") -> list[bytes]:
        """The objects' contents in order, in one Get-Batch request (a TAR stream).

        Raises MissingObject if any is absent and BatchUnsupported if the cluster has no Get-Batch.
        """
        if not names:
            return []
        try:
            stream = self.client.batch(list(names), bucket=self._bucket(bucket, provider)).get(raw=True)
        except AISError as e:
            if e.status_code in (405, 501) or (e.status_code in (400, 404) and "moss" in str(e).lower()):
                raise BatchUnsupported(str(e)) from e
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e
        out: list[bytes] = []
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    i = len(out)
                    if i >= len(names):
                        raise AisUnavailable(f"Get-Batch returned more than the {len(names)} objects asked for")
                    expected = f"{bucket}/{names[i]}"
                    if member.name != expected:
                        if member.name.startswith("__404__/"):
                            raise MissingObject(f"{provider}://{bucket}/{names[i]} not found")
                        raise AisUnavailable(f"Get-Batch returned {member.name!r} where {expected!r} was due")
                    f = tar.extractfile(member)
                    out.append(f.read() if f is not None else b"")
        except (tarfile.TarError, OSError, urllib3.exceptions.HTTPError) as e:
            raise AisUnavailable(f"Get-Batch stream from {self.endpoint} broke: {e}") from e
        finally:
            stream.close()
        if len(out) != len(names):
            raise AisUnavailable(f"Get-Batch returned {len(out)} of the {len(names)} objects asked for")
        return out

    def exists(self, bucket: str, name: str, provider: str = "ais") -> bool:
        def head() -> bool:
            self._bucket(bucket, provider).object(name).head()
            return True

        return self._object_call(head, False)

    def stream_lines(self, bucket: str, name: str, provider: str = "ais", missing_ok: bool = True) -> Iterator[str]:
        """An object's text lines (without line ends), read as a stream; nothing if the object is absent
        (MissingObject instead, unless `missing_ok`)."""
        try:
            reader = self._bucket(bucket, provider).object(name).get_reader()
            tail = b""
            for chunk in reader:
                tail += chunk
                *lines, tail = tail.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
            if tail:
                yield tail.rstrip(b"\r").decode("utf-8", errors="replace")
        except (ErrObjNotFound, ErrBckNotFound):
            if not missing_ok:
                raise MissingObject(f"{provider}://{bucket}/{name} not found") from None
            return
        except AISError as e:
            if e.status_code == 404:
                if not missing_ok:
                    raise MissingObject(f"{provider}://{bucket}/{name} not found") from None
                return
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    def get(self, bucket: str, name: str, provider: str = "ais", direct: bool = False) -> bytes | None:
        """Object content, or None if it does not exist.

        `direct` reads from the target that owns the object instead of being redirected there by the proxy
        (one HTTP round trip instead of two: what the converter does for every raw file).
        """

        direct = direct and not self.token  # with AuthN on, targets refuse requests that bypass the proxy

        def read() -> bytes | None:
            data: bytes = self._bucket(bucket, provider).object(name).get_reader(direct=direct).read_all()
            return data

        return self._object_call(read, None)

    def _object_call(self, fn: Callable[[], T], missing: T) -> T:
        """`fn()`, with a missing object or bucket as `missing` and any other failure as AisUnavailable."""
        try:
            return fn()
        except (ErrObjNotFound, ErrBckNotFound):
            return missing
        except AISError as e:
            if e.status_code == 404:
                return missing
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    def read_first_byte(self, bucket: str, name: str, provider: str = "ais") -> bool:
        """Whether this token may read the object (one byte of it is read); False if it does not exist."""

        def read() -> bool:
            self._bucket(bucket, provider).object(name).get_reader(byte_range="bytes=0-0").read_all()
            return True

        return self._object_call(read, False)

    def put(self, bucket: str, name: str, data: bytes, provider: str = "ais") -> None:
        self._call(lambda: self._bucket(bucket, provider).object(name).get_writer().put_content(data))

    def delete_objects(self, bucket: str, names: list[str], provider: str = "ais") -> int:
        """Delete the named objects (missing ones are fine); returns how many were asked for."""
        for name in names:
            try:
                self._bucket(bucket, provider).object(name).delete()
            except (ErrObjNotFound, ErrBckNotFound):
                continue
            except AISError as e:
                if e.status_code != 404:
                    raise _unavailable(e) from e
            except requests.RequestException as e:
                raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e
        return len(names)

    def delete_prefix(
        self, bucket: str, prefix: str, provider: str = "ais", keep: frozenset[str] = frozenset(), batch: int = 10_000
    ) -> int:
        """Delete every object whose name starts with `prefix` (but those in `keep`); returns the count.

        At most `batch` names are held at a time: the listing is taken again after each batch is deleted.
        """
        if not prefix:
            raise ValueError("refusing to delete a whole bucket")
        deleted = 0
        previous: list[str] = []
        while True:
            names: list[str] = []
            try:
                for e in self.list_objects(bucket, provider, prefix):
                    if e.name not in keep:
                        names.append(e.name)
                        if len(names) >= batch:
                            break
            except BucketNotFound:
                return deleted
            if not names:
                return deleted
            if names == previous:
                raise AisUnavailable(f"objects under {provider}://{bucket}/{prefix} are still listed after deletion")
            deleted += self.delete_objects(bucket, names, provider)
            previous = names

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except AISError as e:
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    # ------------------------------------------------------------------ dSort (REST)

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
        """dSort jobs whose description matches the POSIX `regex` (finished ones included)."""
        r = self._rest("GET", "/v1/sort", params={"regex": regex})
        if r.status_code >= 400:
            raise AisUnavailable(f"listing dSort jobs: HTTP {r.status_code}: {r.text[:300]}")
        jobs: list[DsortJob] = []
        for j in r.json() or []:
            jobs.append(self.dsort_job(str(j["id"])) or _job_from_list(j))
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

    def dsort_abort(self, job_id: str) -> None:
        self._rest("DELETE", "/v1/sort/abort", params={"uuid": job_id})

    # ------------------------------------------------------------------ ETL (REST)

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


def _skip_environment_lookups(client: Client) -> None:
    """Per request, `requests` looks for ~/.netrc, proxy variables and CA-bundle paths unless `trust_env` is
    off; with small objects that filesystem probing costs a fifth of the converter's CPU (see bench/)."""
    manager = getattr(getattr(client, "_request_client", None), "session_manager", None)
    if manager is not None:
        manager.session.trust_env = False


class EtlRejected(Exception):
    """AIS refused to start an ETL, or its pods did not become ready: a retry with the same spec fails again."""


class EtlObjectError(Exception):
    """The ETL failed on one object (its transform raised, or timed out): that sample is skipped and counted."""


class DsortRejected(Exception):
    """dSort refused the job spec (a permanent error for this spec)."""


def _job_from_list(j: dict[str, Any]) -> DsortJob:
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


DENIED = (401, 403)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact(text: str) -> str:
    """`text` without bearer tokens: AIS quotes a revoked token in its error, and errors reach Events and logs."""
    return _JWT.sub("<token>", text)


def _unavailable(e: AISError) -> Exception:
    text = redact(str(e))
    if e.status_code in (404,):
        return BucketNotFound(text)
    if e.status_code in DENIED:
        return AccessDenied(f"HTTP {e.status_code}: {text}")
    return AisUnavailable(text)
