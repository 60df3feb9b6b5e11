"""What AIS calls raise, as the operator and the pods tell them apart (`clients/ais.py` re-exports them), and the
token redaction every error text goes through."""

from __future__ import annotations

import re

from aistore.sdk.errors import AISError


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


class EtlRejected(Exception):
    """AIS refused to start an ETL, or its pods did not become ready: a retry with the same spec fails again."""


class EtlObjectError(Exception):
    """The ETL failed on one object (its transform raised, or timed out): that sample is skipped and counted."""


class DsortRejected(Exception):
    """dSort refused the job spec (a permanent error for this spec)."""


DENIED = (401, 403)


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact(text: str) -> str:
    """`text` without bearer tokens: AIS quotes a revoked token in its error, and errors reach Events and logs."""
    return _JWT.sub("<token>", text)


def unavailable(e: AISError) -> Exception:
    text = redact(str(e))
    if e.status_code in (404,):
        return BucketNotFound(text)
    if e.status_code in DENIED:
        return AccessDenied(f"HTTP {e.status_code}: {text}")
    return AisUnavailable(text)
