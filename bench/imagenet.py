"""ImageNet-1k benchmark (`make bench-imagenet`, see bench/README.md): the class-folder layout at full count.

An ImageNet-1k-shaped dataset (`sds_tools.layouts.imagefolder(full=True)`: 1,000 class folders, 1,281,167
train + 50,000 val synthetic ~3 KiB JPEGs), and the same at 1/16 and 1/4 of every class's count
(`shrink`; `--quick`: 1/256 and 1/64), each generated once into `ais://bench-imagenet-<shrink>` by promoting
files and kept for later runs. For each size, examples/10-imagefolder.yaml's spec (train/val splits, classes
from the folder, 64 MiB shards, dSort shuffle) with 2 converter workers, applied -> Ready:

- the steps from the status (planning, converting, shuffling; verification and publishing run in the pass
  that sees dSort end, so that part is split with dSort's own finish time), and the **operator overhead**:
  apply -> Ready minus the converter Job's and dSort's own work (planning, verification, publishing and every
  hand-off between them);
- peak memory: the operator process, the planner and the converter processes (their pods' processes on this
  host, VmHWM sampled every 0.5 s);
- AIS disk: the host filesystem's used bytes before the run and at Ready (the raw data is already there),
  and the objects' logical bytes per bucket;
- shard sizes: converted shards against `maxShardSize`, dSort's output against `outputShardSize` (min,
  median, max, the share within +-5 %; each series' last shard left out) and samples per output shard
  (from the wids indexes);
- at the largest size, a refresh after +1 % new images (spread over every class, as new photos per class
  arrive) against the full run: annotation -> published over apply -> published.

Writes bench/results/imagenet.json and imagenet.png. Needs the `hack/cluster.sh env` environment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import common  # bench/common.py: AIS helpers, result writing
import refresh  # bench/refresh.py: the Resource client (apply, refresh, time the steps)
from common import Result

SHRINKS = (16, 4, 1)
QUICK_SHRINKS = (256, 64)
NAMESPACE = "bench-imagenet"
NAME = "bench-imagenet"
OUT_BUCKET = "bench-imagenet-out"
EXAMPLE = common.REPO / "examples" / "10-imagefolder.yaml"
STEPS = ("Planning", "Converting", "Shuffling", "Verifying")
TOLERANCE = 0.05


def ensure_imagenet(endpoint: str, shrink: int) -> tuple[str, dict[str, int], float | None]:
    """`ais://bench-imagenet-<shrink>`, generated unless it holds the expected number of files."""
    from sds_tools import exampledata, layouts
    from sharded_dataset_operator.clients.ais import Ais

    bucket = f"bench-imagenet-{shrink}"
    counts = layouts.imagefolder_counts(full=True, shrink=shrink)
    files = counts["train"] + counts["val"]
    ais = Ais(endpoint)
    if ais.bucket_exists(bucket) and ais.object_count(bucket) == files:
        common.log(f"dataset ais://{bucket}: {files} files present")
        return bucket, counts, None
    common.drop_bucket(endpoint, bucket)
    t = time.time()
    exampledata.promote_files(endpoint, bucket, layouts.imagefolder(full=True, shrink=shrink).files)
    took = time.time() - t
    common.log(f"dataset ais://{bucket}: {files} files promoted in {took:.0f} s")
    return bucket, counts, round(took, 1)


PEAK_ROLES = {"operator": common.OPERATOR_MODULE, "planner": "pods.planner", "converter": "pods.converter"}
"""The processes whose peak memory a run reports, by a marker in their command line (pods' processes on this host)."""


def spec(bucket: str, workers: int, shuffle: bool = True) -> dict[str, Any]:
    import yaml

    s: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["spec"]
    if not shuffle:
        del s["shuffle"]
    s["source"] = {"ais": {"bucket": bucket, "provider": "ais"}}
    s["output"] = {**s["output"], "bucket": OUT_BUCKET, "retainPrevious": "0s"}
    s["conversion"] = {"workers": workers}
    if shuffle:  # the +1 % refresh shuffles the new images alone and copies the published shards
        s["shuffle"] = {**s["shuffle"], "refreshMode": "Append"}
    s["deletionPolicy"] = "Delete"
    return s


def dsort_window(endpoint: str, since: float) -> tuple[float, float, int] | None:
    """(first start, last finish, jobs) of this resource's dSort jobs that started after `since`."""
    import requests

    r = requests.get(f"{endpoint}/v1/sort", params={"regex": NAME}, timeout=30)
    r.raise_for_status()
    spans = []
    for j in r.json() or []:
        start, end = common.dsort_times(endpoint, str(j["id"]))
        if start and end and start >= since - 1:
            spans.append((start, end))
    if not spans:
        return None
    return min(s for s, _ in spans), max(e for _, e in spans), len(spans)


def size_stats(sizes: list[int], target: int) -> Result:
    if not sizes:
        return {"shards": 0}
    return {
        "shards": len(sizes),
        "target_bytes": target,
        "min_ratio": round(min(sizes) / target, 3),
        "median_ratio": round(statistics.median(sizes) / target, 3),
        "max_ratio": round(max(sizes) / target, 3),
        "within_5pct": round(sum(abs(s / target - 1) <= TOLERANCE for s in sizes) / len(sizes), 3),
    }


def series_sizes(endpoint: str, prefix: str) -> tuple[list[int], list[int]]:
    """Sizes of the `.tar` objects under `prefix`: all of them, and without each series' (its name without the
    number: a converted unit, a split's dSort output) last shard."""
    from sharded_dataset_operator.clients.ais import Ais

    series: dict[str, list[tuple[str, int]]] = {}
    for e in Ais(endpoint).list_objects(OUT_BUCKET, "ais", prefix):
        if e.name.endswith(".tar"):
            series.setdefault(re.sub(r"\d+\.tar$", "", e.name), []).append((e.name, e.size))
    every = [size for shards in series.values() for _, size in shards]
    return every, [size for shards in series.values() for _, size in sorted(shards)[:-1]]


def last_units(endpoint: str, base: str) -> set[str]:
    """The ids of each convert stream's last unit (the one cut at the stream's end), from the unit table."""
    from sharded_dataset_operator.clients.ais import Ais
    from sharded_dataset_operator.core.units import TAKEN_OVER, Unit

    ais = Ais(endpoint)
    manifest = json.loads(ais.get(OUT_BUCKET, f"{base}plan.json") or b"{}")
    last: dict[str, tuple[int, str]] = {}
    for chunk in (manifest.get("units") or {}).get("chunks") or []:
        for line in (ais.get(OUT_BUCKET, chunk) or b"").decode().splitlines():
            unit, kind = Unit.parse(line)
            if kind != TAKEN_OVER and unit.start >= last.get(unit.stream, (-1, ""))[0]:
                last[unit.stream] = (unit.start, unit.id)
    return {uid for _, uid in last.values()}


def converted_report(endpoint: str, pool: str, base: str, target: int) -> Result:
    """Converted unit shards against `maxShardSize`: all, and without each convert stream's last unit."""
    from sharded_dataset_operator.clients.ais import Ais

    last = last_units(endpoint, base)
    every: list[int] = []
    full: list[int] = []
    for e in Ais(endpoint).list_objects(OUT_BUCKET, "ais", pool):
        if e.name.endswith(".tar"):
            every.append(e.size)
            if e.name.removeprefix(pool).rsplit("-", 1)[0] not in last:
                full.append(e.size)
    return {"all": size_stats(every, target), "without_last_of_each_split": size_stats(full, target)}


def shard_report(endpoint: str, prefixes: list[str], target: int) -> Result:
    every: list[int] = []
    full: list[int] = []
    for prefix in prefixes:
        a, f = series_sizes(endpoint, prefix)
        every += a
        full += f
    return {"all": size_stats(every, target), "without_last_of_each_series": size_stats(full, target),
            "series": len(every) - len(full)}  # fmt: skip


def index_samples(endpoint: str, status: Result) -> Result:
    """Samples per shard in the published wids indexes (each split's last shard left out), and their sizes."""
    from sharded_dataset_operator.clients.ais import Ais

    ais = Ais(endpoint)
    refs = [str(s["versionIndex"]) for s in (status.get("splits") or {}).values()]
    refs = refs or [str(status["versions"]["published"]["index"])]
    counts: list[int] = []
    index_bytes = 0
    for ref in refs:
        data = ais.get(OUT_BUCKET, ref.split("/", 3)[-1]) or b"{}"
        index_bytes += len(data)
        counts += [int(s["nsamples"]) for s in (json.loads(data).get("shardlist") or [])[:-1]]
    if not counts:
        return {"index_bytes": index_bytes}
    return {"index_bytes": index_bytes, "min": min(counts), "median": statistics.median(counts), "max": max(counts)}


def record_bytes(endpoint: str, base: str) -> Result:
    """Sizes of the version's bookkeeping objects under its converted base (plan, reports, progress, reuse)."""
    from sharded_dataset_operator.clients.ais import Ais

    out: dict[str, int] = {}
    for e in Ais(endpoint).list_objects(OUT_BUCKET, "ais", base):
        kind = re.sub(r"-w\d+|-\d{6}", "", e.name.removeprefix(base))
        out[kind] = out.get(kind, 0) + e.size
    return out


def verification_listing(endpoint: str, prefixes: list[str]) -> Result:
    """The operator's verification count (`observation.tally_output`) over the published output (each split's
    dSort attempt prefixes), timed alone after Ready both ways, one after the other: from the shards' bytes and
    from AIS's archive listing of each shard. `seconds` is the way the operator chose
    (`verify.counted_from_bytes`)."""
    from sharded_dataset_operator.clients.ais import Ais
    from sharded_dataset_operator.core.verify import Totals, counted_from_bytes
    from sharded_dataset_operator.runner.observation import tally_output

    ais = Ais(endpoint)
    out: Result = {}
    for way, from_bytes in (("from_bytes", True), ("archive_listing", False)):
        t = time.perf_counter()
        cpu = time.process_time()
        members = shards = member_bytes = 0
        for prefix in prefixes:
            tally = tally_output(ais, OUT_BUCKET, "ais", prefix, from_bytes=from_bytes)
            members += tally.totals.members
            member_bytes += tally.totals.member_bytes
            shards += len(tally.shards)
        out[way] = {"seconds": round(time.perf_counter() - t, 2), "client_cpu_s": round(time.process_time() - cpu, 2)}
        out |= {"members": members, "shards": shards, "member_bytes": member_bytes}
    chosen = (
        "from_bytes" if counted_from_bytes(Totals(members=members, member_bytes=member_bytes)) else "archive_listing"
    )
    out |= {"way": chosen, "seconds": out[chosen]["seconds"]}
    return out


def bucket_bytes(endpoint: str, bucket: str) -> int:
    from sharded_dataset_operator.clients.ais import Ais

    return sum(e.size for e in Ais(endpoint).list_objects(bucket, "ais", ""))


def add_images(endpoint: str, bucket: str, shrink: int, share: float) -> list[str]:
    """`share` of the train images again as new ones, spread over every class folder (PUT one by one)."""
    from concurrent.futures import ThreadPoolExecutor

    from sds_tools import layouts
    from sharded_dataset_operator.clients.ais import Ais

    wnids = layouts.imagefolder_classes(full=True, shrink=shrink)
    n = max(1, round(layouts.imagefolder_counts(full=True, shrink=shrink)["train"] * share))
    jpeg = next(data for _, data in layouts.imagefolder(full=True, shrink=shrink).files)
    names = [f"train/{wnids[i % len(wnids)]}/{wnids[i % len(wnids)]}_new{i:06d}.JPEG" for i in range(n)]
    ais = Ais(endpoint)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: ais.put(bucket, n, jpeg + n.encode()), names))
    return names


