"""Benchmark scenario 1 (bench/run.py, see bench/README.md): the original 2023 pipeline, as the baseline.

One process, as in the AIS blog post that sharded this dataset: list the bucket, read `annotations/list.txt`,
enumerate the sorted `images/*.jpg`, look up the trimap and the class, skip incomplete samples, GET image and
trimap sequentially, write them with `webdataset.ShardWriter` to a temp dir and upload each finished shard.

Imports only the standard library at top level (the child is spawned; see bench/common.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from common import Result, cpu_now, drop_bucket, fresh_bucket, log, rate, rss_peak_mib, run_children

BASELINE_BUCKET = "bench-baseline"
BASELINE_MAXCOUNT = 400


def _child_baseline(endpoint: str, src: str, dst: str, go: Any, q: Any) -> None:
    """The 2023 pipeline: enumerate sorted images, look up trimap and class, ShardWriter + post-upload."""
    import webdataset as wds
    from aistore.sdk import Client

    client = Client(endpoint)
    src_b, dst_b = client.bucket(src), client.bucket(dst)
    tmp = tempfile.mkdtemp(prefix="bench-baseline-")
    q.put(("ready", 0))
    go.wait()
    t0, c0 = time.time(), cpu_now()
    names = {e.name for e in src_b.list_objects_iter(props="name,size")}
    classes: dict[str, str] = {}
    for line in src_b.object("annotations/list.txt").get_reader().read_all().decode().splitlines():
        if line and not line.startswith("#"):
            parts = line.split()
            classes[parts[0]] = parts[1]
    images = sorted(n for n in names if n.startswith("images/") and n.endswith(".jpg") and "/._" not in n)
    shard_bytes = 0
    shards = 0

    def upload(path: str) -> None:
        nonlocal shard_bytes, shards
        shard_bytes += os.path.getsize(path)
        shards += 1
        dst_b.object(os.path.basename(path)).get_writer().put_file(path)
        os.unlink(path)

    written = skipped = 0
    with wds.ShardWriter(f"{tmp}/baseline-%02d.tar", maxcount=BASELINE_MAXCOUNT, post=upload, verbose=0) as sink:
        for image_name in images:
            key = image_name[len("images/") : -len(".jpg")]
            trimap_name = f"annotations/trimaps/{key}.png"
            if trimap_name not in names or key not in classes:
                skipped += 1
                continue
            image = src_b.object(image_name).get_reader().read_all()
            trimap = src_b.object(trimap_name).get_reader().read_all()
            if not image or not trimap:
                skipped += 1
                continue
            sink.write({"__key__": key, "image.jpg": image, "trimap.png": trimap, "cls": classes[key]})
            written += 1
    t1 = time.time()
    shutil.rmtree(tmp, ignore_errors=True)
    q.put(
        (
            "done",
            0,
            {
                "t0": t0,
                "t1": t1,
                "cpu_s": cpu_now() - c0,
                "samples": written,
                "skipped": skipped,
                "bytes": shard_bytes,
                "shards": shards,
                "peak_rss_mib": rss_peak_mib(),
            },
        )
    )


def measure_baseline(endpoint: str, raw: str) -> Result:
    fresh_bucket(endpoint, BASELINE_BUCKET)
    wall, (r,), ais_cpu = run_children(_child_baseline, [(endpoint, raw, BASELINE_BUCKET)])
    drop_bucket(endpoint, BASELINE_BUCKET)
    out = {
        **rate([r], wall, ais_cpu),
        "shards": r["shards"],
        "skipped": r["skipped"],
        "peak_rss_mib": round(r["peak_rss_mib"], 1),
    }
    log(f"baseline: {out['samples_per_s']} samples/s, {out['mib_per_s']} MiB/s, {wall:.1f} s")
    return out
