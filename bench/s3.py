"""S3 source benchmark (`make bench-s3`, see bench/README.md): how a ShardedDataset reads raw data that lives in S3.

On the local cluster's S3 server (versitygw; AIS in front of it with the `aws` backend), at growing dataset sizes
(default 1,000 and 4,000 Oxford-pets-shaped samples), in one run:

1. `cold`: the data written straight to a new S3 bucket (AIS has never seen it), converted reading cold: one
   latest-version GET per object, each fetched by AIS from S3;
2. `prefetched`: the same data in a second new bucket, `spec.source.ais.prefetch: true`: one AIS prefetch job,
   then Get-Batch reads from AIS's copies (prefetch time counted in);
3. `warm`: the first bucket again, now cached in AIS, read as in 1 (AIS checks each object's version with S3);
4. `warm-prefetched`: the first bucket again with prefetch (the prefetch only revalidates), then Get-Batch.

Each conversion is timed from the status (planning, prefetching, converting); the rates are samples per second
of prefetching + converting, and the ratios compare each mode with `cold` of the same size. The local S3 server
answers in well under a millisecond, unlike S3 across a network, so each size runs twice: as is, and with
`--latencies` (default 0 and 10 ms each way, a 20 ms round trip) added between AIS and S3 for the benchmark's buckets
(a relay on the bridge address that holds each chunk, set as their `extra.aws.endpoint`; undone at the end).

Then the cost of a scheduled refresh check: the very listing a tick does (`runner.scheduled.listing_fingerprint`,
names, sizes and S3 ETags through AIS, fingerprinted while streamed) over 10 k and 100 k objects, in seconds
and per 100 k objects, with the process's memory before and after (flat: nothing is kept per object), with and
without the added latency.

Writes bench/results/s3.json. The conversion buckets are deleted from S3 and AIS at the end; the 100 k listing
bucket (`bench-s3-listing`) is kept and reused.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import Any

import common
from common import Result
from refresh import Resource

NAMESPACE = "bench-s3"
OUT_BUCKET = "bench-s3-out"
LISTING_BUCKET = "bench-s3-listing"
LISTING_SIZES = (10_000, 100_000)
STEPS = ("Planning", "Prefetching", "Converting", "Shuffling", "Verifying")


S3_HOST, S3_PORT = "10.244.0.1", 7070  # hack/cluster.sh's versitygw
PROXY_PORT = 7071


class Latency:
    """`ms` of delay each way between AIS and S3 for the buckets given to `route`: a TCP relay on the bridge
    address (`PROXY_PORT`) that holds every chunk `ms` before passing it on, named as those buckets' S3 endpoint
    (`extra.aws.endpoint`), so only the benchmark's buckets are slowed down. (This kernel has no netem.)"""

    def __init__(self, endpoint: str, ms: int) -> None:
        self.endpoint, self.ms = endpoint, ms
        self.routed: list[str] = []
        self.loop: Any = None

    async def _pipe(self, reader: Any, writer: Any) -> None:
        import asyncio

        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.ms / 1000)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: Any, writer: Any) -> None:
        import asyncio

        up_reader, up_writer = await asyncio.open_connection(S3_HOST, S3_PORT)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def __enter__(self) -> Latency:
        if not self.ms:
            return self
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            assert self.loop is not None
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(self._client, S3_HOST, PROXY_PORT))
            ready.set()
            self.loop.run_forever()
            server.close()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)
        return self

    def route(self, bucket: str) -> None:
        """S3 requests of AIS for `bucket` go through the relay (until the block ends)."""
        if self.ms:
            set_endpoint(self.endpoint, bucket, f"http://{S3_HOST}:{PROXY_PORT}")
            self.routed.append(bucket)

    def __exit__(self, *exc: object) -> None:
        for bucket in self.routed:
            set_endpoint(self.endpoint, bucket, "")
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)


def set_endpoint(endpoint: str, bucket: str, s3: str) -> None:
    import json

    import requests

    body = {"action": "set-bprops", "value": {"extra": {"aws": {"endpoint": s3}}}}
    r = requests.patch(f"{endpoint}/v1/buckets/{bucket}", params={"provider": "aws"}, data=json.dumps(body), timeout=30)
    r.raise_for_status()


def write_dataset(bucket: str, n: int, seed: int) -> int:
    from sds_tools import exampledata
    from sds_tools.s3 import write_s3

    p = exampledata.plan(n, seed=seed)
    complete = len(p.manifest["complete"])
    write_s3(bucket, exampledata.render(p), workers=16)
    return complete


def drop_s3_bucket(endpoint: str, bucket: str) -> None:
    """Every object of `bucket` deleted in S3 and the bucket removed; AIS's copies and its entry evicted."""
    from sds_tools.s3 import client

    s3 = client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents") or []]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)
    try:
        common.sdk(endpoint).bucket(bucket, provider="aws").evict()
    except Exception as e:  # AIS may not know it (a run that stopped early)
        common.log(f"evicting s3://{bucket} from AIS: {e}")


