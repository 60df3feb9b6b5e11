"""Small AIS client used by the operator and the converter: buckets, objects, archive listings, dSort.

Bucket and object calls go through the AIS Python SDK; dSort is driven over its REST API directly (the SDK's
`Dsort.start` does not accept a plain spec). Retries are short so that an unreachable cluster surfaces quickly
as `AisUnavailable` and the caller decides how to back off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import requests
from aistore.sdk import Client
from aistore.sdk.errors import AISError, ErrBckNotFound, ErrObjNotFound, ErrRemoteBckNotFound
from aistore.sdk.list_object_flag import ListObjectFlag
from aistore.sdk.retry_config import RetryConfig
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from urllib3.util.retry import Retry

from ..model import DsortJob, Entry

log = logging.getLogger(__name__)


class AisUnavailable(Exception):
    """AIS could not be reached or answered with a server error; worth retrying later."""


class BucketNotFound(Exception):
    """The bucket does not exist."""


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

    def get(self, bucket: str, name: str, provider: str = "ais", direct: bool = False) -> bytes | None:
        """Object content, or None if it does not exist.

        `direct` reads from the target that owns the object instead of being redirected there by the proxy
        (one HTTP round trip instead of two: what the converter does for every raw file).
        """
        try:
            data: bytes = self._bucket(bucket, provider).object(name).get_reader(direct=direct).read_all()
            return data
        except (ErrObjNotFound, ErrBckNotFound):
            return None
        except AISError as e:
            if e.status_code == 404:
                return None
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

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

    def delete_prefix(self, bucket: str, prefix: str, provider: str = "ais") -> int:
        """Delete every object whose name starts with `prefix`; returns the count."""
        if not prefix:
            raise ValueError("refusing to delete a whole bucket")
        try:
            names = [e.name for e in self.list_objects(bucket, provider, prefix)]
        except BucketNotFound:
            return 0
        return self.delete_objects(bucket, names, provider)

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
            raise AisUnavailable(f"AIS {method} {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r

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
        errors: list[str] = []
        for info in per_target.values():
            m = info.get("Metrics") or {}
            desc = m.get("description") or desc
            aborted = aborted or bool(info.get("aborted") or m.get("aborted"))
            creation = m.get("shard_creation") or {}
            finished = finished and bool(creation.get("finished"))
            errors.extend(str(e) for e in (m.get("errors") or []))
            records += int((m.get("local_extraction") or {}).get("extracted_record_count") or 0)
            shards += int(creation.get("created_count") or 0)
        return DsortJob(
            id=job_id,
            description=desc,
            finished=finished and not aborted,
            aborted=aborted,
            errors=tuple(dict.fromkeys(errors)),
            extracted_records=records,
            created_shards=shards,
        )

    def dsort_abort(self, job_id: str) -> None:
        self._rest("DELETE", "/v1/sort/abort", params={"uuid": job_id})


def _skip_environment_lookups(client: Client) -> None:
    """Per request, `requests` looks for ~/.netrc, proxy variables and CA-bundle paths unless `trust_env` is
    off; with small objects that filesystem probing costs a fifth of the converter's CPU (see bench/)."""
    manager = getattr(getattr(client, "_request_client", None), "session_manager", None)
    if manager is not None:
        manager.session.trust_env = False


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


def _unavailable(e: AISError) -> Exception:
    if e.status_code in (404,):
        return BucketNotFound(str(e))
    return AisUnavailable(str(e))
