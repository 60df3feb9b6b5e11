"""The numbered examples in examples/: every one is valid against the API server, and they run as written
(only the namespace and bucket names are changed so tests do not collide with `make demo`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharded_dataset_operator.clients.ais import Ais

from .conftest import REPO, Kube, unique
from .test_operator import assert_complete_samples, raw_dataset, read_shards, wait_ready

pytestmark = pytest.mark.e2e
EXAMPLES = sorted((REPO / "examples").glob("[0-9][0-9]-*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted_by_the_api_server(kube: Kube, path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == "ShardedDataset":
            doc["metadata"]["namespace"] = "default"
        p = kube.try_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc))
        assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("name", ["01-oxford-pets.yaml", "02-no-shuffle.yaml"])
def test_example_runs(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path, name: str
) -> None:
    raw = raw_dataset(ais, cluster_env, 200)
    obj = yaml.safe_load((REPO / "examples" / name).read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["source"]["ais"]["bucket"] = raw.bucket
    out = unique("ex")
    obj["spec"]["output"]["bucket"] = out
    kube.apply(obj)
    ready = wait_ready(kube, namespace, obj["metadata"]["name"])
    index = ready["status"]["indexObject"].removeprefix(f"ais://{out}/")
    shards = [s["url"] for s in json.loads(ais.get(out, index) or b"{}")["shardlist"]]
    assert_complete_samples(
        raw, read_shards(ais, out, shards, tmp_path), seed=obj["spec"].get("shuffle", {}).get("seed", "")
    )


def test_example_06_a_revision_bump_builds_a_new_version_beside_the_published_one(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """The GitOps refresh: a new spec.source.revision is a new generation, built and published like a refresh,
    and every converted shard is reused (the source did not change)."""
    raw = raw_dataset(ais, cluster_env, 200)
    obj = yaml.safe_load((REPO / "examples" / "06-living-dataset.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["source"]["ais"]["bucket"] = raw.bucket
    out = unique("ex")
    obj["spec"]["output"]["bucket"] = out
    kube.apply(obj)
    first = wait_ready(kube, namespace, obj["metadata"]["name"])
    assert first["status"]["versions"]["published"]["version"] == "g1"
    obj["spec"]["source"]["revision"] = "2026-12-02"
    kube.apply(obj)
    second = wait_ready(kube, namespace, obj["metadata"]["name"])
    st = second["status"]
    assert st["versions"]["published"]["version"] == "g2"
    assert st["conversion"]["reusedShards"] == st["shards"]["converted"] > 0  # nothing converted again
    assert [p["version"] for p in st["versions"]["previous"]] == ["g1"]  # kept 2h for its readers
    index = st["indexObject"].removeprefix(f"ais://{out}/")
    shards = [s["url"] for s in json.loads(ais.get(out, index) or b"{}")["shardlist"]]
    assert all("-g2-" in s for s in shards)
    assert_complete_samples(raw, read_shards(ais, out, shards, tmp_path), seed=obj["spec"]["shuffle"]["seed"])