def convert(endpoint: str, label: str, bucket: str, prefetch: bool, workers: int, timeout: float) -> Result:
    resource = Resource(NAMESPACE, f"s3-{label}", STEPS)
    resource.delete()
    common.drop_bucket(endpoint, OUT_BUCKET)
    spec = common.example_spec(bucket, OUT_BUCKET)
    spec["source"] = {"ais": {"bucket": bucket, "provider": "aws", "prefetch": prefetch}}
    spec["output"] = {**spec["output"], "bucket": OUT_BUCKET, "retainPrevious": "0s"}
    spec["conversion"] = {"workers": workers}
    spec.pop("shuffle", None)  # the reads are what is measured: no dSort after them
    common.settle()
    resource.apply(spec)
    try:
        built = resource.build("g1", timeout)
    finally:
        resource.delete()
    stages = built["stages_s"]
    status = built["status"]
    read_s = round(stages.get("prefetching", 0.0) + stages.get("converting", 0.0), 2)
    samples = int(status["samples"]["written"])
    out = {
        "mode": label,
        "samples": samples,
        "stages_s": stages,
        "read_s": read_s,
        "samples_per_s": round(samples / read_s, 1) if read_s else None,
        "to_ready_s": built["to_published_s"],
        "prefetch": status.get("prefetch"),
    }
    common.log(f"{label}: {samples} samples, prefetch+convert {read_s} s ({out['samples_per_s']} samples/s) {stages}")
    return out


def ensure_listing_bucket(n: int) -> None:
    """`n` tiny objects in S3, `00/000000` ... (the first 10,000 under `00/`), written once and reused."""
    from sds_tools.s3 import client, write_s3

    s3 = client()
    count = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LISTING_BUCKET):
            count += len(page.get("Contents") or [])
    except s3.exceptions.NoSuchBucket:
        pass
    if count == n:
        return
    common.log(f"writing {n} objects to s3://{LISTING_BUCKET} (once; kept for later runs)")
    write_s3(LISTING_BUCKET, ((f"{i // 10_000:02d}/{i:06d}", b"x") for i in range(n)), workers=16)


def check_cost(endpoint: str, repeat: int) -> list[Result]:
    from sharded_dataset_operator.clients.ais import Ais
    from sharded_dataset_operator.core.spec import parse_spec
    from sharded_dataset_operator.runner.scheduled import listing_fingerprint

    ensure_listing_bucket(max(LISTING_SIZES))
    ais = Ais(endpoint)
    out = []
    for n in LISTING_SIZES:
        prefix = "00/" if n == 10_000 else ""
        raw = {"source": {"ais": {"bucket": LISTING_BUCKET, "provider": "aws", "prefix": prefix}},
               "samples": {"fields": [{"pattern": "*", "name": "bin"}]},
               "output": {"bucket": "o", "maxSamplesPerShard": 1}, "refresh": {"schedule": "@daily"}}  # fmt: skip
        spec = parse_spec(raw, name="bench", default_endpoint=endpoint)
        times, rss_before = [], common.rss_now_mib()
        objects = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            objects = listing_fingerprint(ais, spec).objects
            times.append(time.perf_counter() - t0)
        best = min(times)
        row = {"objects": objects, "check_s": round(best, 2), "per_100k_objects_s": round(best * 100_000 / objects, 2),
               "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(common.rss_now_mib(), 1)}  # fmt: skip
        common.log(f"scheduled check over {objects} objects: {row['check_s']} s ({row['per_100k_objects_s']} s/100k)")
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,4000", help="samples per dataset, comma-separated (default 1000,4000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="listings per check size (the best counts)")
    ap.add_argument("--latencies", default="0,10", help="ms of delay each way to S3, one pass each (default 0,10)")
    ap.add_argument("--skip-check", action="store_true", help="no scheduled-check cost (no 100k-object bucket)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    endpoint = common.ais_endpoint(ap, "bench-s3")
    if not os.environ.get("S3_ENDPOINT"):
        ap.error('S3_ENDPOINT is not set: eval "$(hack/cluster.sh env)" (make bench-s3 does this)')
    started = time.time()
    res: Result = {"host_cpus": os.cpu_count(), "workers": args.workers, "sizes": []}
    run = uuid.uuid4().hex[:6]
    latencies = [int(x) for x in args.latencies.split(",")]
    for latency in latencies:
        for n in (int(x) for x in args.sizes.split(",")):
            first, second = f"bench-s3-{n}-{latency}-{run}-a", f"bench-s3-{n}-{latency}-{run}-b"
            try:
                common.log(f"{n} samples, {latency} ms added each way: writing two copies to S3")
                write_dataset(first, n, seed=7)
                write_dataset(second, n, seed=7)
                modes = [("cold", first, False), ("prefetched", second, True), ("warm", first, False),
                         ("warm-prefetched", first, True)]  # fmt: skip
                with Latency(endpoint, latency) as slow:
                    slow.route(first)
                    slow.route(second)
                    runs = [convert(endpoint, label, b, pf, args.workers, args.timeout) for label, b, pf in modes]
            finally:
                for b in (first, second):
                    drop_s3_bucket(endpoint, b)
            cold = runs[0]["read_s"]
            ratios = {r["mode"]: round(cold / r["read_s"], 2) if r["read_s"] else None for r in runs}
            res["sizes"].append({"samples": n, "latency_ms_each_way": latency, "runs": runs, "speed_vs_cold": ratios})
            common.log(f"{n} samples, {latency} ms: speed relative to cold {ratios}")
    if not args.skip_check:
        res["scheduled_check"] = []
        for latency in latencies:
            with Latency(endpoint, latency) as slow:
                slow.route(LISTING_BUCKET)
                rows = check_cost(endpoint, args.repeat)
            res["scheduled_check"] += [{**row, "latency_ms_each_way": latency} for row in rows]
    res["wall_s"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / "s3.json", res)
    common.log(f"wrote {args.out / 's3.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
