"""Benchmark of the converter and the operator against the local cluster (see bench/README.md).

One run measures, on an Oxford-IIIT-Pet-shaped dataset in the local AIS:

1. the 2023 baseline pipeline (one process, sequential GETs, `webdataset.ShardWriter` to a temp dir, upload);
2. upper bounds: the same bytes PUT to AIS as plain objects, and a raw GET of the source, by 1/2/4 processes;
3. the converter alone (`convert()` in 1/2/4 host processes, one index each), with peak RSS per worker and
   peak RSS at two dataset sizes;
4. a whole ShardedDataset (apply -> Ready), split into stages, with the operator process's CPU time;
5. a py-spy (or cProfile) profile of the 1-worker converter.

Results go to bench/results/latest.json, latest.png and profile.txt. Needs the environment of
`hack/cluster.sh env` (AIS_ENDPOINT, KUBECONFIG); `make bench` sets it.

Child processes are started with the `spawn` method, so this module and the scenario modules it runs
(bench/baseline.py, bounds.py, converter.py, apply_to_ready.py, profiling.py; shared parts in bench/common.py,
the report in bench/report.py) import only the standard library at top level: a converter child then holds
what a converter pod holds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from apply_to_ready import measure_resource
from baseline import BASELINE_BUCKET, BASELINE_MAXCOUNT, measure_baseline
from bounds import IO_THREADS, UPPER_BUCKET, measure_get, measure_put
from common import (
    CONV_BUCKET,
    DEFAULT_RAW_BUCKET,
    FULL_SAMPLES,
    MAX_SAMPLES_PER_SHARD,
    MAX_SHARD_BYTES,
    MIB,
    RESULTS,
    SMALL_BUCKET,
    Result,
    ais_endpoint,
    best,
    drop_bucket,
    ensure_dataset,
    log,
    write_json,
)
from converter import READAHEAD_MIB, measure_converter, measure_transforms, transforms_table
from profiling import profile_converter
from report import chart, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=FULL_SAMPLES, help=f"dataset size (default {FULL_SAMPLES})")
    ap.add_argument("--raw-bucket", default=DEFAULT_RAW_BUCKET, help=f"source bucket (default {DEFAULT_RAW_BUCKET})")
    ap.add_argument("--small-samples", type=int, default=None, help="second size for the RSS check (default ~2000)")
    ap.add_argument("--workers", default="1,2,4", help="process counts for the scaling runs")
    ap.add_argument("--repeat", type=int, default=2, help="repeats of the 1-process runs, best counts (default 2)")
    ap.add_argument("--resource-runs", type=int, default=2, help="ShardedDataset runs (default 2)")
    ap.add_argument("--skip-resource", action="store_true", help="skip the ShardedDataset run (no Kubernetes)")
    ap.add_argument("--skip-profile", action="store_true")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the resource to be Ready")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--transforms-only",
        action="store_true",
        help="only the converter without and with the resize transform (x1 and x2), into transforms.json",
    )
    args = ap.parse_args(argv)
    raw = args.raw_bucket
    endpoint = ais_endpoint(ap, "bench")
    workers = sorted({int(w) for w in args.workers.split(",")} | {1})
    small_n = args.small_samples or (2000 if args.samples > 4000 else max(50, args.samples // 4))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    manifest = ensure_dataset(endpoint, raw, args.samples)
    if args.transforms_only:
        drop_bucket(endpoint, CONV_BUCKET)
        only = {
            "dataset": {"bucket": raw, "samples": args.samples},
            **measure_transforms(endpoint, raw, args.repeat, (1, 2)),
        }
        write_json(args.out / "transforms.json", only)
        print(transforms_table({k: v for k, v in only.items() if k != "dataset"}))
        return 0
    ensure_dataset(endpoint, SMALL_BUCKET, small_n)
    for b in (BASELINE_BUCKET, UPPER_BUCKET, CONV_BUCKET):
        drop_bucket(endpoint, b)

    res: Result = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "host_loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "dataset": {
            "bucket": raw,
            "samples": args.samples,
            "complete_samples": len(manifest["complete"]),
            "files": manifest["files"],
            "raw_mib": round(manifest["total_bytes"] / MIB, 1),
        },
        "settings": {
            "maxSamplesPerShard": MAX_SAMPLES_PER_SHARD,
            "maxShardSize_mib": MAX_SHARD_BYTES // MIB,
            "baseline_maxcount": BASELINE_MAXCOUNT,
            "io_threads_per_process": IO_THREADS,
        },
    }

    mean_sample = manifest["total_bytes"] / args.samples
    blob = int(MAX_SAMPLES_PER_SHARD * mean_sample)
    ub: Result = {"put_raw_objects": {}, "put_shard_sized_objects": {}, "get_raw_objects": {}}
    res["upper_bound"] = ub
    res["converter"] = {}
    # the headline 1-process runs, interleaved and repeated; the best of each counts (noise only slows down)
    one: dict[str, list[Result]] = {"baseline": [], "converter": [], "put": [], "get": []}
    for _ in range(max(1, args.repeat)):
        one["baseline"].append(measure_baseline(endpoint, raw))
        one["converter"].append(measure_converter(endpoint, raw, 1))
        one["get"].append(measure_get(endpoint, raw, 1))
        one["put"].append(measure_put(endpoint, args.samples, 1, 0))
    res["baseline"] = best(one["baseline"])
    res["converter"]["1"] = best(one["converter"])
    ub["put_raw_objects"]["1"] = best(one["put"])
    ub["get_raw_objects"]["1"] = best(one["get"])
    ub["put_shard_sized_objects"]["1"] = measure_put(endpoint, args.samples, 1, blob)
    for w in workers:
        if w == 1:
            continue
        res["converter"][str(w)] = measure_converter(endpoint, raw, w)
        ub["get_raw_objects"][str(w)] = measure_get(endpoint, raw, w)
        ub["put_raw_objects"][str(w)] = measure_put(endpoint, args.samples, w, 0)
        ub["put_shard_sized_objects"][str(w)] = measure_put(endpoint, args.samples, w, blob)
    # the headline bound: the raw files PUT as plain objects (same bytes, same object count as the source)
    res["upper_bound_put_mib_per_s"] = {w: r["mib_per_s"] for w, r in ub["put_raw_objects"].items()}
    res["upper_bound_put_shard_sized_mib_per_s"] = {w: r["mib_per_s"] for w, r in ub["put_shard_sized_objects"].items()}
    res["upper_bound_get_mib_per_s"] = {w: r["mib_per_s"] for w, r in ub["get_raw_objects"].items()}
    # what the converter must do, done back to back: GET the raw objects, then PUT shard-sized objects
    res["upper_bound_get_then_shard_put_mib_per_s"] = {
        w: round(1 / (1 / res["upper_bound_get_mib_per_s"][w] + 1 / res["upper_bound_put_shard_sized_mib_per_s"][w]), 2)
        for w in ub["get_raw_objects"]
    }
    drop_bucket(endpoint, UPPER_BUCKET)
    res["converter_samples_per_s"] = {w: r["samples_per_s"] for w, r in res["converter"].items()}
    res["converter_mib_per_s"] = {w: r["mib_per_s"] for w, r in res["converter"].items()}

    small_run = measure_converter(endpoint, SMALL_BUCKET, 1)
    res["converter_small_dataset"] = {"samples": small_n, **small_run}
    res["converter_x1_peak_rss_mib_all_runs"] = [max(r["peak_rss_mib_per_worker"]) for r in one["converter"]]
    res["converter_rss_by_samples_mib"] = {
        str(args.samples): max(res["converter_x1_peak_rss_mib_all_runs"]),
        str(small_n): max(small_run["peak_rss_mib_per_worker"]),
    }

    res["transforms"] = measure_transforms(endpoint, raw, args.repeat, (1, 2))

    if not args.skip_profile:
        log("profiling the 1-worker converter")
        res["profile"] = profile_converter(endpoint, raw, args.out / "profile.txt")

    if not args.skip_resource and args.resource_runs > 0:
        runs = []
        for i in range(args.resource_runs):
            log(f"ShardedDataset run {i + 1}/{args.resource_runs} (namespace bench, 4 workers, shuffle to 100 MiB)")
            runs.append(measure_resource(endpoint, raw, args.timeout, last=i == args.resource_runs - 1))
        overheads = [r["operator_overhead_s"] for r in runs]
        res["resource"] = {
            "runs": runs,
            "total_mean_s": round(sum(r["total_s"] for r in runs) / len(runs), 2),
            "operator_overhead_mean_s": round(sum(overheads) / len(overheads), 2),
            "operator_overhead_max_s": max(overheads),
        }

    # headline numbers and targets
    c1 = res["converter"]["1"]
    res["converter_vs_baseline"] = round(c1["samples_per_s"] / res["baseline"]["samples_per_s"], 3)
    res["converter_vs_upper_bound"] = round(c1["mib_per_s"] / res["upper_bound_put_mib_per_s"]["1"], 3)
    res["converter_vs_get_bound"] = round(c1["mib_per_s"] / res["upper_bound_get_mib_per_s"]["1"], 3)
    res["converter_vs_get_then_shard_put_bound"] = round(
        c1["mib_per_s"] / res["upper_bound_get_then_shard_put_mib_per_s"]["1"], 3
    )
    res["converter_peak_rss_mib"] = max(
        max(r["peak_rss_mib_per_worker"]) for r in [*res["converter"].values(), *one["converter"], small_run]
    )
    res["operator_overhead_s"] = res["resource"]["operator_overhead_mean_s"] if "resource" in res else None
    rss_limit = 2 * MAX_SHARD_BYTES / MIB + 150
    sizes = list(res["converter_rss_by_samples_mib"].values())
    res["targets"] = {
        "converter_vs_baseline_ok": res["converter_vs_baseline"] >= 1.5,
        "converter_vs_upper_bound_ok": res["converter_vs_upper_bound"] >= 0.8,
        "operator_overhead_ok": res["operator_overhead_s"] is not None and res["operator_overhead_s"] <= 3.0,
        "rss_limit_mib": rss_limit,
        # size-independent: the two sizes differ by less than the read-ahead window, the part of the memory that
        # depends on timing (how full the window is when a shard is cut), not on the dataset
        "rss_size_tolerance_mib": READAHEAD_MIB,
        "converter_rss_ok": res["converter_peak_rss_mib"] <= rss_limit and abs(sizes[0] - sizes[1]) <= READAHEAD_MIB,
    }
    res["bench_wall_s"] = round(time.time() - started, 1)
    res["host_loadavg_5m_at_end"] = round(os.getloadavg()[1], 2)

    write_json(args.out / "latest.json", res)
    chart(res, args.out / "latest.png")
    print()
    print(table(res))
    print(f"\nresults: {args.out / 'latest.json'}, {args.out / 'latest.png'}, {args.out / 'profile.txt'}")
    print(f"bench wall time {res['bench_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
