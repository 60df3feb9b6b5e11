"""Splits end to end: example 07 on the Oxford-shaped data with its trainval.txt and test.txt lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharded_dataset_operator import exampledata
from sharded_dataset_operator.clients.ais import Ais

from .conftest import REPO, Kube, unique, wait_until
from .test_operator import RawDataset, assert_complete_samples, read_shards, wait_phase, wait_ready

pytestmark = pytest.mark.e2e


def example_07(namespace: str, raw: str, out: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((REPO / "examples" / "07-splits.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["source"]["ais"]["bucket"] = raw
    obj["spec"]["output"]["bucket"] = out
    obj["spec"]["output"]["maxSamplesPerShard"] = 40
    obj["spec"]["shuffle"]["outputShardSize"] = "2MiB"
    return obj


def test_example_07_each_list_split_holds_exactly_its_complete_keys_shuffled_verified_and_indexed(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], 300, seed=41, sample_kib=8)
    out = unique("splits")
    obj = example_07(namespace, raw.bucket, out)
    kube.apply(obj)
    ready = wait_ready(kube, namespace, "oxford-pets-splits", timeout=300)
    st = ready["status"]
    expected = raw.manifest["splits"]
    assert sorted(expected) == ["test", "trainval"] and all(expected.values())
    assert st["samples"]["written"] == sum(len(keys) for keys in expected.values()) == len(raw.manifest["complete"])
    stable = json.loads(ais.get(out, "splits-shuffled-index.json") or b"{}")
    assert stable["shardlist"] == [] and sorted(stable["info"]["splits"]) == ["test", "trainval"]
    seen: dict[str, set[str]] = {}
    for split, keys in expected.items():
        assert st["splits"][split]["samples"] == len(keys)
        assert st["splits"][split]["index"] == f"ais://{out}/splits-shuffled-{split}-index.json"
        index = json.loads(ais.get(out, f"splits-shuffled-{split}-index.json") or b"{}")
        assert index["info"]["split"] == split and index["info"]["uid"] == ready["metadata"]["uid"]
        assert sum(s["nsamples"] for s in index["shardlist"]) == len(keys)
        assert all(s["url"].startswith(f"splits-shuffled-{split}-") for s in index["shardlist"])
        (tmp_path / split).mkdir()
        samples = read_shards(ais, out, [s["url"] for s in index["shardlist"]], tmp_path / split)
        seen[split] = {s["__key__"] for s in samples}
        assert seen[split] == set(keys)  # exactly the complete keys of its list, each once (checked below)
        part = RawDataset.__new__(RawDataset)
        part.__dict__.update(raw.__dict__)
        part.manifest = {**raw.manifest, "complete": keys}
        assert_complete_samples(part, samples, seed="2023")  # byte-identical to the source
    assert not seen["trainval"] & seen["test"]

    # the training example trains on one split and evaluates on the other, each sample once per pass
    report = tmp_path / "report.json"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(REPO / "examples/train_pytorch.py"),
           "--dataset", f"{namespace}/oxford-pets-splits", "--split", "trainval", "--eval-split", "test",
           "--endpoint", cluster_env["AIS_ENDPOINT"], "--loader", "wids", "--workers", "2", "--epochs", "1",
           "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--report", str(report),
           "--check"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **cluster_env}, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(report.read_text())
    assert result["epochs"][0]["keys"] == sorted(expected["trainval"])
    assert result["eval"]["keys"] == sorted(expected["test"]) and result["eval"]["split"] == "test"


def test_a_key_in_two_split_lists_fails_the_plan_saying_which_and_nothing_is_written(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], 120, seed=42, sample_kib=8)
    twice = raw.manifest["splits"]["test"][:2]
    trainval = (ais.get(raw.bucket, exampledata.SPLIT_PATHS["trainval"]) or b"").decode()
    ais.put(raw.bucket, "annotations/overlap.txt", (trainval + "".join(f"{k} 1 1 1\n" for k in twice)).encode())
    out = unique("overlap")
    obj = example_07(namespace, raw.bucket, out)
    obj["spec"]["splits"]["sets"][0]["listFile"] = "annotations/overlap.txt"
    kube.apply(obj)
    failed = wait_phase(kube, namespace, "oxford-pets-splits", ("Failed", "Ready"), timeout=300)
    msg = failed["status"]["message"]
    assert failed["status"]["phase"] == "Failed", msg
    assert "2 key(s) are in more than one split list" in msg and f"{twice[0]} (trainval, test)" in msg, msg
    # no converted or shuffled shard, no index: the plan was never completed
    names = [e.name for e in ais.list_objects(out)] if ais.bucket_exists(out) else []
    assert not [n for n in names if n.endswith(".tar") or n.endswith("index.json")], names
    wait_until(lambda: not kube.list("pods", namespace, "app.kubernetes.io/component=converter"), 60, "no converters")
