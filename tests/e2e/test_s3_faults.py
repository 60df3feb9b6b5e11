"""S3 faults end to end (issue 27): an object deleted in S3 after planning (SourceChanged, then a retry plans
anew), S3 refusing the credentials AIS uses for a bucket (AccessDenied, then fixed and retried), and the S3
server down for a minute in the middle of a conversion (Stalled SourceUnavailable, resumes by itself). Nothing
is published that is not exactly the source."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from sds_tools.s3 import client
from sharded_dataset_operator.clients.ais import Ais, BucketNotFound

from .conftest import Kube, unique, wait_until
from .faults import s3_down
from .test_operator import assert_complete_samples, condition, read_shards, wait_phase, wait_ready
from .test_s3 import S3Dataset, example_14

pytestmark = pytest.mark.e2e


def plan_written(ais: Ais, out: str) -> str | None:
    try:
        return next((e.name for e in ais.list_objects(out) if e.name.endswith("plan.json")), None)
    except BucketNotFound:
        return None


def assert_published_exactly(ais: Ais, out: str, obj: dict[str, Any], raw: S3Dataset, tmp_path: Path) -> None:
    st = obj["status"]
    assert st["samples"]["written"] == len(raw.manifest["complete"])
    index = json.loads(ais.get(out, st["indexObject"].removeprefix(f"ais://{out}/")) or b"{}")
    samples = read_shards(ais, out, [s["url"] for s in index["shardlist"]], tmp_path)
    assert_complete_samples(raw, samples, seed="2023")  # type: ignore[arg-type]


def retry_until_exact(
    kube: Kube, namespace: str, name: str, request: str, ais: Ais, out: str, raw: S3Dataset, tmp_path: Path
) -> None:
    """Ask for a retry of the Failed `name`; it must reach Ready holding exactly `raw`'s complete samples."""
    kube.run("annotate", "sds", name, "-n", namespace, f"shardeddataset.dev/retry={request}")
    ready = wait_until(
        lambda: (o := kube.get("sds", name, namespace)) and o["status"].get("phase") == "Ready" and o,
        400,
        f"{name} Ready after the retry ({request})",
    )
    assert_published_exactly(ais, out, ready, raw, tmp_path)


def apply_s3_dataset(kube: Kube, namespace: str, name: str, raw: S3Dataset, **output: Any) -> str:
    """Example 14 named `name` over `raw`, read cold, into a new output bucket (returned)."""
    out = unique(f"s3{name}")
    obj = example_14(namespace, raw.bucket, out)
    obj["metadata"]["name"] = name
    obj["spec"]["output"].update(output)
    kube.apply(obj)
    return out


def test_an_object_deleted_in_s3_after_planning_is_source_changed_and_a_retry_plans_anew(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    raw = S3Dataset(60, seed=43)
    out = apply_s3_dataset(kube, namespace, "gone", raw)
    wait_until(lambda: plan_written(ais, out), 300, "the plan", interval=0.1)
    key = sorted(raw.manifest["complete"])[30]
    client().delete_object(Bucket=raw.bucket, Key=f"images/{key}.jpg")  # before any converter pod reads it
    failed = wait_phase(kube, namespace, "gone", ("Failed", "Ready"), timeout=300)
    st = failed["status"]
    assert st["phase"] == "Failed", json.dumps(st, indent=1)
    stalled = condition(failed, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "SourceChanged"), stalled
    assert f"images/{key}.jpg disappeared" in stalled["message"]
    assert not (st.get("versions") or {}).get("published")  # nothing published
    assert ais.get(out, "s3-shuffled-index.json") is None  # the stable index (shuffle.outputPrefix + index.json)

    raw.files.pop(f"images/{key}.jpg")
    raw.manifest["complete"] = [k for k in raw.manifest["complete"] if k != key]
    retry_until_exact(kube, namespace, "gone", "after-the-deletion", ais, out, raw, tmp_path)


def set_profile(endpoint: str, bucket: str, profile: str) -> None:
    """The AWS profile AIS uses for s3://bucket (its bucket property extra.aws.profile)."""
    body = {"action": "set-bprops", "value": {"extra": {"aws": {"profile": profile}}}}
    requests.patch(f"{endpoint}/v1/buckets/{bucket}", params={"provider": "aws"}, data=json.dumps(body),
                   timeout=30).raise_for_status()  # fmt: skip


def test_s3_refusing_the_credentials_ais_uses_is_access_denied(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """The bucket read with a profile whose keys S3 does not know (hack/cluster.sh's `revoked`): AccessDenied
    naming the backend, nothing published; with the right credentials again, a retry builds it exactly."""
    raw = S3Dataset(30, seed=47)
    endpoint = cluster_env["AIS_ENDPOINT"]
    set_profile(endpoint, raw.bucket, "revoked")
    out = apply_s3_dataset(kube, namespace, "denied", raw)
    denied = wait_until(
        lambda: (
            (o := kube.get("sds", "denied", namespace))
            and any(
                c["type"] == "Stalled" and c["status"] == "True" for c in (o.get("status") or {}).get("conditions", [])
            )
            and o
        ),
        300,
        "Stalled",
    )
    stalled = condition(denied, "Stalled")
    assert stalled["reason"] == "AccessDenied", stalled
    assert "refused the credentials AIS uses" in stalled["message"] and "XAdminUserNotFound" in stalled["message"]
    assert not (denied["status"].get("versions") or {}).get("published")

    set_profile(endpoint, raw.bucket, "default")
    retry_until_exact(kube, namespace, "denied", "credentials-fixed", ais, out, raw, tmp_path)


def test_the_s3_server_down_for_a_minute_stalls_the_conversion_which_resumes_by_itself(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    raw = S3Dataset(80, seed=53)
    out = apply_s3_dataset(kube, namespace, "down", raw, maxSamplesPerShard=10)
    s3 = client()

    def s3_answers() -> bool:
        try:
            s3.head_bucket(Bucket=raw.bucket)
            return True
        except Exception:
            return False

    wait_until(lambda: plan_written(ais, out), 300, "the plan", interval=0.1)
    with s3_down(kube, s3_answers):
        started = time.monotonic()
        seen = wait_until(
            lambda: (
                (o := kube.get("sds", "down", namespace))
                and any(
                    c["type"] == "Stalled" and c["reason"] == "SourceUnavailable"
                    for c in o.get("status", {}).get("conditions", [])
                )
                and o
            ),
            55,
            "the conversion Stalled on the S3 outage",
        )
        stalled = condition(seen, "Stalled")
        assert stalled["status"] == "True" and "does not answer AIS" in stalled["message"], stalled
        assert seen["status"]["phase"] == "Converting"
        time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    ready = wait_ready(kube, namespace, "down", timeout=400)
    assert condition(ready, "Stalled")["status"] == "False"
    assert_published_exactly(ais, out, ready, raw, tmp_path)
