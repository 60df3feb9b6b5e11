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


class BackendDenied(AccessDenied):
    """A remote bucket's backend (S3, ...) refused the credentials AIS uses for it (wrong or revoked keys, an
    unknown profile): AIS passes the backend's error on, with HTTP 500 on a listing and 404 on a GET, so it is
    told by the backend's error code in the text. Never taken for a missing object or bucket."""


class BackendUnavailable(AisUnavailable):
    """AIS answers, but a remote bucket's backend does not (S3 down or unreachable): the read waits for it."""


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


# the backend error codes (S3's, and the S3 SDK's) that say "these credentials may not": AIS quotes them as
# `aws-error[<code>: ...]`; XAdminUserNotFound is what versitygw answers for an access key it does not know
_BACKEND_ERROR = re.compile(r"\b(aws|gcp|azure|oci)-error\[")
BACKEND_DENIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "XAdminUserNotFound",
                   "ExpiredToken", "InvalidToken", "AllAccessDisabled", "failed to get shared config profile",
                   "NoCredentialProviders", "AuthorizationHeaderMalformed")  # fmt: skip


BACKEND_OUTAGES = ("connection refused", "connection reset", "i/o timeout", "no such host", "dial tcp",
                   "ServiceUnavailable", "SlowDown", "RequestTimeout", "exceeded maximum number of")  # fmt: skip


def backend_denied(e: Exception) -> BackendDenied | None:
    """The backend's refusal of AIS's credentials, if `e` (any AIS error, 404s included) is one."""
    text = redact(str(e))
    if _BACKEND_ERROR.search(text) and any(m in text for m in BACKEND_DENIALS):
        return BackendDenied(f"the bucket's backend refused the credentials AIS uses for it: {text}")
    return None


def unavailable(e: AISError) -> Exception:
    text = redact(str(e))
    denied = backend_denied(e)
    if denied is not None:
        return denied
    if _BACKEND_ERROR.search(text) and any(m in text for m in BACKEND_OUTAGES):
        return BackendUnavailable(f"the bucket's backend does not answer AIS: {text}")
    if e.status_code in (404,):
        return BucketNotFound(text)
    if e.status_code in DENIED:
        return AccessDenied(f"HTTP {e.status_code}: {text}")
    return AisUnavailable(text)
