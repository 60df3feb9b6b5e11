"""S3 sources end to end (issue 27): data written straight to the local cluster's S3 server (versitygw), not
through AIS, converted through AIS's s3:// bucket of the same name, every sample byte-identical to what was
written to S3; a source bucket S3 does not have is a clear SourceNotFound."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sds_tools import exampledata
from sds_tools.s3 import write_s3
from sharded_dataset_operator.clients.ais import Ais

from .conftest import REPO, Kube, unique
from .test_operator import assert_complete_samples, read_shards, wait_phase, wait_ready

pytestmark = pytest.mark.e2e
SEED, SAMPLES = 23, 150


class S3Dataset:
    """An Oxford-pets-shaped dataset written to a new S3 bucket (the same shape `RawDataset` puts into AIS)."""

    def __init__(self, samples: int, seed: int = SEED, sample_kib: int = 8) -> None:
        self.bucket = unique("s3raw")
        self.plan = exampledata.plan(samples, seed=seed, sample_kib=sample_kib)
        self.files = dict(exampledata.render(self.plan))
        self.manifest = self.plan.manifest
        write_s3(self.bucket, self.files.items(), workers=8)

    def expected_members(self, key: str) -> dict[str, bytes]:
        return {
            "image.jpg": self.files[f"images/{key}.jpg"],
            "trimap.png": self.files[f"annotations/trimaps/{key}.png"],
            "cls": self.manifest["classes"][key].encode(),
        }


def example_14(namespace: str, bucket: str, out: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((REPO / "examples" / "14-s3-source.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["source"]["ais"]["bucket"] = bucket
    obj["spec"]["output"].update(bucket=out, maxShardSize="1MiB")
    obj["spec"]["shuffle"]["outputShardSize"] = "2MiB"
    return obj


def test_example_14_an_s3_source_converts_through_ais_byte_identical(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    raw = S3Dataset(SAMPLES)
    out = unique("s3out")
    obj = example_14(namespace, raw.bucket, out)
    kube.apply(obj)
    ready = wait_ready(kube, namespace, obj["metadata"]["name"], timeout=400)
    st = ready["status"]
    assert st["samples"]["written"] == len(raw.manifest["complete"])
    index = json.loads(ais.get(out, st["indexObject"].removeprefix(f"ais://{out}/")) or b"{}")
    samples = read_shards(ais, out, [s["url"] for s in index["shardlist"]], tmp_path)
    assert_complete_samples(raw, samples, seed="2023")  # type: ignore[arg-type]
    assert index["info"]["uid"] == ready["metadata"]["uid"]


def test_an_s3_bucket_that_does_not_exist_is_source_not_found(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    obj = example_14(namespace, unique("s3missing"), unique("s3out"))
    obj["metadata"]["name"] = "missing"
    kube.apply(obj)
    failed = wait_phase(kube, namespace, "missing", ("Failed", "Ready", "Pending"), timeout=180)
    conditions = {c["type"]: c for c in failed["status"].get("conditions") or []}
    stalled = conditions.get("Stalled") or conditions.get("Ready") or {}
    assert failed["status"]["phase"] != "Ready", failed["status"]
    assert "SourceNotFound" in json.dumps(failed["status"]), json.dumps(failed["status"], indent=1)
    assert stalled.get("status") in ("True", "False")
