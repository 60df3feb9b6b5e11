"""Splits end to end: example 07 on the Oxford-shaped data with its trainval.txt and test.txt lists."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sds_tools import exampledata
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
    obj["spec"]["deletionPolicy"] = "Delete"
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

    # deletionPolicy Delete removes every split's shards and indexes with the rest
    kube.run("delete", "sds", "oxford-pets-splits", "-n", namespace, "--timeout=120s")
    assert [e.name for e in ais.list_objects(out)] == []


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


FRACTIONS = {
    "seed": "17",
    "stratifyBy": "cls",
    "sets": [{"name": "train", "fraction": 0.8}, {"name": "val", "fraction": 0.1}, {"name": "test", "fraction": 0.1}],
}


def split_keys(ais: Ais, out: str, obj: dict[str, Any]) -> dict[str, str]:
    """key -> split of the published version, from each split's index and the shards it lists."""
    import io
    import tarfile

    found: dict[str, str] = {}
    for split, entry in obj["status"]["splits"].items():
        index = json.loads(ais.get(out, entry["index"].removeprefix(f"ais://{out}/")) or b"{}")
        for shard in index["shardlist"]:
            with tarfile.open(fileobj=io.BytesIO(ais.get(out, shard["url"]) or b"")) as tf:
                for key in {m.name.split(".", 1)[0] for m in tf}:
                    assert key not in found, f"{key} in {found.get(key)} and {split}"
                    found[key] = split
    return found


def test_fraction_splits_per_label_within_one_sample_the_same_again_and_no_old_sample_moves_on_refresh(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], 400, seed=43, sample_kib=8)  # its own: it grows
    out = unique("fractions")
    obj = example_07(namespace, raw.bucket, out)
    obj["spec"]["splits"] = FRACTIONS
    kube.apply(obj)
    first = wait_ready(kube, namespace, "oxford-pets-splits", timeout=300)
    assigned = split_keys(ais, out, first)
    assert sorted(assigned) == sorted(raw.manifest["complete"])
    classes = raw.manifest["classes"]
    for cls in set(classes.values()):
        keys = [k for k in assigned if classes[k] == cls]
        for split in FRACTIONS["sets"]:
            n = sum(assigned[k] == split["name"] for k in keys)
            assert abs(n - split["fraction"] * len(keys)) < 1, (cls, len(keys), split, n)
    for split in FRACTIONS["sets"]:  # and overall
        n = sum(v == split["name"] for v in assigned.values())
        assert abs(n - split["fraction"] * len(assigned)) < 1, (split, n)
        assert first["status"]["splits"][split["name"]]["samples"] == n

    # the same spec and seed, another resource: every key in the same split
    again = copy.deepcopy(obj)
    again["metadata"]["name"] = "again"
    again["spec"]["output"]["bucket"] = out2 = unique("fractions")
    kube.apply(again)
    assert split_keys(ais, out2, wait_ready(kube, namespace, "again", timeout=300)) == assigned

    # 3 % new samples, then a refresh: no old sample moves
    complete = sorted(raw.manifest["complete"])
    added = [f"{complete[i]}n" for i in range(0, len(complete), 33)]
    lines = (ais.get(raw.bucket, "annotations/list.txt") or b"").decode()
    for i, key in enumerate(added):
        donor = complete[i]
        ais.put(raw.bucket, f"images/{key}.jpg", (ais.get(raw.bucket, f"images/{donor}.jpg") or b"") + key.encode())
        ais.put(
            raw.bucket, f"annotations/trimaps/{key}.png", ais.get(raw.bucket, f"annotations/trimaps/{donor}.png") or b""
        )
        lines += f"{key} {classes[donor]} 1 1\n"
    ais.put(raw.bucket, "annotations/list.txt", lines.encode())
    kube.run("annotate", "sds", "oxford-pets-splits", "-n", namespace, "shardeddataset.dev/refresh=grown")
    grown = wait_until(
        lambda: (
            (o := kube.get("sds", "oxford-pets-splits", namespace))
            and (o["status"].get("versions") or {}).get("published", {}).get("refresh") == "grown"
            and o
        ),
        300,
        "the refresh published",
    )
    now = split_keys(ais, out, grown)
    assert sorted(now) == sorted([*complete, *added])
    assert {k: now[k] for k in assigned} == assigned  # every old sample kept its split
