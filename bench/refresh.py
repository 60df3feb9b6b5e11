"""Refresh benchmark (`make bench-refresh`, see bench/README.md): what a new version costs when 1 % changed.

On the many-small-files dataset of bench/scale.py (default 200,000 samples, ~4 KiB each), in one run:

1. a ShardedDataset is applied and reaches Ready: the full run (version g1), split into its steps;
2. 1 % new samples are added with keys after the existing ones (`s00200000`...: new files appended, the
   common case) and the refresh annotation asks for a new version: the same split, and how much of it was
   converted again (the plan's units);
3. the added samples are removed again and a refresh builds the original content (reusing what is left);
4. 1 % new samples are added with keys scattered among the old ones (`s00000099x`, one per 100 samples, so
   one lands inside nearly every unit's key range), and a refresh builds that.

Every step is timed from the status (polled every 0.2 s): `planning` (the planner Job: the one listing of
the source), `converting` (the converter Job), `shuffling` (dSort), `verifying`, and annotation -> published.
The ratios compare each refresh with the full run of the same bench run. Writes bench/results/refresh.json.
The added objects are deleted at the end, so the dataset bucket stays what bench/scale.py expects.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common  # bench/common.py: AIS helpers, example spec
import scale  # bench/scale.py: the small-file datasets
from common import GROUP, PLURAL, VERSION, Result

NAMESPACE = "bench-refresh"
NAME = "bench-refresh"
OUT_BUCKET = "bench-refresh-out"
STEPS = ("Planning", "Converting", "Shuffling", "Verifying")


class Resource:
    """A benchmark's ShardedDataset: apply, annotate, and time its steps (`steps`, in order) from the status."""

    def __init__(self, namespace: str = NAMESPACE, name: str = NAME, steps: tuple[str, ...] = STEPS) -> None:
        from kubernetes import client as k8s
        from kubernetes import config as kcfg

        kcfg.load_kube_config()
        self.core, self.custom = k8s.CoreV1Api(), k8s.CustomObjectsApi()
        self.namespace, self.name, self.steps = namespace, name, steps

    def get(self) -> dict[str, Any] | None:
        return common.get_dataset(self.custom, self.namespace, self.name)

    def delete(self) -> None:
        if self.get() is not None:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
            common.wait_gone(self.get, 600)

    def apply(self, spec: dict[str, Any]) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.rest import ApiException

        try:
            self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=self.namespace)))
            time.sleep(2)  # the default service account
        except ApiException as e:
            if e.status != 409:
                raise
        meta = {"name": self.name}
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ShardedDataset", "metadata": meta, "spec": spec}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def refresh(self, value: str) -> None:
        body = {"metadata": {"annotations": {"shardeddataset.dev/refresh": value}}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name, body)

    def build(self, wanted: str, timeout: float) -> Result:
        """Poll until version `wanted` is published; the time each step was first seen, from the start."""
        t0 = time.time()
        marks: dict[str, float] = {}
        status: dict[str, Any] = {}
        while time.time() - t0 < timeout:
            status = (self.get() or {}).get("status") or {}
            versions = status.get("versions") or {}
            if (versions.get("published") or {}).get("version") == wanted:
                marks["Published"] = time.time() - t0
                break
            if (versions.get("building") or {}).get("version") == wanted:
                reason = next((c["reason"] for c in status.get("conditions") or [] if c["type"] == "Reconciling"), "")
                step = "Failed" if status.get("phase") == "Failed" else reason
                marks.setdefault(step, time.time() - t0)
                if step == "Failed":
                    raise RuntimeError(f"version {wanted} failed: {status.get('message')}")
            time.sleep(common.POLL_S)
        else:
            raise RuntimeError(f"version {wanted} not published after {timeout} s: {json.dumps(status)[:1500]}")
        seen = [(s, marks[s]) for s in (*self.steps, "Published") if s in marks]
        stages = {a.lower(): round(tb - ta, 2) for (a, ta), (_, tb) in itertools.pairwise(seen)}
        return {"to_published_s": round(marks["Published"], 2), "stages_s": stages, "status": status}


def version_id(generation: int, refresh: str = "") -> str:
    from sharded_dataset_operator.core.naming import version_id as vid

    return vid(generation, refresh)


def plan_of(endpoint: str, status: dict[str, Any], bucket: str = OUT_BUCKET) -> dict[str, Any]:
    from sharded_dataset_operator.clients.ais import Ais

    record = next(a for a in status["artifacts"] if a["version"] == status["versions"]["published"]["version"])
    return dict(json.loads(Ais(endpoint).get(bucket, record["plan"]) or b"{}"))