def run_size(
    endpoint: str,
    shrink: int,
    workers: int,
    timeout: float,
    with_refresh: bool,
    shuffle: bool = True,
    highwm: int | None = None,
    keep_output: bool = False,
) -> Result:
    bucket, counts, generated_s = ensure_imagenet(endpoint, shrink)
    resource = refresh.Resource(NAMESPACE, NAME, STEPS)
    resource.delete()
    common.drop_bucket(endpoint, OUT_BUCKET)
    common.settle()
    disk_before = shutil.disk_usage("/").used
    with common.PeakSampler(common.peak_rss_by_role(PEAK_ROLES)) as peaks:
        applied = time.time()
        s = spec(bucket, workers, shuffle)
        resource.apply(s)
        built = resource.build(refresh.version_id(1), timeout)
    disk_after = shutil.disk_usage("/").used
    status = built["status"]
    stages = dict(built["stages_s"])
    total = built["to_published_s"]
    window = dsort_window(endpoint, applied)
    dsort_s = round(window[1] - window[0], 2) if window else 0.0
    converting = stages.get("converting", 0.0)
    overhead = total - converting - dsort_s
    plan = refresh.plan_of(endpoint, status, OUT_BUCKET)
    record = next(a for a in status["artifacts"] if a["version"] == status["versions"]["published"]["version"])
    outputs = record["locations"][1:]  # each split's shuffled output (the first location: the converted base)
    shuffled_target = _bytes((s.get("shuffle") or {}).get("outputShardSize") or "100MiB")
    out: Result = {
        "shrink": shrink,
        "source_files": counts["train"] + counts["val"],
        "classes": counts["classes"],
        "samples": status["samples"]["written"],
        "generated_s": generated_s,
        "apply_to_ready_s": total,
        "stages_s": stages,
        "dsort_s": dsort_s,
        "dsort_jobs": window[2] if window else 0,
        "after_dsort_to_ready_s": round(applied + total - window[1], 2) if window else None,
        "operator_overhead_s": round(overhead, 2),
        "operator_overhead_pct": round(100 * overhead / total, 1),
        "planner_s": plan.get("seconds"),
        "peak_rss_mib": peaks.result(),
        "disk_used_delta_gib": round((disk_after - disk_before) / 2**30, 2),
        "bytes_gib": {
            "source": round(bucket_bytes(endpoint, bucket) / 2**30, 2),
            "output_bucket": round(bucket_bytes(endpoint, OUT_BUCKET) / 2**30, 2),
        },
        "converted_shards": converted_report(
            endpoint, record["pool"]["prefix"], record["locations"][0]["prefix"], _bytes(s["output"]["maxShardSize"])
        ),
        "output_shards": shard_report(endpoint, [loc["prefix"] for loc in outputs], shuffled_target),
        "samples_per_output_shard": index_samples(endpoint, status),
        "record_bytes": record_bytes(endpoint, record["locations"][0]["prefix"]),
        "verification_listing": verification_listing(endpoint, [f"{loc['prefix']}a" for loc in outputs]),
        "samples_per_s": round(status["samples"]["written"] / total, 1),
    }
    out["verification_listing"]["pct_of_ready"] = round(100 * out["verification_listing"]["seconds"] / total, 1)
    common.log(f"1/{shrink}: {out['samples']} samples Ready in {total} s {stages}; dSort {dsort_s} s; operator "
               f"overhead {out['operator_overhead_pct']} %; peaks {out['peak_rss_mib']}")  # fmt: skip
    if with_refresh:
        from sharded_dataset_operator.clients.ais import Ais

        added = add_images(endpoint, bucket, shrink, 0.01)
        try:
            common.settle()
            with common.high_watermark(endpoint, highwm):
                resource.refresh("a")
                since = time.time()
                again = resource.build(refresh.version_id(1, "a"), timeout)
            window = dsort_window(endpoint, since)
            index = json.loads(Ais(endpoint).get(OUT_BUCKET, again["status"]["indexObject"].split("/", 3)[3]) or b"{}")
            out["refresh"] = {
                "added_images": len(added),
                "to_published_s": again["to_published_s"],
                "stages_s": again["stages_s"],
                "dsort_s": round(window[1] - window[0], 2) if window else 0.0,
                "dsort_jobs": window[2] if window else 0,
                "appended": (index.get("info") or {}).get("appended"),
                "ratio_to_full": round(again["to_published_s"] / total, 3),
                "ais_highwm_pct": highwm,
            }
            common.log(f"refresh +{len(added)} images: published in {again['to_published_s']} s "
                       f"({out['refresh']['ratio_to_full']} of the full run)")  # fmt: skip
        except RuntimeError as e:  # a failed build is a result too (e.g. dSort out of attempts)
            out["refresh"] = {"added_images": len(added), "error": str(e)[:2000]}
            common.log(f"refresh failed: {str(e)[:300]}")
        finally:
            Ais(endpoint).delete_objects(bucket, added)
    if keep_output:  # the resource and its output stay, to measure reading or verifying them afterwards
        common.log(f"kept {NAMESPACE}/{NAME} and ais://{OUT_BUCKET} (--keep-output)")
        return out
    resource.delete()
    common.drop_bucket(endpoint, OUT_BUCKET)
    return out


