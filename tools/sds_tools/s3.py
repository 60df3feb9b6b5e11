"""Writing example data straight to an S3 server (not through AIS), with boto3 and the standard S3 environment:
`S3_ENDPOINT` (the local cluster's versitygw: `eval "$(make -s cluster-env)"`), `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`. Path-style addressing, as S3-compatible servers expect."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from sds_tools.exampledata import _run_bounded


def client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client for `endpoint` (default: `S3_ENDPOINT`), credentials and region from the environment."""
    import boto3
    from botocore.config import Config

    url = endpoint or os.environ.get("S3_ENDPOINT")
    if not url:
        raise ValueError('S3_ENDPOINT is not set (eval "$(make -s cluster-env)")')
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=url, region_name=os.environ.get("AWS_REGION", "us-east-1"), config=config)


def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create `bucket` unless it exists."""
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=bucket)


def write_s3(
    bucket: str, files: Iterable[tuple[str, bytes]], prefix: str = "", workers: int = 8, endpoint: str | None = None
) -> dict[str, int]:
    """PUT every (relative path, bytes) as `<prefix><path>` into `bucket` (created if missing); files and bytes."""
    s3 = client(endpoint)
    ensure_bucket(s3, bucket)
    stats = {"files": 0, "bytes": 0}

    def put(name: str, data: bytes) -> object:
        stats["files"] += 1
        stats["bytes"] += len(data)
        return s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)

    _run_bounded(put, files, max(1, workers))
    return stats
