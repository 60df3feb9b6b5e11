"""Peers benchmark (`make bench-peers`, see bench/README.md): the same ImageNet-shaped dataset, one run, the
tools a user would weigh against this operator, each with 2 workers/processes where it has them.

The raw dataset is bench/imagenet.py's `ais://bench-imagenet-<shrink>` (default 1/16 of ImageNet-1k's counts:
82,840 images in 1,000 class folders; `--quick`: 1/64), and the same files on local disk for tools that read
files. Every tool writes ~64 MiB shards of the samples `{jpg: the file, cls: the class index}`:

- `script`: one process with the seed's method (list, GET each file in order, `webdataset.ShardWriter` to a
  temp dir, PUT each finished shard);
- `operator`: a ShardedDataset (examples/10-imagefolder.yaml, 2 converter workers) without its shuffle:
  apply -> Ready is planning, conversion, verification and publishing (the part comparable with the others);
  `operator-shuffled`: the example as it is, with dSort;
- `litdata`: LitData's `optimize` (2 workers) from the local files to local disk, in its own chunk format;
  `litdata-s3`: the same to the local cluster's S3 server (versitygw, as `s3://` with its endpoint; LitData's
  uploader is told to accept its plain-http address, see `litdata_allow_http`);
- `ais-archive`: what AIS's ishard does, server side: the listed objects cut into ~64 MiB groups in name
  order, one AIS archive (multi-object `archive`) job per group, then the destination listed until every
  shard is there (as ishard waits): the same AIS calls through the SDK;
- `ishard`: AIS's ishard itself, when its binary is given (`--ishard PATH`; its Go module is not served by the
  Go module proxy here, see bench/README.md), with the options closest to ours: `-shard_size=64MiB`,
  `-collapse` (class folders merged up to the shard size instead of a shard per folder),
  `-sample_key_pattern=base_file_name`. Its command line has no endpoint option: it speaks to
  `http://127.0.0.1:8080`, which this benchmark relays to the AIS proxy for the run (`loopback_relay`).

Per tool: samples/s, MiB/s of output, host CPU-seconds per 1,000 samples (every process on the machine, AIS
included, minus the idle rate measured just before), peak memory of the tool's own processes (sum of RSS over
its process tree, PSS, sampled every 0.5 s), output shard sizes against the target, and what the output is (whether
`webdataset` reads it as the layout's samples). Ratios to the operator's (unshuffled) apply -> Ready.
Writes bench/results/peers.json and peers.png. Needs the `hack/cluster.sh env` environment and the bench
extra (litdata).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common  # bench/common.py: AIS helpers, result writing
import imagenet  # bench/imagenet.py: the dataset buckets and the ShardedDataset run
from common import Result

SHARD_BYTES = 64 * common.MIB
LOCAL_ROOT = Path("/var/tmp/sds-bench-peers")
SCRIPT_BUCKET = "bench-peers-script"
ARCHIVE_BUCKET = "bench-peers-archive"
ISHARD_BUCKET = "bench-peers-ishard"
ISHARD_ADDRESS = ("127.0.0.1", 8080)  # where ishard's command line looks for AIS (not configurable there)


def host_busy_s() -> float:
    """CPU seconds every core of this host has spent busy so far (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def idle_rate(seconds: float = 10.0) -> float:
    """Busy CPU-seconds per second of the host while nothing is measured (Kubernetes, AIS at rest)."""
    b0, t0 = host_busy_s(), time.time()
    time.sleep(seconds)
    return (host_busy_s() - b0) / (time.time() - t0)


def descendants_of(pid: int) -> Callable[[Any], bool]:
    import psutil  # type: ignore[import-untyped,unused-ignore]

    def pick(p: Any) -> bool:
        if p.pid == pid:
            return True
        with contextlib.suppress(psutil.Error):
            return any(a.pid == pid for a in p.parents())
        return False

    return pick


def measured(run: Callable[[], Result], pick: Callable[[Any], bool], idle: float) -> Result:
    """Run `run` with the host's CPU and the picked processes' memory measured around it."""
    with common.PeakSampler(common.summed_pss(pick)) as mem:
        b0, t0 = host_busy_s(), time.time()
        out = run()
    wall = out.get("wall_s") or (time.time() - t0)
    cpu = host_busy_s() - b0 - idle * (time.time() - t0)
    samples = int(out["samples"])
    return {
        **out,
        "wall_s": round(wall, 2),
        "samples_per_s": round(samples / wall, 1),
        "mib_per_s": round(out["bytes"] / common.MIB / wall, 1),
        "host_cpu_s": round(cpu, 1),
        "cpu_s_per_1k_samples": round(cpu * 1000 / max(1, samples), 2),
        "peak_rss_mib": mem.result().get("pss") or out.get("peak_rss_mib"),
    }


def sizes(values: list[int], target: int) -> Result:
    """Shard sizes against `target`, the last (partial) shard left out."""
    full = sorted(values)[:-1] if len(values) > 1 else values
    if not full:
        return {"shards": len(values)}
    return {
        "shards": len(values),
        "min_ratio": round(min(full) / target, 3),
        "median_ratio": round(statistics.median(full) / target, 3),
        "max_ratio": round(max(full) / target, 3),
        "within_5pct": round(sum(abs(v / target - 1) <= 0.05 for v in full) / len(full), 3),
    }


def class_index(names: list[str]) -> dict[str, int]:
    return {c: i for i, c in enumerate(sorted({n.split("/")[1] for n in names}))}


# ------------------------------------------------------------------------------------------------ the tools


def script_child(endpoint: str, src: str, dst: str, go: Any, q: Any) -> None:
    """The seed's method on the class-folder layout: one process, sequential GETs, ShardWriter, PUT per shard."""
    import webdataset as wds
    from aistore.sdk import Client

    client = Client(endpoint)
    src_b, dst_b = client.bucket(src), client.bucket(dst)
    tmp = tempfile.mkdtemp(prefix="bench-peers-script-")
    q.put(("ready", 0))
    go.wait()
    t0 = time.time()
    names = sorted(e.name for e in src_b.list_objects_iter(props="name") if e.name.endswith(".JPEG"))
    classes = class_index(names)
    shard_sizes: list[int] = []

    def upload(path: str) -> None:
        shard_sizes.append(os.path.getsize(path))
        dst_b.object(os.path.basename(path)).get_writer().put_file(path)
        os.unlink(path)

    written = 0
    with wds.ShardWriter(f"{tmp}/script-%06d.tar", maxsize=SHARD_BYTES, maxcount=10**9, post=upload, verbose=0) as w:
        for name in names:
            data = src_b.object(name).get_reader().read_all()
            key = name.rsplit("/", 1)[1].removesuffix(".JPEG")
            w.write({"__key__": key, "jpg": data, "cls": classes[name.split("/")[1]]})
            written += 1
    shutil.rmtree(tmp, ignore_errors=True)
    q.put(("done", 0, {"t1": time.time(), "t0": t0, "samples": written, "bytes": sum(shard_sizes),
                       "shard_sizes": shard_sizes, "cpu_s": 0.0}))  # fmt: skip


def run_script(endpoint: str, src: str) -> Result:
    common.fresh_bucket(endpoint, SCRIPT_BUCKET)
    pids: list[int] = []
    box: dict[str, Any] = {}

    def go() -> Result:
        wall, (r,), _ = common.run_children(script_child, [(endpoint, src, SCRIPT_BUCKET)], before_go=pids.extend)
        box.update(r)
        return {"wall_s": wall, "samples": r["samples"], "bytes": r["bytes"]}

    out = measured(go, lambda p: p.pid in pids, IDLE[0])
    out["shards"] = sizes(box["shard_sizes"], SHARD_BYTES)
    out["output"] = "WebDataset tars (jpg, cls), keys = file names"
    out["valid_webdataset"] = first_shard_ok(endpoint, SCRIPT_BUCKET)
    common.drop_bucket(endpoint, SCRIPT_BUCKET)
    return out


def first_shard_ok(endpoint: str, bucket: str, members: tuple[str, ...] = ("jpg", "cls")) -> bool:
    """Whether webdataset reads the first shard of `bucket` as samples with exactly `members`."""
    import io

    import webdataset as wds

    from sharded_dataset_operator.clients.ais import Ais

    ais = Ais(endpoint)
    first = next((e.name for e in ais.list_objects(bucket, "ais", "") if e.name.endswith(".tar")), None)
    if first is None:
        return False
    data = ais.get(bucket, first) or b""
    samples = list(wds.tariterators.tar_file_expander([{"stream": io.BytesIO(data), "url": first}]))
    grouped = list(wds.tariterators.group_by_keys(iter(samples)))
    return bool(grouped) and all(set(s) - {"__key__", "__url__"} == set(members) for s in grouped)


def run_operator(endpoint: str, shrink: int, shuffle: bool) -> Result:
    """apply -> Ready of a ShardedDataset; without a shuffle that is planning, conversion, verification and
    publishing: the part comparable with the other tools."""

    def go() -> Result:
        r = imagenet.run_size(endpoint, shrink, 2, 4 * 3600, False, shuffle)
        return {**r, "wall_s": r["apply_to_ready_s"], "bytes": r["bytes_gib"]["output_bucket"] * 2**30}

    role_markers = tuple(imagenet.PEAK_ROLES.values())
    out = measured(go, lambda p: any(m in " ".join(p.cmdline()) for m in role_markers), IDLE[0])
    keep = ("wall_s", "samples", "samples_per_s", "mib_per_s", "host_cpu_s", "cpu_s_per_1k_samples", "peak_rss_mib",
            "stages_s", "dsort_s", "operator_overhead_pct")  # fmt: skip
    res = {k: out[k] for k in keep}
    res["shards"] = out["converted_shards"]["without_last_of_each_split"]
    if shuffle:
        res["output_shards"] = out["output_shards"]["without_last_of_each_series"]
        res["output"] = "WebDataset tars (jpg, cls) per split, shuffled by dSort, verified; wids indexes"
    else:
        res["output"] = "WebDataset tars (jpg, cls) per split, verified; wids indexes"
    res["valid_webdataset"] = True
    return res


def local_copy(shrink: int) -> tuple[Path, list[tuple[str, int]]]:
    """The dataset's files on local disk (written once), and (path, class index) of every image."""
    from sds_tools import layouts

    root = LOCAL_ROOT / f"imagenet-{shrink}"
    counts = layouts.imagefolder_counts(full=True, shrink=shrink)
    done = root / ".complete"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        layouts.write_layout_dir("imagefolder", root, full=True, shrink=shrink)
        done.write_text(json.dumps(counts))
    rels = sorted(str(p.relative_to(root)) for p in root.glob("*/*/*.JPEG"))
    classes = class_index(rels)
    return root, [(str(root / r), classes[r.split("/")[1]]) for r in rels]


def litdata_sample(item: tuple[str, int]) -> dict[str, Any]:
    path, cls = item
    with open(path, "rb") as f:
        return {"jpg": f.read(), "cls": cls}


LITDATA_S3_BUCKET = "bench-peers-litdata"


def s3_options() -> dict[str, Any]:
    """The local cluster's S3 server (versitygw) as LitData's and boto3's storage options (`cluster.sh env`)."""
    return {"endpoint_url": os.environ["S3_ENDPOINT"], "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "region_name": os.environ.get("AWS_REGION", "us-east-1")}  # fmt: skip


def s3_chunks(prefix: str, delete: bool = False) -> list[int]:
    """Sizes of LitData's `.bin` chunks under s3://LITDATA_S3_BUCKET/prefix (deleted after, with `delete`)."""
    import boto3

    s3 = boto3.client("s3", **s3_options())
    objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LITDATA_S3_BUCKET, Prefix=prefix)
               for o in page.get("Contents", [])]  # fmt: skip
    for o in objects if delete else []:
        s3.delete_object(Bucket=LITDATA_S3_BUCKET, Key=o["Key"])
    return [int(o["Size"]) for o in objects if str(o["Key"]).endswith(".bin")]


