"""Benchmark scenario 2 (bench/run.py, see bench/README.md): upper bounds of plain AIS traffic.

With N processes, each taking a contiguous slice: the raw files PUT as plain objects (16 threads per process),
the same bytes PUT as shard-sized objects one at a time, and the source read one direct GET per object.

Imports only the standard library at top level (the children are spawned; see bench/common.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

from common import Result, cpu_now, log, rate, run_children, sdk

UPPER_BUCKET = "bench-upper"
IO_THREADS = 16  # per process in the upper-bound runs (the v0.1 converter read with 16 threads)


def contiguous(items: Sequence[Any], parts: int, index: int) -> Sequence[Any]:
    n = len(items)
    return items[n * index // parts : n * (index + 1) // parts]


def _child_put(
    endpoint: str, bucket: str, n_samples: int, workers: int, index: int, blob: int, go: Any, q: Any
) -> None:
    """PUT this process's contiguous slice of the raw files: as the raw objects (16 threads) when blob == 0,
    else concatenated into blob-sized objects PUT one at a time (the converter's shard upload pattern)."""
    from sds_tools import exampledata
    from sharded_dataset_operator.clients.ais import Ais

    ais = Ais(endpoint, attempts=5, pool=32)
    plan = exampledata.plan(n_samples)
    count = plan.manifest["files"]
    files = list(islice(exampledata.render(plan), count * index // workers, count * (index + 1) // workers))
    items: list[tuple[str, bytes]]
    if blob:
        items, chunk, size = [], [], 0
        for _, data in files:
            chunk.append(data)
            size += len(data)
            if size >= blob:
                items.append((f"blob-w{index}-{len(items):05d}", b"".join(chunk)))
                chunk, size = [], 0
        if chunk:
            items.append((f"blob-w{index}-{len(items):05d}", b"".join(chunk)))
        files = []
    else:
        items = [(f"raw/{name}", data) for name, data in files]
    total = sum(len(d) for _, d in items)
    q.put(("ready", index))
    go.wait()
    t0, c0 = time.time(), cpu_now()
    if blob:
        for name, data in items:
            ais.put(bucket, name, data)
    else:
        with ThreadPoolExecutor(IO_THREADS) as pool:
            list(pool.map(lambda it: ais.put(bucket, it[0], it[1]), items))
    t1 = time.time()
    q.put(("done", index, {"t0": t0, "t1": t1, "cpu_s": cpu_now() - c0, "bytes": total, "objects": len(items)}))


def _child_get(endpoint: str, bucket: str, names: list[str], index: int, go: Any, q: Any) -> None:
    """GET every named object with 16 threads, one direct GET per object (the converter's v0.1 read path,
    `reads.mode: object`), i.e. fetching without the tar building and the uploads."""
    from sharded_dataset_operator.clients.ais import Ais

    ais = Ais(endpoint, attempts=5, pool=32)
    q.put(("ready", index))
    go.wait()
    t0, c0 = time.time(), cpu_now()
    with ThreadPoolExecutor(IO_THREADS) as pool:
        total = sum(len(d or b"") for d in pool.map(lambda n: ais.get(bucket, n, "ais", direct=True), names))
    t1 = time.time()
    q.put(("done", index, {"t0": t0, "t1": t1, "cpu_s": cpu_now() - c0, "bytes": total, "objects": len(names)}))


def measure_put(endpoint: str, n: int, workers: int, blob: int) -> Result:
    # bench-upper is not emptied between runs (the same names are overwritten): destroying a bucket of ~15k
    # objects makes AIS delete files in the background, which would slow the next measurement
    sdk(endpoint).bucket(UPPER_BUCKET).create(exist_ok=True)
    wall, rs, ais_cpu = run_children(
        _child_put, [(endpoint, UPPER_BUCKET, n, workers, i, blob) for i in range(workers)]
    )
    out = {
        **rate(rs, wall, ais_cpu),
        "objects": sum(r["objects"] for r in rs),
        "threads_per_process": 1 if blob else IO_THREADS,
    }
    log(f"PUT {'shard-sized blobs' if blob else 'raw objects'} x{workers}: {out['mib_per_s']} MiB/s")
    return out


def measure_get(endpoint: str, raw: str, workers: int) -> Result:
    names = sorted(e.name for e in sdk(endpoint).bucket(raw).list_objects_iter(props="name"))
    args = [(endpoint, raw, list(contiguous(names, workers, i)), i) for i in range(workers)]
    wall, rs, ais_cpu = run_children(_child_get, args)
    out = {**rate(rs, wall, ais_cpu), "objects": sum(r["objects"] for r in rs), "threads_per_process": IO_THREADS}
    log(f"GET x{workers}: {out['mib_per_s']} MiB/s")
    return out
