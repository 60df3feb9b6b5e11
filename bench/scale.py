"""Growth benchmark (`make bench-scale`, see bench/README.md): how cost grows with the dataset size.

The same pipeline at three sizes of a many-small-files dataset (~4 KiB samples of two files: `data/*.bin`,
`meta/*.json`; every 100th sample lacks its meta file) and at Oxford size:

1. the planner and a 1-worker converter as host processes, reading with Get-Batch: samples/s, MiB/s, peak
   RSS of each, source listing requests (the planner's listing pages; converters never list);
2. the same converter with one GET per file (`reads.mode: object`, what v0.1 did) at the smallest size and
   at Oxford size, for the Get-Batch speed-up, and at Oxford size the raw GET bound (bench/bounds.py's);
3. a whole ShardedDataset (apply -> Ready, 2 converter workers, shuffled): the phase split and the operator
   process's RSS before and at its peak.

Writes bench/results/scale.json and scale.png. Needs the `hack/cluster.sh env` environment (`make bench-scale`
sets it). Small-file buckets are created by promoting files (fast) and kept for later runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common  # bench/common.py: process harness, AIS helpers
from bounds import measure_get  # bench/bounds.py: the raw GET bound
from common import Result
from converter import measure_converter  # bench/converter.py: the converter as host processes

SIZES = (10_000, 50_000, 200_000)
QUICK_SIZES = (2_000, 8_000, 32_000)
SAMPLE_BYTES = 4000  # + a ~10-byte json file: ~4 KiB samples
NAMESPACE = "bench-scale"
NAME = "bench-scale"
OUT_BUCKET = "bench-scale-out"


def small_over() -> dict[str, Any]:
    from sds_tools import exampledata

    return {
        "samples": {"fields": [dict(f) for f in exampledata.SMALL_FIELDS]},
        "output": {"bucket": common.CONV_BUCKET, "prefix": "scale-", "maxShardSize": "32MiB"},
    }


def ensure_small(endpoint: str, n: int) -> tuple[str, dict[str, int]]:
    from sds_tools import exampledata
    from sharded_dataset_operator.clients.ais import Ais

    bucket = f"bench-small-{n}"
    counts = exampledata.small_counts(n)
    ais = Ais(endpoint)
    if ais.bucket_exists(bucket) and ais.object_count(bucket) == counts["files"]:
        common.log(f"dataset ais://{bucket}: {counts['files']} files present")
        return bucket, counts
    common.drop_bucket(endpoint, bucket)
    t = time.time()
    exampledata.write_small_ais(endpoint, bucket, n, seed=n, size=SAMPLE_BYTES)
    common.log(f"dataset ais://{bucket}: {counts['files']} files promoted in {time.time() - t:.0f} s")
    return bucket, counts


def run_resource(
    endpoint: str,
    bucket: str,
    over: dict[str, Any] | None,
    workers: int,
    timeout: float,
    during: Callable[[dict[str, Any]], None] | None = None,
) -> Result:
    """apply -> Ready of a ShardedDataset over `bucket`; phase split from the status, operator RSS.

    `during` sees the status on every poll (e.g. to inject a fault)."""
    from kubernetes import client as k8s
    from kubernetes import config as kcfg
    from kubernetes.client.rest import ApiException

    kcfg.load_kube_config()
    core, custom = k8s.CoreV1Api(), k8s.CustomObjectsApi()
    group, version, plural = common.GROUP, common.VERSION, common.PLURAL

    def get() -> dict[str, Any] | None:
        return common.get_dataset(custom, NAMESPACE, NAME)

    def delete() -> None:
        if get() is not None:
            custom.delete_namespaced_custom_object(group, version, NAMESPACE, plural, NAME)
            common.wait_gone(get, 300)

    try:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        time.sleep(2)  # the default service account
    except ApiException as e:
        if e.status != 409:
            raise
    delete()
    common.drop_bucket(endpoint, OUT_BUCKET)
    spec = common.example_spec(bucket, OUT_BUCKET)
    for k, v in (over or {}).items():
        spec[k] = {**v, "bucket": OUT_BUCKET} if k == "output" else v
    spec["conversion"] = {"workers": workers}
    spec["shuffle"] = {**spec.get("shuffle", {}), "outputShardSize": "64MiB"}
    rss_before = common.operator_rss().get("operator", float("nan"))
    marks: dict[str, float] = {}
    t0 = time.time()  # epoch seconds: dSort's own times are compared with it
    custom.create_namespaced_custom_object(
        group,
        version,
        NAMESPACE,
        plural,
        {"apiVersion": f"{group}/{version}", "kind": "ShardedDataset", "metadata": {"name": NAME}, "spec": spec},
    )
    status: dict[str, Any] = {}
    with common.PeakSampler(common.operator_rss, 0.25) as rss:
        while time.time() - t0 < timeout:
            status = (get() or {}).get("status") or {}
            reason = next((c["reason"] for c in status.get("conditions") or [] if c["type"] == "Reconciling"), "")
            step = status.get("phase") if status.get("phase") in ("Ready", "Failed") else reason
            if step and step not in marks:
                marks[step] = time.time() - t0
            if status.get("phase") in ("Ready", "Failed"):
                break
            if during is not None:
                during(status)
            time.sleep(0.2)
    if status.get("phase") != "Ready":
        raise RuntimeError(f"bench resource did not become Ready: {json.dumps(status)[:2000]}")
    order = ["Planning", "Converting", "Shuffling", "Verifying", "Ready"]
    seen = [(s, marks[s]) for s in order if s in marks]
    stages = {a.lower(): round(tb - ta, 2) for (a, ta), (_, tb) in itertools.pairwise(seen)}
    base_prefix = status["artifacts"][0]["locations"][0]["prefix"]
    from sharded_dataset_operator.clients.ais import Ais

    plan = json.loads(Ais(endpoint).get(OUT_BUCKET, f"{base_prefix}plan.json") or b"{}")
    reports = [json.loads(Ais(endpoint).get(OUT_BUCKET, f"{base_prefix}report-w{i:04d}.json") or b"{}")
               for i in range(workers)]  # fmt: skip
    # the status is not written between dSort's end and Ready (verification runs in the same pass): split the
    # shuffling stage with dSort's own start and finish times
    job_id = (status.get("shuffle") or {}).get("dsortJobId")
    if job_id:
        d0, d1 = common.dsort_times(endpoint, job_id)
        if d0 and d1:
            stages["dsort_s"] = round(d1 - d0, 2)
            stages["after_dsort_to_ready_s"] = round(t0 + marks["Ready"] - d1, 2)
    out = {
        "apply_to_ready_s": round(marks["Ready"], 2),
        "stages_s": stages,
        "samples": status["samples"]["written"],
        "source_list_requests": plan.get("listPages"),
        "resumed_shards": sum(int(r.get("resumedShards") or 0) for r in reports),
        "plan_s": plan.get("seconds"),
        "operator_rss_before_mib": round(rss_before, 1),
        "operator_rss_peak_mib": round(max(rss.peak.get("operator", 0.0), rss_before), 1),
    }
    delete()
    common.log(f"resource over {bucket}: Ready in {out['apply_to_ready_s']} s {stages}; operator peak RSS "
               f"{out['operator_rss_peak_mib']} MiB")  # fmt: skip
    return out


def measure_size(endpoint: str, label: str, bucket: str, over: dict[str, Any] | None, object_reads: bool,
                 timeout: float) -> Result:  # fmt: skip
    conv = measure_converter(endpoint, bucket, 1, reads="batch", spec_over=over)
    res: Result = {
        "dataset": label,
        "samples": conv["samples"],
        "converter_samples_per_s": conv["samples_per_s"],
        "converter_mib_per_s": conv["mib_per_s"],
        "converter_peak_rss_mib": max(conv["peak_rss_mib_per_worker"]),
        "planner_peak_rss_mib": conv["plan"]["peak_rss_mib"],
        "planner_s": conv["plan"]["wall_s"],
        "source_files": conv["plan"]["files"],
        "source_list_requests": conv["plan"]["list_pages"],
        "batch_requests": conv["batch_requests"],
        "converter": conv,
    }
    if object_reads:
        single = measure_converter(endpoint, bucket, 1, reads="object", spec_over=over)
        res["object_reads"] = single
        res["get_batch_speedup"] = round(conv["samples_per_s"] / single["samples_per_s"], 2)
    res["resource"] = run_resource(endpoint, bucket, over, 2, timeout)
    res["operator_peak_rss_mib"] = res["resource"]["operator_rss_peak_mib"]
    return res


def sweep(endpoint: str, small_bucket: str, oxford_bucket: str | None) -> Result:
    """Converter x1 samples/s for Get-Batch limits: files per request on small files, bytes on Oxford."""
    out: Result = {"small_batch_objects": {}, "oxford_batch_size_mib": {}}
    for objects in (32, 256, 1024, 2048, 4096):
        over = {**small_over(), "conversion": {"workers": 1, "reads": {"batchObjects": objects, "batchSize": "8MiB"}}}
        r = measure_converter(endpoint, small_bucket, 1, spec_over=over)
        out["small_batch_objects"][str(objects)] = {
            "samples_per_s": r["samples_per_s"],
            "mib_per_s": r["mib_per_s"],
            "peak_rss_mib": max(r["peak_rss_mib_per_worker"]),
        }
    if oxford_bucket:
        for mib in (2, 8, 32):
            over = {"conversion": {"workers": 1, "reads": {"batchObjects": 10_000, "batchSize": f"{mib}MiB"}}}
            r = measure_converter(endpoint, oxford_bucket, 1, spec_over=over)
            out["oxford_batch_size_mib"][str(mib)] = {
                "samples_per_s": r["samples_per_s"],
                "mib_per_s": r["mib_per_s"],
                "peak_rss_mib": max(r["peak_rss_mib_per_worker"]),
            }
    return out


class KillConverterAt:
    """Delete the converter pods once, when the status shows `percent` of the conversion done (SIGTERM, as a
    node drain would; the Job's retry resumes after the last uploaded shard)."""

    def __init__(self, percent: float) -> None:
        self.percent = percent
        self.killed_at: float | None = None

    def __call__(self, status: dict[str, Any]) -> None:
        progress = status.get("progress") or {}
        if self.killed_at is not None or status.get("phase") != "Converting" or "samplesPlanned" not in progress:
            return
        if float(progress.get("percent") or 0) < self.percent:
            return
        from kubernetes import client as k8s

        core = k8s.CoreV1Api()
        for pod in core.list_namespaced_pod(
            NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={NAME}-convert-g1"
        ).items:
            core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)
        self.killed_at = float(progress.get("percent") or 0)
        common.log(f"converter pods deleted at {self.killed_at:.0f} % of the conversion")