LITDATA_HTTP_ENV = "SDS_BENCH_LITDATA_ALLOW_HTTP"


def litdata_allow_http() -> None:
    """Let LitData's obstore uploads use the local plain-http S3 server. LitData 0.2.76 builds its obstore S3
    store with fixed `client_options` (timeouts, pool sizes), and passing any `client_options` makes obstore ignore
    `AWS_ALLOW_HTTP`; no storage option reaches them, so `allow_http` is added to LitData's own (private) dict."""
    import litdata.streaming.downloader as downloader  # type: ignore[import-untyped,unused-ignore]

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = True


if os.environ.get(LITDATA_HTTP_ENV):  # LitData's workers are spawned and import this module again
    litdata_allow_http()


def litdata_child(items: list[tuple[str, int]], out_dir: str, go: Any, q: Any) -> None:
    s3 = out_dir.startswith("s3://")
    if s3:  # the local S3 server is plain http (see litdata_allow_http); inherited by LitData's workers
        os.environ[LITDATA_HTTP_ENV] = "1"
        litdata_allow_http()
    import litdata  # type: ignore[import-untyped,unused-ignore]

    q.put(("ready", 0))
    go.wait()
    t0 = time.time()
    litdata.optimize(fn=litdata_sample, inputs=items, output_dir=out_dir, chunk_bytes="64MB", num_workers=2,
                     mode="overwrite", storage_options=s3_options() if s3 else {})  # fmt: skip
    t1 = time.time()
    local = [p.stat().st_size for p in Path(out_dir).glob("*.bin")] if not s3 else []
    chunks = s3_chunks(out_dir.split("/", 3)[3]) if s3 else local
    q.put(("done", 0, {"t0": t0, "t1": t1, "samples": len(items), "bytes": sum(chunks),
                       "chunk_sizes": chunks, "cpu_s": 0.0}))  # fmt: skip


