"""Transforms while converting, and the training side, end to end: examples 04 (resize) and 05 (a user function
from an image built FROM the project image, examples/transforms) run as written, and examples/train_pytorch.py
trains on a Ready dataset with 2 ranks x 2 DataLoader workers through wids and through webdataset.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from sharded_dataset_operator.clients.ais import Ais

from .conftest import REPO, Kube, unique
from .test_operator import RawDataset, expected_skips, raw_dataset, read_shards, wait_ready

pytestmark = pytest.mark.e2e
SAMPLES = 200  # 299x224 JPEGs: every image is larger than the resize limit


def example(name: str, namespace: str, raw: RawDataset, out: str) -> dict[str, Any]:
    """A numbered example as written, in the test's namespace and buckets, with small output shards."""
    obj: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["source"]["ais"]["bucket"] = raw.bucket
    obj["spec"]["output"]["bucket"] = out
    obj["spec"]["shuffle"]["outputShardSize"] = "1MiB"  # ~8 shards, so every rank and worker gets some
    return obj


def ready_samples(kube: Kube, ais: Ais, obj: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ready = wait_ready(kube, obj["metadata"]["namespace"], obj["metadata"]["name"])
    bucket, _, index = ready["status"]["indexObject"].removeprefix("ais://").partition("/")
    shards = [s["url"] for s in json.loads(ais.get(bucket, index) or b"{}")["shardlist"]]
    return ready, read_shards(ais, bucket, shards, tmp)


def members(sample: dict[str, Any]) -> dict[str, bytes]:
    return {k: v for k, v in sample.items() if not k.startswith("__")}


@pytest.fixture(scope="module")
def resized(kube: Kube, ais: Ais, cluster_env: dict[str, str], operator: Any) -> Iterator[dict[str, Any]]:
    """Example 04 applied in a namespace of its own and Ready; shared by the resize and the training tests."""
    namespace = unique("e2e-resize")
    kube.run("create", "namespace", namespace)
    raw = raw_dataset(ais, cluster_env, SAMPLES)
    obj = example("04-resize.yaml", namespace, raw, unique("px"))
    kube.apply(obj)
    yield {"obj": obj, "raw": raw}
    kube.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_resize_fits_every_image_and_keeps_the_other_members_byte_for_byte(
    kube: Kube, ais: Ais, resized: dict[str, Any], tmp_path: Path
) -> None:
    raw: RawDataset = resized["raw"]
    limit = resized["obj"]["spec"]["transform"]["resize"]["maxSide"]
    ready, samples = ready_samples(kube, ais, resized["obj"], tmp_path)
    assert ready["status"]["samples"]["written"] == len(raw.manifest["complete"])
    assert ready["status"]["samples"]["skippedByReason"] == expected_skips(raw)
    assert sorted(s["__key__"] for s in samples) == sorted(raw.manifest["complete"])
    for s in samples:
        original = raw.expected_members(s["__key__"])
        got = members(s)
        assert set(got) == set(original)  # format jpeg: the member keeps its name
        with Image.open(io.BytesIO(got["image.jpg"])) as img, Image.open(io.BytesIO(original["image.jpg"])) as src:
            img.load()
            assert img.format == "JPEG" and max(img.size) <= limit < max(src.size), (img.size, src.size)
            assert abs(img.width / img.height - src.width / src.height) < 0.02  # aspect kept
        assert got["trimap.png"] == original["trimap.png"] and got["cls"] == original["cls"]


def test_user_function_from_an_image_built_from_the_project_image_drops_and_edits_samples(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    spec = importlib.util.spec_from_file_location("my_transforms", REPO / "examples/transforms/my_transforms.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw = raw_dataset(ais, cluster_env, SAMPLES)
    # what the function makes of each complete sample, computed here from the raw bytes
    transform = module.cats_with_foreground
    expected = {k: transform({"__key__": k, **raw.expected_members(k)}) for k in raw.manifest["complete"]}
    kept = {k: m for k, m in expected.items() if m is not None}
    assert 0 < len(kept) < len(expected)  # the data has both cats and dogs

    obj = example("05-user-function.yaml", namespace, raw, unique("cats"))
    kube.apply(obj)
    ready, samples = ready_samples(kube, ais, obj, tmp_path)
    st = ready["status"]["samples"]
    assert st["written"] == len(kept)
    assert st["skippedByReason"] == {**expected_skips(raw), "transform-dropped": len(expected) - len(kept)}
    assert {s["__key__"]: members(s) for s in samples} == kept  # every member byte for byte, fg.txt added
    pods = kube.list("pods", namespace, "batch.kubernetes.io/job-name")
    converters = [p for p in pods if "-convert-" in p["metadata"]["name"]]
    assert converters and {p["spec"]["containers"][0]["image"] for p in converters} == {
        obj["spec"]["transform"]["function"]["image"]
    }


@pytest.mark.parametrize(("loader", "check"), [("wids", True), ("webdataset", True), ("webdataset", False)])
def test_training_example_sees_every_sample_once_per_epoch_with_2_ranks_x_2_workers(
    kube: Kube, ais: Ais, cluster_env: dict[str, str], resized: dict[str, Any], tmp_path: Path, loader: str, check: bool
) -> None:
    """With --check every key seen is gathered and compared; without it (as in real training) only counts, and
    the run pins the published version's own index (--pin)."""
    obj = resized["obj"]
    ready = wait_ready(kube, obj["metadata"]["namespace"], obj["metadata"]["name"])
    report = tmp_path / "report.json"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(REPO / "examples/train_pytorch.py"),
           "--dataset", f"{obj['metadata']['namespace']}/{obj['metadata']['name']}",
           "--endpoint", cluster_env["AIS_ENDPOINT"], "--loader", loader, "--workers", "2", "--epochs", "2",
           "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--report", str(report),
           *(["--check"] if check else ["--pin"])]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **cluster_env}, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(report.read_text())
    written = ready["status"]["samples"]["written"]
    complete = sorted(resized["raw"].manifest["complete"])
    assert result["ranks"] == 2 and result["workers"] == 2 and result["indexed"] == written
    assert result["version"] == ready["status"]["versions"]["published"]["version"] == "g1"
    if not check:
        assert "through ais://" in p.stdout and "-g1-index.json" in p.stdout  # the version's own index
    assert len(result["epochs"]) == 2
    for epoch in result["epochs"]:
        assert epoch["keys"] == complete if check else "keys" not in epoch, "a sample was missed or seen twice"
        assert sum(epoch["perRank"]) == epoch["samples"] == len(complete) and min(epoch["perRank"]) > 0
    print(p.stdout)
