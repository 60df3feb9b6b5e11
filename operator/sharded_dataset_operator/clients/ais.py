"""Small AIS client used by the operator and the converter: buckets, objects, listings, batched reads (and, from
`ais_cluster.py`, the cluster map, dSort and ETL; the errors are in `ais_errors.py`).

Bucket and object calls go through the AIS Python SDK. Retries are short so that an unreachable cluster surfaces quickly
as `AisUnavailable` and the caller decides how to back off.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import requests
import urllib3
from aistore.sdk import Client
from aistore.sdk.const import (
    ACT_LIST,
    HEADER_ACCEPT,
    HEADER_BUCKET_PROPS,
    HTTP_METHOD_GET,
    MSGPACK_CONTENT_TYPE,
    URL_PATH_BUCKETS,
)
from aistore.sdk.errors import AISError, ErrBckNotFound, ErrObjNotFound, ErrRemoteBckNotFound
from aistore.sdk.list_object_flag import ListObjectFlag
from aistore.sdk.response_handler import AISResponseHandler
from aistore.sdk.retry_config import RetryConfig
from aistore.sdk.types import ActionMsg, BucketList, ListObjectsMsg
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from urllib3.util.retry import Retry

from sharded_dataset_operator.clients.ais_cluster import UPTIME_HEADER, ClusterCalls, Membership, started_at
from sharded_dataset_operator.clients.ais_errors import (
    DENIED,
    AccessDenied,
    AisUnavailable,
    BackendDenied,
    BackendUnavailable,
    BatchUnsupported,
    BucketNotFound,
    DsortRejected,
    EtlObjectError,
    EtlRejected,
    ListingError,
    MissingObject,
    backend_denied,
    redact,
)
from sharded_dataset_operator.clients.ais_errors import unavailable as _unavailable
from sharded_dataset_operator.clients.ais_objects import ObjectBatchCalls
from sharded_dataset_operator.core.model import Entry

__all__ = [
    "DENIED",
    "UPTIME_HEADER",
    "AccessDenied",
    "Ais",
    "AisUnavailable",
    "BackendDenied",
    "BackendUnavailable",
    "BatchUnsupported",
    "BucketNotFound",
    "DsortRejected",
    "EtlObjectError",
    "EtlRejected",
    "ListingError",
    "Membership",
    "MissingObject",
    "redact",
    "started_at",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


MAX_EMPTY_PAGES = 100  # pages with no entries but a continuation token, in a row, before a listing is refused


DIRECT_PUT_BYTES = 1 << 20
"""Bodies from this size go to the object's target directly (`Ais._put_direct`): 1 MiB still went through
the proxy in 5 ms, 5 MiB took 518 ms."""


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


class Ais(ClusterCalls, ObjectBatchCalls):
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
        self._settings = (attempts, pool)
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
        # large PUTs straight to the target (`_put_direct`), retried as the SDK retries
        retry = _retry_config(attempts)
        self._put_session = requests.Session()
        self._put_session.trust_env = False
        self._put_session.headers.update(self.session.headers)
        adapter = requests.adapters.HTTPAdapter(max_retries=retry.http_retry, pool_maxsize=pool)
        self._put_session.mount("http://", adapter)
        self._put_retry = retry.network_retry

    # ------------------------------------------------------------------ buckets and objects

    def _bucket(self, name: str, provider: str) -> Any:
        return self.client.bucket(name, provider=provider)

    def bucket_exists(self, name: str, provider: str = "ais") -> bool:
        try:
            self._bucket(name, provider).head()
            return True
        except AISError as e:
            if _is_missing(e):
                return False
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    def ensure_bucket(self, name: str, provider: str = "ais") -> None:
        if not self.bucket_exists(name, provider):
            self._call(lambda: self._bucket(name, provider).create(exist_ok=True))

    def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> Iterator[Entry]:
        """Objects under `prefix`."""
        try:
            for e in self._bucket(bucket, provider).list_objects_iter(prefix=prefix, props="name,size", page_size=0):
                yield Entry(name=e.name, size=int(e.size or 0))
        except AISError as e:
            if _is_missing(e):
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
        remote_props: bool = False,
    ) -> Iterator[list[Any]]:
        """The listing page by page (SDK `BucketEntry` lists), strictly: it must end with an empty
        continuation token, and a run of empty pages that never ends is a `ListingError`.

        `archives`: each archive followed by its members, `shard.tar/member`, sorted by name.

        `ahead`: ask for the next page while the caller works on this one (the planner: AIS takes about as long
        to produce a page as the planner takes to classify it).

        `remote_props`: a remote bucket's objects as its backend has them now (an S3 object's current ETag as
        its `checksum`), not as AIS cached them: without it, an object changed in S3 after AIS cached it is
        listed with the cached copy's ETag.
        """
        flags = [ListObjectFlag.ARCH_DIR] if archives else []
        if remote_props:
            flags.append(ListObjectFlag.ONLY_REMOTE_PROPS)
        bck = self._bucket(bucket, provider)

        def fetch(token: str, uuid: str) -> BucketList:
            try:
                return self._list_page(bck, prefix, props, page_size, uuid, token, flags)
            except AISError as e:
                if isinstance(e, (ErrBckNotFound, ErrRemoteBckNotFound)) and _is_missing(e):
                    raise BucketNotFound(f"bucket {provider}://{bucket} not found") from e
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

    def fresh(self) -> Ais:
        """A new client with this one's endpoint, token and settings (a forked process needs its own: HTTP
        connections are never shared across processes)."""
        attempts, pool = self._settings
        return Ais(self.endpoint, self.token, attempts=attempts, timeout=self.timeout, pool=pool)

    def object_count(self, bucket: str, provider: str = "ais", prefix: str = "") -> int:
        """How many objects the bucket holds under `prefix`, counted by the targets (bucket summary)."""
        summary = self._call(lambda: self._bucket(bucket, provider).summary(prefix=prefix))
        return int((summary or {}).get("ObjCount", {}).get("obj_count_present") or 0)

    def checksum_type(self, bucket: str, provider: str = "ais") -> str:
        """The bucket's checksum algorithm (what listings' `checksum` values are): xxhash2 by default.

        From the bucket's properties (one HEAD), not the SDK's `info()`, which also waits for a summary job of
        the whole bucket (2 s on an idle local cluster, more with its size)."""
        headers = self._call(lambda: self._bucket(bucket, provider).head())
        props = json.loads((headers or {}).get(HEADER_BUCKET_PROPS) or "{}")
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

    def copy_to(self, bucket: str, name: str, target: BinaryIO, provider: str = "ais", latest: bool = False) -> bool:
        """Stream an object into `target` (a file: memory stays one chunk); False if it does not exist. `latest`
        as in `get`."""

        def copy() -> bool:
            for chunk in self._bucket(bucket, provider).object(name).get_reader(latest=latest):
                target.write(chunk)
            return True

        return self._object_call(copy, False)

    def stream_lines(
        self, bucket: str, name: str, provider: str = "ais", missing_ok: bool = True, latest: bool = False
    ) -> Iterator[str]:
        """An object's text lines (without line ends), read as a stream; nothing if the object is absent
        (MissingObject instead, unless `missing_ok`). `latest` as in `get`."""
        try:
            reader = self._bucket(bucket, provider).object(name).get_reader(latest=latest)
            tail = b""
            for chunk in reader:
                tail += chunk
                *lines, tail = tail.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
            if tail:
                yield tail.rstrip(b"\r").decode("utf-8", errors="replace")
        except AISError as e:
            if _is_missing(e):
                if not missing_ok:
                    raise MissingObject(f"{provider}://{bucket}/{name} not found") from None
                return
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    def stream_chunks(
        self, bucket: str, name: str, provider: str = "ais", chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """An object's bytes as a stream of chunks (memory stays one chunk); MissingObject if it is absent, and
        AisUnavailable for a read cut short (an error, never a shorter stream)."""
        try:
            yield from self._bucket(bucket, provider).object(name).get_reader(chunk_size=chunk_size)
        except AISError as e:
            if _is_missing(e):
                raise MissingObject(f"{provider}://{bucket}/{name} not found") from None
            raise _unavailable(e) from e
        except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    def get(
        self, bucket: str, name: str, provider: str = "ais", direct: bool = False, latest: bool = False
    ) -> bytes | None:
        """Object content, or None if it does not exist.

        `direct` reads from the target that owns the object instead of being redirected there by the proxy
        (one HTTP round trip instead of two: what the converter does for every raw file). `latest`: of a remote
        bucket, the backend's current version (AIS checks it and fetches it again if its copy is stale).
        """

        direct = direct and not self.token  # with AuthN on, targets refuse requests that bypass the proxy

        def read() -> bytes | None:
            reader = self._bucket(bucket, provider).object(name).get_reader(direct=direct, latest=latest)
            data: bytes = reader.read_all()
            return data

        return self._object_call(read, None)

    def _object_call(self, fn: Callable[[], T], missing: T) -> T:
        """`fn()`, with a missing object or bucket as `missing` and any other failure as AisUnavailable."""
        try:
            return fn()
        except AISError as e:
            if _is_missing(e):
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
        """Store `data` as the object. A body of `DIRECT_PUT_BYTES` or more over plain HTTP goes to the
        object's target directly (`_put_direct`); anything else through the SDK."""
        if len(data) >= DIRECT_PUT_BYTES and self.endpoint.startswith("http://"):
            self._call(lambda: self._put_direct(bucket, name, data, provider))
        else:
            self._call(lambda: self._bucket(bucket, provider).object(name).get_writer().put_content(data))

    def _put_direct(self, bucket: str, name: str, data: bytes, provider: str) -> None:
        """PUT without a body to the proxy for the target's address (its redirect), then the body to the target.

        Over plain HTTP the SDK sends the whole body to the proxy, which answers with the redirect without
        reading it: a body of more than a few MiB then stalls for about half a second before the client follows
        the redirect (local cluster, 2026-12-05: 5 MiB 518 ms -> 17 ms, 20 MiB 555 -> 49 ms, 64 MiB 639 ->
        217 ms). The SDK itself does this for HTTPS only. Errors are the SDK's (`AISResponseHandler`).
        """
        bck = self._bucket(bucket, provider)
        url = f"{self.endpoint}/v1/objects/{bck.name}/{quote(name)}"
        handler = AISResponseHandler()
        for attempt in self._put_retry:
            with attempt:
                asked = self._put_session.put(
                    url, params=bck.qparam, data=b"", allow_redirects=False, timeout=self.timeout
                )
                asked.close()
                target = asked.headers.get("Location") if asked.status_code in (301, 302, 307, 308) else None
                if target is None:
                    handler.handle_response(asked)
                    raise AisUnavailable(f"AIS at {self.endpoint}: no redirect for PUT {bucket}/{name}")
                handler.handle_response(self._put_session.put(target, data=data, timeout=self.timeout)).close()

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except AISError as e:
            raise _unavailable(e) from e
        except requests.RequestException as e:
            raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

    # ------------------------------------------------------------------ ETL (REST)


def _skip_environment_lookups(client: Client) -> None:
    """Per request, `requests` looks for ~/.netrc, proxy variables and CA-bundle paths unless `trust_env` is
    off; with small objects that filesystem probing costs a fifth of the converter's CPU (see bench/)."""
    manager = getattr(getattr(client, "_request_client", None), "session_manager", None)
    if manager is not None:
        manager.session.trust_env = False


def _is_missing(e: AISError) -> bool:
    """A 404 of a missing object or bucket; raises BackendDenied for a remote backend's refusal of AIS's
    credentials, which AIS also answers with 404 (never taken for "missing")."""
    denied = backend_denied(e)
    if denied is not None:
        raise denied from e
    return isinstance(e, (ErrObjNotFound, ErrBckNotFound, ErrRemoteBckNotFound)) or e.status_code == 404