def run_litdata(shrink: int, s3: bool = False) -> Result:
    """LitData `optimize` from the local files to local disk, or (`s3`) to the local cluster's S3 server."""
    import litdata  # type: ignore[import-untyped,unused-ignore]

    _, items = local_copy(shrink)
    prefix = f"imagenet-{shrink}"
    if s3:
        import boto3

        client = boto3.client("s3", **s3_options())
        with contextlib.suppress(Exception):  # it exists from an earlier run
            client.create_bucket(Bucket=LITDATA_S3_BUCKET)
        s3_chunks(prefix, delete=True)
    out_dir = f"s3://{LITDATA_S3_BUCKET}/{prefix}" if s3 else tempfile.mkdtemp(prefix="bench-peers-litdata-",
                                                                            dir="/var/tmp")  # fmt: skip
    pids: list[int] = []
    box: dict[str, Any] = {}

    def go() -> Result:
        wall, (r,), _ = common.run_children(litdata_child, [(items, out_dir)], before_go=pids.extend)
        box.update(r)
        return {"wall_s": wall, "samples": r["samples"], "bytes": r["bytes"]}

    try:
        out = measured(go, lambda p: p.pid in pids or any(descendants_of(pid)(p) for pid in pids), IDLE[0])
        out["shards"] = sizes(box["chunk_sizes"], 64_000_000)
        out["shards"]["target"] = "chunk_bytes 64MB (10^6)"
    finally:
        if s3:
            s3_chunks(prefix, delete=True)
        else:
            shutil.rmtree(out_dir, ignore_errors=True)
    out["version"] = litdata.__version__
    where = "the local cluster's S3 server (versitygw)" if s3 else "local disk"
    out["output"] = f"LitData chunks (.bin + index.json), {where}; not WebDataset"
    out["valid_webdataset"] = False
    return out