def measure_resume(endpoint: str, n: int, timeout: float) -> Result:
    """apply -> Ready with one converter worker, without a fault and with its pod deleted at ~80 %."""
    bucket, _ = ensure_small(endpoint, n)
    clean = run_resource(endpoint, bucket, small_over(), 1, timeout)
    kill = KillConverterAt(80.0)
    killed = run_resource(endpoint, bucket, small_over(), 1, timeout, during=kill)
    return {
        "dataset": f"small-{n}",
        "workers": 1,
        "no_fault": clean,
        "pod_deleted": {**killed, "deleted_at_percent": kill.killed_at},
        "time_to_ready_ratio": round(killed["apply_to_ready_s"] / clean["apply_to_ready_s"], 3),
        "converting_ratio": round(killed["stages_s"]["converting"] / clean["stages_s"]["converting"], 3),
    }


def chart(res: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    small = res["small"]
    xs = [r["samples"] for r in small]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.5))
    a1.plot(xs, [r["converter_samples_per_s"] for r in small], "o-", label="converter x1, Get-Batch")
    for r in small:
        if "object_reads" in r:
            a1.plot([r["samples"]], [r["object_reads"]["samples_per_s"]], "s", color="#999", label="one GET per file")
    a1.set(xscale="log", xlabel="samples (~4 KiB)", ylabel="samples/s", title="throughput", ylim=(0, None))
    a1.legend(fontsize=8)
    for key, name in (("converter_peak_rss_mib", "converter"), ("planner_peak_rss_mib", "planner"),
                      ("operator_peak_rss_mib", "operator")):  # fmt: skip
        a2.plot(xs, [r[key] for r in small], "o-", label=name)
    a2.set(xscale="log", xlabel="samples", ylabel="peak RSS (MiB)", title="memory", ylim=(0, None))
    a2.legend(fontsize=8)
    bottoms = [0.0] * len(small)
    for stage in ("planning", "converting", "shuffling"):
        vals = [r["resource"]["stages_s"].get(stage, 0.0) for r in small]
        a3.bar([str(x) for x in xs], vals, bottom=bottoms, label=stage)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    a3.set(xlabel="samples", ylabel="seconds", title="apply -> Ready (2 workers)")
    a3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} and a 2,000-sample Oxford set")
    ap.add_argument("--sizes", help="comma-separated small-file sample counts (overrides the defaults)")
    ap.add_argument("--skip-oxford", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also measure Get-Batch request limits (converter x1)")
    ap.add_argument(
        "--resume",
        type=int,
        metavar="N",
        help="only measure apply -> Ready of the N-sample set with a converter pod deleted at 80 %% "
        "against the same run without it (writes resume.json)",
    )
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    endpoint = common.ais_endpoint(ap, "bench-scale")
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        resumed = measure_resume(endpoint, args.resume, args.timeout)
        common.write_json(args.out / "resume.json", resumed)
        print(json.dumps({k: resumed[k] for k in ("time_to_ready_ratio", "converting_ratio")}, indent=1))
        return 0
    started = time.time()
    res: Result = {"host_cpus": os.cpu_count(), "sample_bytes": SAMPLE_BYTES, "sizes": sizes, "small": []}
    for i, n in enumerate(sizes):
        bucket, counts = ensure_small(endpoint, n)
        r = measure_size(endpoint, f"small-{n}", bucket, small_over(), i == 0, args.timeout)
        r["complete_samples_expected"] = counts["complete"]
        res["small"].append(r)
    if not args.skip_oxford:
        n = 2000 if args.quick else common.FULL_SAMPLES
        raw = common.DEFAULT_RAW_BUCKET if not args.quick else common.SMALL_BUCKET
        common.ensure_dataset(endpoint, raw, n)
        ox = measure_size(endpoint, f"oxford-{n}", raw, None, True, args.timeout)
        ox["get_bound"] = measure_get(endpoint, raw, 1)
        ox["converter_vs_get_bound"] = round(ox["converter_mib_per_s"] / ox["get_bound"]["mib_per_s"], 3)
        res["oxford"] = ox
    if args.sweep:
        mid = res["small"][len(res["small"]) // 2]["dataset"].removeprefix("small-")
        oxford = None if args.skip_oxford else (common.SMALL_BUCKET if args.quick else common.DEFAULT_RAW_BUCKET)
        res["sweep"] = sweep(endpoint, f"bench-small-{mid}", oxford)
    first, last = res["small"][0], res["small"][-1]
    res["growth"] = {
        "samples_ratio": round(last["samples"] / first["samples"], 1),
        "converter_rss_ratio": round(last["converter_peak_rss_mib"] / first["converter_peak_rss_mib"], 3),
        "planner_rss_ratio": round(last["planner_peak_rss_mib"] / first["planner_peak_rss_mib"], 3),
        "operator_rss_ratio": round(last["operator_peak_rss_mib"] / first["operator_peak_rss_mib"], 3),
        "converter_samples_per_s_ratio": round(last["converter_samples_per_s"] / first["converter_samples_per_s"], 3),
    }
    res["targets"] = {
        "small_get_batch_speedup_ge_3": first.get("get_batch_speedup", 0) >= 3,
        "converter_rss_within_15pct": res["growth"]["converter_rss_ratio"] <= 1.15,
        "operator_rss_within_15pct": res["growth"]["operator_rss_ratio"] <= 1.15,
        "oxford_vs_get_bound_ge_0_9": ("oxford" in res and res["oxford"]["converter_vs_get_bound"] >= 0.9) or None,
        "one_listing_per_run": all(
            r["resource"]["source_list_requests"] == r["source_list_requests"] for r in res["small"]
        ),
    }
    res["bench_wall_s"] = round(time.time() - started, 1)
    common.write_json(args.out / "scale.json", res)
    chart(res, args.out / "scale.png")
    print(json.dumps({"growth": res["growth"], "targets": res["targets"]}, indent=1))
    print(f"results: {args.out / 'scale.json'}, {args.out / 'scale.png'}; wall {res['bench_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
