"""AIS ETL, managed by the operator. Example 08: the conversion reads each image through an AIS ETL that runs
next to the targets, and the result is exactly what the same ETL class computes here from the raw bytes.
Example 09: readers apply the resource's serving ETL to the published shards on the fly."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sharded_dataset_operator.clients.ais import Ais
from sharded_dataset_operator.core import naming

from .conftest import REPO, Kube, unique, wait_until
from .test_operator import expected_skips, raw_dataset, wait_phase
from .test_transforms import SAMPLES, example, members, ready_samples

pytestmark = pytest.mark.e2e
AIS_NS = "ais"


def local_etl(env: dict[str, str]) -> Any:
    """The example ETL class of the resource, instantiated here with the same environment."""
    sys.path.insert(0, str(REPO / "etl"))
    from sdo_etl.examples import ResizeImage

    saved = dict(os.environ)
    os.environ.update({"AIS_TARGET_URL": "http://unused.invalid", **env})
    try:
        return ResizeImage()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def etl_pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    return [p for p in kube.list("pods", AIS_NS) if p["metadata"]["name"].startswith(f"{name}-")]


def test_conversion_through_ais_etl_matches_the_class_byte_for_byte_and_the_etl_is_gone_after(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    raw = raw_dataset(ais, cluster_env, SAMPLES)
    obj = example("08-ais-etl.yaml", namespace, raw, unique("etl"))
    etl_spec = obj["spec"]["transform"]["aisEtl"]
    t0 = time.monotonic()
    kube.apply(obj)
    name = obj["metadata"]["name"]

    def running_etl() -> tuple[str, list[dict[str, Any]]] | None:
        current = kube.get("sds", name, namespace) or {}
        st = current.get("status") or {}
        etl = st.get("etl") or {}
        if st.get("phase") == "Failed":
            raise AssertionError(st)
        pods = etl_pods(kube, etl["name"]) if etl.get("name") else []
        ready = [p for p in pods if any(c.get("ready") for c in p["status"].get("containerStatuses") or [])]
        if etl.get("stage") == "Running" and ready:
            meta = current["metadata"]
            assert etl["name"] == naming.etl_name(meta["uid"], naming.version_id(meta["generation"]))
            return etl["name"], ready
        return None

    etl_name, pods = wait_until(running_etl, 300, "the AIS ETL to run")
    targets = [p for p in kube.list("pods", AIS_NS, "ais.sdo.dev/cluster=ais,ais.sdo.dev/role=target")]
    # one ETL pod per target, each on its target's node, running the resource's image
    assert len(pods) == len(targets) == 2, [p["metadata"]["name"] for p in pods]
    assert {p["spec"]["nodeName"] for p in pods} <= {t["spec"]["nodeName"] for t in targets}
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {etl_spec["image"]}

    ready, samples = ready_samples(kube, ais, obj, tmp_path)
    print(f"[etl] apply -> Ready through AIS ETL: {time.monotonic() - t0:.1f} s")
    st = ready["status"]["samples"]
    assert st["written"] == len(raw.manifest["complete"])
    assert st["skippedByReason"] == expected_skips(raw)
    assert sorted(s["__key__"] for s in samples) == sorted(raw.manifest["complete"])
    server = local_etl(etl_spec["env"])
    for s in samples:
        original = raw.expected_members(s["__key__"])
        got = members(s)
        assert got["image.jpg"] == server.transform(original["image.jpg"], "", ""), s["__key__"]
        assert got["image.jpg"] != original["image.jpg"]  # every image is larger than the limit
        assert got["trimap.png"] == original["trimap.png"] and got["cls"] == original["cls"]

    # the conversion is over: the ETL, its pods and Services are gone
    wait_until(lambda: not etl_pods(kube, etl_name), 120, "the ETL pods to go")
    assert not ais.etl_list(naming.etl_prefix(ready["metadata"]["uid"]))
    assert not [s for s in kube.list("services", AIS_NS) if s["metadata"]["name"].startswith(f"{etl_name}-")]
    assert ready["status"].get("etl") is None


def test_an_etl_image_the_operator_does_not_allow_fails_before_anything_runs(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    raw = raw_dataset(ais, cluster_env, SAMPLES)
    obj = example("08-ais-etl.yaml", namespace, raw, unique("etl"))
    obj["spec"]["transform"]["aisEtl"]["image"] = "registry.example.com/anything:1"
    kube.apply(obj)
    failed = wait_phase(kube, namespace, obj["metadata"]["name"], ("Ready", "Failed"))
    assert failed["status"]["phase"] == "Failed"
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "EtlNotAllowed" and "etl.allowedImages" in ready["message"], ready
    assert not ais.etl_list(naming.etl_prefix(failed["metadata"]["uid"]))


def test_readers_get_shards_through_the_serving_etl_every_sample_once_per_epoch(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """Example 09: the operator keeps the readers' ETL running and names it; a shard read through it holds every
    sample with image.jpg centre-cropped exactly as the class computes it here; the training example reads every
    sample once per epoch through it (2 ranks x 2 workers, webdataset)."""
    sys.path.insert(0, str(REPO / "etl"))
    from sdo_etl.examples import center_crop

    raw = raw_dataset(ais, cluster_env, SAMPLES)
    obj = example("09-serving-etl.yaml", namespace, raw, unique("srv"))
    env = obj["spec"]["serve"]["etl"]["env"]
    kube.apply(obj)
    name = obj["metadata"]["name"]
    ready = wait_phase(kube, namespace, name, ("Ready", "Failed"))
    assert ready["status"]["phase"] == "Ready", ready["status"]

    def serving() -> dict[str, Any] | None:
        serve = ((kube.get("sds", name, namespace) or {}).get("status") or {}).get("serve") or {}
        return serve if serve.get("stage") == "Running" else None

    serve = wait_until(serving, 300, "the serving ETL to run")
    assert serve["etl"] == naming.serve_etl_name(ready["metadata"]["uid"])
    assert len(etl_pods(kube, serve["etl"])) == 2

    bucket, _, index = ready["status"]["indexObject"].removeprefix("ais://").partition("/")
    shards = [s["url"] for s in json.loads(ais.get(bucket, index) or b"{}")["shardlist"]]
    size, quality = int(env["SIZE"]), int(env["QUALITY"])
    seen: list[str] = []
    for shard in shards:
        plain = tar_members(ais.get(bucket, shard) or b"")
        through = tar_members(ais.get_through_etl(bucket, shard, serve["etl"]))
        assert list(through) == list(plain)  # same members, same order
        for member, data in plain.items():
            if member.endswith(".image.jpg"):
                seen.append(member.removesuffix(".image.jpg"))
                assert through[member] == center_crop(data, size, quality), member
                with Image.open(io.BytesIO(through[member])) as img:
                    assert img.size == (size, size)
            else:
                assert through[member] == data
    assert sorted(seen) == sorted(raw.manifest["complete"])

    report = tmp_path / "report.json"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(REPO / "examples/train_pytorch.py"),
           "--dataset", f"{namespace}/{name}", "--endpoint", cluster_env["AIS_ENDPOINT"], "--loader", "webdataset",
           "--etl", "serve", "--workers", "2", "--epochs", "2", "--batch-size", "16", "--report", str(report),
           "--check"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **cluster_env}, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"every shard through AIS ETL {serve['etl']}" in p.stdout
    result = json.loads(report.read_text())
    for epoch in result["epochs"]:
        assert epoch["keys"] == sorted(raw.manifest["complete"]), "a sample was missed or seen twice"

    # the ETL lives as long as the resource: deleting it removes the ETL
    kube.run("delete", "sds", name, "-n", namespace, "--timeout=180s")
    wait_until(lambda: not etl_pods(kube, serve["etl"]), 120, "the serving ETL's pods to go")
    assert not ais.etl_list(naming.etl_prefix(ready["metadata"]["uid"]))


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}  # type: ignore[union-attr]