def run_archive(endpoint: str, src: str) -> Result:
    """ishard's server-side path: ~64 MiB groups of objects in name order, one AIS archive job each."""
    client = common.sdk(endpoint)
    common.fresh_bucket(endpoint, ARCHIVE_BUCKET)

    def go() -> Result:
        t0 = time.time()
        groups: list[list[str]] = [[]]
        size = 0
        for e in sorted(client.bucket(src).list_objects_iter(props="name,size"), key=lambda e: e.name):
            if not e.name.endswith(".JPEG"):
                continue
            if size and size + e.size > SHARD_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(e.name)
            size += e.size + 1024  # a member's tar header and padding
        dst = client.bucket(ARCHIVE_BUCKET)
        for i, g in enumerate(groups):
            client.bucket(src).objects(obj_names=g).archive(archive_name=f"shard-{i:06d}.tar", to_bck=dst)
        # as ishard does: poll the destination's listing until every shard is there (an archive job itself
        # stays listed as running for a while after its last shard is written)
        while True:
            out_sizes = [e.size for e in dst.list_objects_iter(props="name,size")]
            if len(out_sizes) >= len(groups) or time.time() - t0 > 3600:
                break
            time.sleep(0.2)
        wall = time.time() - t0
        return {"wall_s": wall, "samples": sum(len(g) for g in groups), "bytes": sum(out_sizes),
                "out_sizes": out_sizes, "jobs": len(groups)}  # fmt: skip

    out = measured(go, lambda p: p.pid == os.getpid(), IDLE[0])
    out["shards"] = sizes(out.pop("out_sizes"), SHARD_BYTES)
    out["peak_rss_mib"] = None  # the work runs inside AIS; this process only lists and waits
    out["output"] = "tars of the source objects under their full names (train/<class>/<file>.JPEG), no cls member"
    out["valid_webdataset"] = first_shard_ok(endpoint, ARCHIVE_BUCKET, ("JPEG",))
    common.drop_bucket(endpoint, ARCHIVE_BUCKET)
    return out


