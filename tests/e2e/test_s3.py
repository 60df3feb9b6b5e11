"""S3 sources end to end (issue 27): data written straight to the local cluster's S3 server (versitygw), not
through AIS, converted through AIS's s3:// bucket of the same name, every sample byte-identical to what was
written to S3; a refresh after changes made directly in S3 builds from S3 as it is now; a schedule every minute
builds a version only when S3 changed; a source bucket S3 does not have is a clear SourceNotFound."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from sds_tools import exampledata
from sds_tools.s3 import client, write_s3
from sharded_dataset_operator.clients.ais import Ais
from sharded_dataset_operator.core import naming

from .conftest import REPO, Kube, unique, wait_until
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


def example_14(namespace: str, bucket: str, out: str, prefetch: bool = False) -> dict[str, Any]:
    """Example 14 for a test; read cold (one latest-version GET per object, as written) unless `prefetch`."""
    obj: dict[str, Any] = yaml.safe_load((REPO / "examples" / "14-s3-source.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["source"]["ais"].update(bucket=bucket, prefetch=prefetch)
    obj["spec"]["output"].update(bucket=out, maxShardSize="1MiB")
    obj["spec"]["shuffle"]["outputShardSize"] = "2MiB"
    return obj


def test_example_14_an_s3_source_prefetched_into_ais_converts_byte_identical(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    raw = S3Dataset(SAMPLES)
    out = unique("s3out")
    obj = example_14(namespace, raw.bucket, out, prefetch=True)
    kube.apply(obj)
    ready = wait_ready(kube, namespace, obj["metadata"]["name"], timeout=400)
    st = ready["status"]
    assert st["prefetch"]["finishedAt"] and not st["prefetch"].get("failed"), st["prefetch"]  # read warm
    base = f"s3-{naming.uid_tag(ready['metadata']['uid'])}-g1-"
    reports = [json.loads(ais.get(out, e.name) or b"{}") for e in ais.list_objects(out, prefix=f"{base}report-")]
    reads = [r["reads"] for r in reports]
    assert reads and all(r["batchRequests"] > 0 and r["objectRequests"] == 0 for r in reads), reads
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


def test_a_refresh_sees_s3_as_it_is_now_and_converts_only_what_changed(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """Objects rewritten in S3 with new bytes of the same size (after AIS cached them), deleted and added, all
    directly in S3: the refreshed version is byte-identical to S3's new content, and only the units of the
    changed samples were converted again."""
    raw = S3Dataset(200, seed=31)
    out = unique("s3fresh")
    obj = example_14(namespace, raw.bucket, out)
    obj["metadata"]["name"] = "fresh"
    obj["spec"]["output"].update(maxSamplesPerShard=10, retainPrevious="0s")
    kube.apply(obj)
    first = wait_ready(kube, namespace, "fresh", timeout=400)
    assert first["status"]["versions"]["published"]["version"] == "g1"

    s3 = client()
    complete = sorted(raw.manifest["complete"])
    rewritten = [complete[20], complete[120]]  # new bytes, same size
    for key in rewritten:
        name = f"images/{key}.jpg"
        data = bytearray(raw.files[name])
        data[len(data) // 2] ^= 0xFF
        raw.files[name] = bytes(data)
        s3.put_object(Bucket=raw.bucket, Key=name, Body=raw.files[name])
    deleted = [complete[60], complete[160]]
    for key in deleted:
        for name in (f"images/{key}.jpg", f"annotations/trimaps/{key}.png"):
            s3.delete_object(Bucket=raw.bucket, Key=name)
            raw.files.pop(name)
    added = [f"{complete[i].rsplit('_', 1)[0]}_9{i:03d}" for i in (5, 105)]
    lines = (s3.get_object(Bucket=raw.bucket, Key="annotations/list.txt")["Body"].read()).decode().splitlines()
    for i, key in enumerate(added):
        donor = complete[i * 3]
        for name, donor_name in ((f"images/{key}.jpg", f"images/{donor}.jpg"),
                                 (f"annotations/trimaps/{key}.png", f"annotations/trimaps/{donor}.png")):  # fmt: skip
            raw.files[name] = raw.files[donor_name] + key.encode()
            s3.put_object(Bucket=raw.bucket, Key=name, Body=raw.files[name])
        raw.manifest["classes"][key] = "7"
        lines.append(f"{key} 7 1 7")
    s3.put_object(Bucket=raw.bucket, Key="annotations/list.txt", Body=("\n".join(lines) + "\n").encode())
    raw.manifest["complete"] = sorted({*complete, *added} - set(deleted))

    kube.run("annotate", "sds", "fresh", "-n", namespace, "shardeddataset.dev/refresh=s3-changed")
    done = wait_until(
        lambda: (
            (o := kube.get("sds", "fresh", namespace))
            and ((o.get("status") or {}).get("versions") or {}).get("published", {}).get("refresh") == "s3-changed"
            and o
        ),
        400,
        "the refresh published",
    )
    st = done["status"]
    assert st["samples"]["written"] == len(raw.manifest["complete"])
    index = json.loads(ais.get(out, st["indexObject"].removeprefix(f"ais://{out}/")) or b"{}")
    samples = read_shards(ais, out, [s["url"] for s in index["shardlist"]], tmp_path)
    assert_complete_samples(raw, samples, seed="2023")  # type: ignore[arg-type]

    # only the changed samples' units were converted: every rewritten and added key is in a shard this
    # version converted, and most shards were reused
    version = st["versions"]["published"]["version"]
    base = f"s3-{naming.uid_tag(first['metadata']['uid'])}-{version}-"
    reports = [json.loads(ais.get(out, e.name) or b"{}") for e in ais.list_objects(out, prefix=f"{base}report-")]
    converted_keys: set[str] = set()
    for shard in (s for r in reports for s in r["shards"]):
        with tarfile.open(fileobj=io.BytesIO(ais.get(out, shard["name"]) or b"")) as tf:
            converted_keys |= {m.name.split(".", 1)[0] for m in tf}
    assert {*rewritten, *added} <= converted_keys
    assert st["conversion"]["reusedShards"] > 0
    assert len(converted_keys) <= 6 * 10, len(converted_keys)  # a handful of units of 10, not the dataset


def test_a_schedule_builds_a_version_only_when_s3_changed(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """Example 15 with a schedule every minute: a tick over an unchanged S3 bucket builds nothing; one object
    rewritten in S3 (same size, new bytes) is found at the next tick and built into exactly one new version,
    byte-identical to S3; the tick after it finds nothing new again."""
    raw = S3Dataset(60, seed=41)
    out = unique("s3tick")
    obj: dict[str, Any] = yaml.safe_load((REPO / "examples" / "15-scheduled-refresh.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["source"]["ais"]["bucket"] = raw.bucket
    obj["spec"]["output"].update(bucket=out, maxShardSize="1MiB")  # g1 is kept 24h: checks go on meanwhile
    obj["spec"]["refresh"] = {"schedule": "* * * * *", "timeZone": "Europe/Berlin"}
    name = obj["metadata"]["name"]
    kube.apply(obj)
    first = wait_ready(kube, namespace, name, timeout=400)
    assert first["status"]["versions"]["published"]["version"] == "g1"

    def checked_after(last: str | None) -> dict[str, Any]:
        """The resource once its refresh status shows a check made after `last`."""
        return wait_until(
            lambda: (
                (o := kube.get("sds", name, namespace))
                and (o.get("status") or {}).get("refresh", {}).get("lastCheck") not in (None, last)
                and o
            ),
            150,
            f"a check after {last}",
        )

    # a tick, nothing changed in S3 (the tick after publishing, below, is a second unchanged check)
    o = checked_after(None)
    refresh = o["status"]["refresh"]
    assert refresh["changed"] is False, refresh
    assert "unchanged since version g1" in refresh["message"]
    assert o["status"]["versions"]["published"]["version"] == "g1"
    assert "shardeddataset.dev/refresh" not in (o["metadata"].get("annotations") or {})
    last = refresh["lastCheck"]
    assert refresh["nextCheck"] > last

    key = sorted(raw.manifest["complete"])[7]
    image = f"images/{key}.jpg"
    data = bytearray(raw.files[image])
    data[len(data) // 3] ^= 0x5A  # same size, new bytes: only the ETag tells
    raw.files[image] = bytes(data)
    client().put_object(Bucket=raw.bucket, Key=image, Body=raw.files[image])

    o = checked_after(last)
    assert o["status"]["refresh"]["changed"] is True, o["status"]["refresh"]
    request = o["metadata"]["annotations"]["shardeddataset.dev/refresh"]
    assert request.startswith("scheduled-")
    done = wait_until(
        lambda: (
            (x := kube.get("sds", name, namespace))
            and ((x.get("status") or {}).get("versions") or {}).get("published", {}).get("refresh") == request
            and x.get("status", {}).get("phase") == "Ready"
            and x
        ),
        400,
        "the scheduled version published",
    )
    st = done["status"]
    version = st["versions"]["published"]["version"]
    assert version == o["status"]["refresh"]["version"] != "g1"
    index = json.loads(ais.get(out, st["indexObject"].removeprefix(f"ais://{out}/")) or b"{}")
    samples = read_shards(ais, out, [s["url"] for s in index["shardlist"]], tmp_path)
    assert_complete_samples(raw, samples, seed="2023")  # type: ignore[arg-type]
    # refreshMode Append: a rewritten object is a changed sample, so everything was shuffled again
    modes = [str(e.get("message")) for e in kube.events(namespace, name) if e["reason"] == "ShuffleMode"]
    assert any("shuffled again" in m and "lost or changed samples" in m for m in modes), modes
    assert "appended" not in index["info"]

    assert [p["version"] for p in st["versions"]["previous"]] == ["g1"]  # kept for its readers (retainPrevious)
    after = checked_after(done["status"]["refresh"].get("lastCheck"))  # the first tick after publishing
    assert after["status"]["refresh"]["changed"] is False, after["status"]["refresh"]
    assert after["status"]["versions"]["published"]["version"] == version  # exactly one new version
    assert after["metadata"]["annotations"]["shardeddataset.dev/refresh"] == request