def summary(label: str, endpoint: str, built: Result) -> Result:
    plan = plan_of(endpoint, built["status"])
    units = plan.get("units") or {}
    st = built["status"]
    stages = built["stages_s"]
    out = {
        "run": label,
        "samples": st["samples"]["written"],
        "to_published_s": built["to_published_s"],
        "stages_s": stages,
        "plan_and_convert_s": round(stages.get("planning", 0.0) + stages.get("converting", 0.0), 2),
        "planner_s": plan.get("seconds"),
        "units": units.get("count"),
        "units_converted": units.get("convert"),
        "samples_converted": units.get("convertSamples"),
        "units_taken_over": units.get("takenOver"),
        "previous_units_broken": units.get("previousBroken"),
        "shards_reused": st["conversion"].get("reusedShards"),
        "converter_workers": st["conversion"].get("workers"),
    }
    common.log(
        f"{label}: published in {out['to_published_s']} s {stages}; converted {out['samples_converted']} of "
        f"{out['samples']} samples ({out['units_converted']}/{out['units']} units)"
    )
    return out


def put_all(endpoint: str, bucket: str, files: list[tuple[str, bytes]]) -> None:
    from sharded_dataset_operator.clients.ais import Ais

    ais = Ais(endpoint)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda f: ais.put(bucket, f[0], f[1]), files))


def delete_all(endpoint: str, bucket: str, names: list[str]) -> None:
    client = common.sdk(endpoint)
    for i in range(0, len(names), 5000):
        job = client.bucket(bucket).objects(obj_names=names[i : i + 5000]).delete()
        if job:
            client.job(job).wait(timeout=600)


def added_files(keys: list[str], seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for key in keys:
        out.append((f"data/{key}.bin", rng.randbytes(scale.SAMPLE_BYTES)))
        out.append((f"meta/{key}.json", json.dumps({"added": key}).encode()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200_000, help="dataset size (default 200,000)")
    ap.add_argument("--added", type=float, default=0.01, help="share of new samples per refresh (default 0.01)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-scattered", action="store_true", help="only the appended refresh")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    endpoint = common.ais_endpoint(ap, "bench-refresh")
    started = time.time()
    n = args.samples
    bucket, _ = scale.ensure_small(endpoint, n)
    extra = max(1, round(n * args.added))
    appended = [f"s{i:08d}" for i in range(n, n + extra)]
    step = max(1, n // extra)
    scattered = [f"s{i:08d}x" for i in range(step - 1, n, step)][:extra]
    res: Result = {"host_cpus": os.cpu_count(), "samples": n, "added_samples": extra, "workers": args.workers}
    resource = Resource()
    resource.delete()
    common.drop_bucket(endpoint, OUT_BUCKET)
    spec = common.example_spec(bucket, OUT_BUCKET)
    spec["samples"] = scale.small_over()["samples"]
    spec["output"] = {**scale.small_over()["output"], "bucket": OUT_BUCKET, "retainPrevious": "0s"}
    spec["conversion"] = {"workers": args.workers}
    spec["shuffle"] = {**spec.get("shuffle", {}), "outputShardSize": "64MiB"}
    added: list[str] = []
    try:
        common.settle()
        resource.apply(spec)
        runs = [summary("full", endpoint, resource.build(version_id(1), args.timeout))]
        scenarios = [("appended", appended, "a")]
        if not args.skip_scattered:
            scenarios += [("restored", [], "b"), ("scattered", scattered, "c")]
        for label, keys, value in scenarios:
            delete_all(endpoint, bucket, added)
            added = [name for name, _ in added_files(keys, 1)]
            put_all(endpoint, bucket, added_files(keys, 1))
            common.settle()
            resource.refresh(value)
            runs.append(summary(label, endpoint, resource.build(version_id(1, value), args.timeout)))
    finally:
        delete_all(endpoint, bucket, added)
        resource.delete()
        common.drop_bucket(endpoint, OUT_BUCKET)
    full = runs[0]
    res["runs"] = runs
    res["ratios_to_full"] = {
        r["run"]: {
            "converting": round(r["stages_s"].get("converting", 0.0) / full["stages_s"]["converting"], 3),
            "plan_and_convert": round(r["plan_and_convert_s"] / full["plan_and_convert_s"], 3),
            "to_published": round(r["to_published_s"] / full["to_published_s"], 3),
            "samples_converted": round((r["samples_converted"] or 0) / max(1, full["samples_converted"] or 1), 4),
        }
        for r in runs[1:]
    }
    res["targets"] = {
        f"{label}_converting_le_25pct": ratios["converting"] <= 0.25
        for label, ratios in res["ratios_to_full"].items()
        if label != "restored"
    }
    res["bench_wall_s"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / "refresh.json", res)
    print(json.dumps({"ratios_to_full": res["ratios_to_full"], "targets": res["targets"]}, indent=1))
    print(f"results: {args.out / 'refresh.json'}; wall {res['bench_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