@contextlib.contextmanager
def loopback_relay(listen: tuple[str, int], endpoint: str) -> Any:
    """Relay TCP connections to `listen` (loopback) to the AIS proxy of `endpoint`, in a thread."""
    import socket
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    target = (url.hostname or "127.0.0.1", url.port or 80)
    server = socket.create_server(listen, reuse_port=False)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(1 << 16):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target)
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()


def run_ishard(endpoint: str, src: str, binary: str) -> Result:
    """AIS's ishard, as its README runs ImageNet-shaped class folders, with the shard size and keys of ours."""
    import subprocess

    client = common.sdk(endpoint)
    common.fresh_bucket(endpoint, ISHARD_BUCKET)
    images = sum(1 for e in client.bucket(src).list_objects_iter(props="name") if e.name.endswith(".JPEG"))

    def go() -> Result:
        command = [
            binary,
            f"-src_bck=ais://{src}",
            f"-dst_bck=ais://{ISHARD_BUCKET}",
            "-shard_size=64MiB",
            "-collapse",
            "-sample_key_pattern=base_file_name",
        ]
        t0 = time.time()
        with loopback_relay(ISHARD_ADDRESS, endpoint):
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        wall = time.time() - t0
        if done.returncode:
            raise RuntimeError(f"ishard exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}")
        out_sizes = [e.size for e in client.bucket(ISHARD_BUCKET).list_objects_iter(props="name,size")]
        return {"wall_s": wall, "samples": images, "bytes": sum(out_sizes), "out_sizes": out_sizes,
                "command": " ".join(command[1:]), "log_tail": (done.stdout + done.stderr)[-600:]}  # fmt: skip

    out = measured(go, lambda p: p.name() == os.path.basename(binary), IDLE[0])
    out["shards"] = sizes(out.pop("out_sizes"), SHARD_BYTES)
    out["output"] = "tars of the source objects under their full names (train/<class>/<file>.JPEG), no cls member"
    out["valid_webdataset"] = first_shard_ok(endpoint, ISHARD_BUCKET, ("JPEG",))
    common.drop_bucket(endpoint, ISHARD_BUCKET)
    return out