def _bytes(text: str) -> int:
    from sharded_dataset_operator.core.spec import parse_size

    return parse_size(text, "size")


def chart(res: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = res["runs"]
    xs = [str(r["samples"]) for r in runs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    bottoms = [0.0] * len(runs)
    parts = {
        "planning": [r["stages_s"].get("planning", 0.0) for r in runs],
        "converting": [r["stages_s"].get("converting", 0.0) for r in runs],
        "dSort": [r["dsort_s"] for r in runs],
        "verify, publish, hand-offs": [r["operator_overhead_s"] - r["stages_s"].get("planning", 0.0) for r in runs],
    }
    for label, vals in parts.items():
        a1.bar(xs, vals, bottom=bottoms, label=label)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    a1.set(xlabel="samples", ylabel="seconds", title="apply -> Ready (2 workers)")
    a1.legend(fontsize=8)
    for role in ("operator", "planner", "converter"):
        a2.plot(xs, [r["peak_rss_mib"][role] for r in runs], "o-", label=role)
    a2.set(xlabel="samples", ylabel="peak RSS (MiB)", title="memory", ylim=(0, None))
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"ImageNet's counts divided by {QUICK_SHRINKS}")
    ap.add_argument("--shrinks", help="comma-separated divisors of ImageNet's counts (default 16,4,1)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-refresh", action="store_true")
    ap.add_argument("--refresh-highwm", type=int, help="AIS space.highwm (%%) during the refresh (a shared disk)")
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    ap.add_argument("--keep-output", action="store_true", help="leave the last size's resource and output in place")
    args = ap.parse_args(argv)
    endpoint = common.ais_endpoint(ap, "bench-imagenet")
    default = QUICK_SHRINKS if args.quick else SHRINKS
    shrinks = [int(s) for s in args.shrinks.split(",")] if args.shrinks else list(default)
    started = time.time()
    res: Result = {"host_cpus": os.cpu_count(), "workers": args.workers, "shrinks": shrinks, "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for i, shrink in enumerate(shrinks):
        last = i == len(shrinks) - 1
        try:
            refreshing = last and not args.skip_refresh
            res["runs"].append(
                run_size(
                    endpoint,
                    shrink,
                    args.workers,
                    args.timeout,
                    refreshing,
                    highwm=args.refresh_highwm,
                    keep_output=last and args.keep_output,
                )
            )
        except RuntimeError as e:  # a size that did not reach Ready: recorded, and the run stops
            res["failed"] = {"shrink": shrink, "error": str(e)[:3000]}
            common.log(f"1/{shrink} failed: {str(e)[:300]}")
            break
        finally:
            common.write_json(args.out / "imagenet.json", res)  # what is measured so far
    if not res["runs"]:
        return 1
    first, last_run = res["runs"][0], res["runs"][-1]
    res["growth"] = {
        "samples_ratio": round(last_run["samples"] / first["samples"], 1),
        **{
            f"{role}_rss_ratio": round(last_run["peak_rss_mib"].get(role, 0.0) / first["peak_rss_mib"][role], 3)
            for role in PEAK_ROLES
            if first["peak_rss_mib"].get(role)
        },
    }
    res["targets"] = {
        "operator_overhead_le_10pct": last_run["operator_overhead_pct"] <= 10,
        "operator_rss_within_10pct": res["growth"].get("operator_rss_ratio", 99) <= 1.10,
        "converter_rss_within_10pct": res["growth"].get("converter_rss_ratio", 99) <= 1.10,
        "refresh_le_25pct": (last_run["refresh"].get("ratio_to_full", 99) <= 0.25) if "refresh" in last_run else None,
    }
    res["bench_wall_s"] = round(time.time() - started, 1)
    common.write_json(args.out / "imagenet.json", res)
    chart(res, args.out / "imagenet.png")
    print(json.dumps({"growth": res["growth"], "targets": res["targets"]}, indent=1))
    print(f"results: {args.out / 'imagenet.json'}, {args.out / 'imagenet.png'}; wall {res['bench_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
