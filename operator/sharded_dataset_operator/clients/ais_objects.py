"""The batch object calls of `Ais`: deleting many objects (AIS multi-object delete jobs) and copying shards
within a bucket (server-side copies, a few at a time)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from aistore.sdk.errors import AISError, ErrBckNotFound, ErrObjNotFound

from sharded_dataset_operator.clients.ais_errors import (
    AccessDenied,
    AisUnavailable,
    BucketNotFound,
    MissingObject,
)
from sharded_dataset_operator.clients.ais_errors import unavailable as _unavailable
from sharded_dataset_operator.core.model import AisJob, Entry

log = logging.getLogger(__name__)

MULTI_DELETE_FROM = 16
"""Names from which a delete is one AIS multi-object job rather than a DELETE per object (a job costs a few
requests: start, then status polls)."""
MULTI_DELETE_BATCH = 10_000
"""Names per multi-object delete job (the request body holds them all)."""

COPY_THREADS = 2
"""Server-side copies in flight at once (each is one request that returns when the copy is written)."""


class ObjectBatchCalls:
    """Deletions and copies of many objects (see the module); mixed into `Ais`."""

    endpoint: str

    def _bucket(self, name: str, provider: str) -> Any:  # provided by Ais
        raise NotImplementedError

    def _call(self, fn: Any) -> Any:  # provided by Ais
        raise NotImplementedError

    def job_status(self, job_id: str) -> AisJob | None:  # provided by Ais (ClusterCalls)
        raise NotImplementedError

    def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> Iterator[Entry]:  # provided by Ais
        raise NotImplementedError

    def copy_objects(self, bucket: str, pairs: list[tuple[str, str]], provider: str = "ais") -> int:
        """Copy each (source, destination) object within `bucket` on the AIS side (the bytes never pass through
        the operator), `COPY_THREADS` at a time; returns how many. A missing source raises MissingObject."""

        def copy(pair: tuple[str, str]) -> None:
            source, destination = pair
            b = self._bucket(bucket, provider)
            try:
                b.object(source).copy(b.object(destination))
            except (ErrObjNotFound, ErrBckNotFound):
                raise MissingObject(f"{provider}://{bucket}/{source} not found: not copied") from None
            except AISError as e:
                if e.status_code == 404:
                    raise MissingObject(f"{provider}://{bucket}/{source} not found: not copied") from None
                raise _unavailable(e) from e
            except requests.RequestException as e:
                raise AisUnavailable(f"AIS at {self.endpoint}: {e}") from e

        with ThreadPoolExecutor(max_workers=COPY_THREADS, thread_name_prefix="ais-copy") as pool:
            for _ in pool.map(copy, pairs):
                pass
        return len(pairs)

    def delete_objects(
        self, bucket: str, names: list[str], provider: str = "ais", *, multi_from: int = MULTI_DELETE_FROM
    ) -> int:
        """Delete the named objects (missing ones are fine); returns how many were asked for.

        From `multi_from` names on: one AIS multi-object delete job per `MULTI_DELETE_BATCH` names, each waited
        for. Fewer names, or a job that cannot be started, watched or that ends with an error (a token without
        the cluster's rights, say): one DELETE per object, which reports the error of any object that is left.
        """
        rest = names
        if len(names) >= multi_from:
            rest = []
            for start in range(0, len(names), MULTI_DELETE_BATCH):
                chunk = names[start : start + MULTI_DELETE_BATCH]
                if not self._delete_job(bucket, chunk, provider):
                    rest.extend(chunk)
        for name in rest:
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

    def _delete_job(self, bucket: str, names: list[str], provider: str, timeout: float = 600.0) -> bool:
        """One multi-object delete job over `names`, waited for; False when it could not be started or
        watched, or did not end cleanly (the caller deletes those names one by one)."""
        try:
            job = str(self._call(lambda: self._bucket(bucket, provider).objects(obj_names=names).delete())).strip()
        except BucketNotFound:
            return True  # no bucket, no objects
        except AccessDenied as e:
            log.info("multi-object delete in %s://%s refused (%s): deleting one by one", provider, bucket, e)
            return False
        job = job.strip('"')
        if not job:
            return False
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            try:
                status = self.job_status(job)
            except AccessDenied:
                return False  # may start jobs but not watch them: make sure one object at a time
            if status is None:
                return False  # AIS does not know the job (any more): nothing says it finished
            if status.finished:
                if status.aborted or status.error:
                    log.info("multi-object delete job %s in %s://%s: %s, deleting one by one", job, provider, bucket,
                                status.error or "aborted")  # fmt: skip
                    return False
                return True
            if time.monotonic() > deadline:
                raise AisUnavailable(f"multi-object delete job {job} in {provider}://{bucket} ran over {timeout:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

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