IDLE = [0.0]


def chart(res: Result, path: Path) -> None:
    """Samples/s, CPU-seconds per 1,000 samples and peak memory per tool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = list(res["tools"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, title in zip(
        axes,
        ("samples_per_s", "cpu_s_per_1k_samples", "peak_rss_mib"),
        ("samples/s", "host CPU-s per 1,000 samples", "peak memory (MiB, PSS)"),
        strict=True,
    ):
        ax.bar(tools, [res["tools"][t].get(key) or 0 for t in tools], color="#4c72b0")
        ax.set(title=title)
        ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"{res['images']} ImageNet-shaped images (1/{res['shrink']}), 2 workers each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1/64 of ImageNet-1k's counts (20,734 images)")
    ap.add_argument("--shrink", type=int, help="divisor of ImageNet-1k's counts (default 16)")
    ap.add_argument("--tools", default="script,operator,operator-shuffled,litdata,litdata-s3,ais-archive")
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    ap.add_argument("--ishard", help="an ishard binary (built with -tags dsort): adds the `ishard` tool")
    args = ap.parse_args(argv)
    endpoint = common.ais_endpoint(ap, "bench-peers")
    shrink = args.shrink or (64 if args.quick else 16)
    started = time.time()
    src, counts, _ = imagenet.ensure_imagenet(endpoint, shrink)
    local_copy(shrink)
    common.settle()
    IDLE[0] = idle_rate()
    res: Result = {"host_cpus": os.cpu_count(), "shrink": shrink, "images": counts["train"] + counts["val"],
                   "idle_cpu_per_s": round(IDLE[0], 3), "tools": {}}  # fmt: skip
    runners: dict[str, Callable[[], Result]] = {
        "script": lambda: run_script(endpoint, src),
        "operator": lambda: run_operator(endpoint, shrink, False),
        "operator-shuffled": lambda: run_operator(endpoint, shrink, True),
        "litdata": lambda: run_litdata(shrink),
        "litdata-s3": lambda: run_litdata(shrink, s3=True),
        "ais-archive": lambda: run_archive(endpoint, src),
        "ishard": lambda: run_ishard(endpoint, src, str(args.ishard)),
    }
    tools = args.tools.split(",") + (["ishard"] if args.ishard and "ishard" not in args.tools else [])
    args.out.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        common.settle()
        r = runners[tool]()
        res["tools"][tool] = r
        common.write_json(args.out / "peers.json", res)  # what is measured so far
        common.log(f"{tool}: {r['samples']} samples in {r['wall_s']} s, {r['samples_per_s']} samples/s, "
                   f"{r['cpu_s_per_1k_samples']} CPU-s/1k, peak {r['peak_rss_mib']} MiB")  # fmt: skip
    ours = res["tools"].get("operator")
    if ours:
        res["ratios_to_operator"] = {
            tool: {
                "samples_per_s": round(r["samples_per_s"] / ours["samples_per_s"], 2),
                "cpu_s_per_1k_samples": round(r["cpu_s_per_1k_samples"] / ours["cpu_s_per_1k_samples"], 2),
            }
            for tool, r in res["tools"].items()
        }
    res["bench_wall_s"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / "peers.json", res)
    chart(res, args.out / "peers.png")
    print(json.dumps(res.get("ratios_to_operator"), indent=1))
    print(f"results: {args.out / 'peers.json'}, {args.out / 'peers.png'}; wall {res['bench_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
