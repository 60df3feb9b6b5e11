"""Scale: many small files through the whole pipeline under a small converter memory limit, with the
operator's memory watched, live progress, Get-Batch reads, and exact verification."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sds_tools import exampledata
from sharded_dataset_operator.clients.ais import Ais

from .conftest import OPERATOR_NS, Kube, unique
from .test_operator import dataset, raw_dataset, wait_ready

pytestmark = pytest.mark.e2e
SCALE_SAMPLES = 76_000  # 151,240 raw files (every 100th sample lacks its meta file)
SHUFFLED_SHARD = 4 * 2**20


def pod_process_rss_mib(kube: Kube, namespace: str, selector: str, command: str) -> float:
    """RSS of the process running `command` in the (single) pod matching `selector`, read from /proc on this
    host (the kubelet runs containers here; the pod's cgroup path holds its uid)."""
    pods = json.loads(kube.run("-n", namespace, "get", "pods", "-l", selector, "-o", "json"))["items"]
    uids = [p["metadata"]["uid"] for p in pods if p["status"].get("phase") == "Running"]
    assert len(uids) == 1, uids
    marker = f"pod{uids[0]}"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker not in (proc / "cgroup").read_text():
                continue
            if command not in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            continue
    raise AssertionError(f"no process {command!r} in pod {uids[0]}")


class Sampler(threading.Thread):
    """Polls a value every `interval` seconds in the background; keeps every sample."""

    def __init__(self, fn: Any, interval: float) -> None:
        super().__init__(daemon=True)
        self.fn, self.interval = fn, interval
        self.values: list[Any] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.values.append(self.fn())
            except Exception as e:  # keep polling; report at the end
                self.errors.append(repr(e))
            self.stop.wait(self.interval)


@pytest.fixture(scope="module")
def small_bucket(cluster_env: dict[str, str]) -> tuple[str, dict[str, int]]:
    bucket = unique("small")
    counts = exampledata.write_small_ais(cluster_env["AIS_ENDPOINT"], bucket, SCALE_SAMPLES, seed=11, size=2048)
    return bucket, counts


def test_150k_small_files_under_192mi_with_flat_operator_memory_and_live_progress(
    kube: Kube, namespace: str, ais: Ais, operator: Any, small_bucket: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    bucket, counts = small_bucket
    assert counts["files"] >= 150_000
    out = unique("out")
    obj = dataset(
        "many",
        namespace,
        bucket,
        out,
        output={"bucket": out, "prefix": "samples-", "maxShardSize": "16MiB"},
        conversion={"workers": 2, "resources": {"limits": {"memory": "192Mi"}, "requests": {"memory": "128Mi"}}},
        shuffle={"algorithm": "shuffle", "seed": "9", "outputPrefix": "shuffled-", "outputShardSize": "4MiB"},
    )
    spec = obj["spec"]
    spec["samples"] = {"fields": [dict(f) for f in exampledata.SMALL_FIELDS]}

    def operator_rss() -> float:
        return pod_process_rss_mib(kube, OPERATOR_NS, "app.kubernetes.io/name=sharded-dataset-operator",
                                   "sharded_dataset_operator.main")  # fmt: skip

    def status() -> dict[str, Any]:
        got = kube.get("sds", "many", namespace)
        return dict((got or {}).get("status") or {})

    rss_before = operator_rss()
    rss = Sampler(operator_rss, 0.5)
    statuses = Sampler(status, 0.5)
    rss.start()
    statuses.start()
    started = time.monotonic()
    try:
        kube.apply(obj)
        ready = wait_ready(kube, namespace, "many", timeout=900)
    finally:
        rss.stop.set()
        statuses.stop.set()
        rss.join()
        statuses.join()
    elapsed = time.monotonic() - started
    st = ready["status"]

    # exact counts
    assert st["samples"]["written"] == counts["complete"]
    assert st["samples"]["skippedByReason"] == {"missing:json": counts["missing"]}
    assert st["samples"]["total"] == SCALE_SAMPLES
    # the converters ran under 192Mi without being killed or retried
    assert st["conversion"]["failed"] == 0 and st["conversion"]["succeeded"] == 2
    job = json.loads(kube.run("-n", namespace, "get", "job", st["conversion"]["jobName"], "-o", "json"))
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "192Mi"

    # the operator's memory did not grow with the dataset
    peak = max(rss.values)
    print(f"operator RSS {rss_before:.0f} MiB before, peak {peak:.0f} MiB; {elapsed:.0f}s to Ready")
    assert peak - rss_before < 64, (rss_before, peak)

    # live progress: seen strictly between 0 and 100 % while converting, 100 % at the end
    converting = [s.get("progress") or {} for s in statuses.values if s.get("phase") == "Converting"]
    partial = sorted({p["percent"] for p in converting if "percent" in p and 0 < p["percent"] < 100})
    assert partial, [s.get("progress") for s in statuses.values]
    assert st["progress"]["percent"] == 100

    # Get-Batch did the reading, listing happened once
    base = st["artifacts"][0]["locations"][0]["prefix"]
    plan = json.loads(ais.get(out, f"{base}plan.json") or b"{}")
    assert plan["filesListed"] == counts["files"] and plan["samples"] == counts["complete"]
    for w in range(2):
        report = json.loads(ais.get(out, f"{base}report-w{w:04d}.json") or b"{}")
        assert report["reads"]["mode"] == "batch" and report["reads"]["batchRequests"] > 0, report["reads"]
        assert report["reads"]["objectRequests"] == 0

    # shuffled shards land within +-10 % of the target size in tar bytes (all but the last)
    index = json.loads(ais.get(out, "shuffled-index.json") or b"{}")
    shards = index["shardlist"]
    sizes = [s["filesize"] for s in shards]
    assert all(0.9 * SHUFFLED_SHARD <= s <= 1.1 * SHUFFLED_SHARD for s in sizes[:-1]), sizes
    assert all(s["checksum"]["type"] == "xxhash2" and len(s["checksum"]["value"]) == 16 for s in shards)
    assert sum(s["nsamples"] for s in shards) == counts["complete"]
    # one shard read back: members are whole samples
    first = ais.get(out, shards[0]["url"]) or b""
    with tarfile.open(fileobj=io.BytesIO(first)) as tf:
        names = tf.getnames()
    assert len(names) == 3 * shards[0]["nsamples"]  # bin, json, __order__


def test_get_batch_and_one_get_per_file_write_byte_identical_shards(
    kube: Kube, namespace: str, ais: Ais, operator: Any, cluster_env: dict[str, str]
) -> None:
    raw = raw_dataset(ais, cluster_env, 300)
    out = unique("out")
    for name, mode in (("batched", "batch"), ("single", "object")):
        kube.apply(
            dataset(
                name,
                namespace,
                raw.bucket,
                out,
                output={"bucket": out, "prefix": f"{name}-", "maxSamplesPerShard": 40},
                conversion={"workers": 2, "reads": {"mode": mode, "batchObjects": 50}},
                shuffle=None,
            )
        )
    shards: dict[str, list[bytes]] = {}
    for name, mode in (("batched", "batch"), ("single", "object")):
        st = wait_ready(kube, namespace, name)["status"]
        base, pool = st["artifacts"][0]["locations"][0]["prefix"], st["artifacts"][0]["pool"]["prefix"]
        names = sorted(e.name for e in ais.list_objects(out, prefix=pool) if e.name.endswith(".tar"))
        assert len(names) == st["shards"]["converted"] > 2
        shards[mode] = [ais.get(out, n) or b"" for n in names]
        reads = [json.loads(ais.get(out, f"{base}report-w{w:04d}.json") or b"{}")["reads"] for w in range(2)]
        if mode == "batch":
            assert all(r["batchRequests"] > 0 and r["objectRequests"] == 0 for r in reads), reads
            # 50 files per request at most: 300 samples of 2 files need at least 12 requests
            assert sum(r["batchRequests"] for r in reads) >= 2 * len(raw.manifest["complete"]) // 50
        else:
            assert all(r["batchRequests"] == 0 and r["objectRequests"] > 0 for r in reads), reads
    assert shards["batch"] == shards["object"]
