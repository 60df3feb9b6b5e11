"""Shared parts of the benchmarks (bench/run.py, scale.py, refresh.py, etl.py; see bench/README.md).

Constants, logging, the process harness (`run_children`: spawned children released together), CPU and memory
readings, AIS helpers, the example dataset and spec, the ShardedDataset client bits and result writing.

Benchmark children are started with the `spawn` method, so this module (like every bench module) imports only
the standard library at top level: a converter child then holds what a converter pod holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
EXAMPLE = REPO / "examples" / "01-oxford-pets.yaml"
MIB = 1024 * 1024

FULL_SAMPLES = 7390
DEFAULT_RAW_BUCKET = "bench-pets-raw"
SMALL_BUCKET = "bench-pets-small"
CONV_BUCKET = "bench-conv"
NAMESPACE = "bench"
OPERATOR_MODULE = "sharded_dataset_operator.main"
GROUP, VERSION, PLURAL = "shardeddataset.dev", "v1alpha1", "shardeddatasets"

MAX_SAMPLES_PER_SHARD = 400
MAX_SHARD_BYTES = 100 * MIB
POLL_S = 0.2

Result = dict[str, Any]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ais_endpoint(ap: argparse.ArgumentParser, make_target: str) -> str:
    """AIS_ENDPOINT from the environment; a usage error naming the make target that sets it when it is unset."""
    endpoint = os.environ.get("AIS_ENDPOINT", "").rstrip("/")
    if not endpoint:
        ap.error(f'AIS_ENDPOINT is not set: eval "$(hack/cluster.sh env)" (make {make_target} does this)')
    return endpoint


def write_json(path: Path, data: Any) -> None:
    """A result file: indented JSON and a final newline."""
    path.write_text(json.dumps(data, indent=1) + "\n")


# ============================================================================================ this process


def rss_peak_mib() -> float:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it excludes the pre-exec image of a spawn)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_now() -> float:
    """User + system CPU seconds of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def rss_now_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ============================================================================================ child processes
# Each child: set up (untimed), put ("ready", index) on the queue, wait for the start event, do the work,
# put ("done", index, result). The parent times from setting the event to the last child's end.


def timed_child(index: int, go: Any, q: Any, work: Callable[[], Result]) -> None:
    """Report ready, wait for the common start, run `work`, report its result with time, CPU and memory."""
    rss_ready = rss_now_mib()
    q.put(("ready", index))
    go.wait()
    t0, c0 = time.time(), cpu_now()
    result = work()
    t1 = time.time()
    q.put(("done", index, {"t0": t0, "t1": t1, "cpu_s": cpu_now() - c0, **result, "peak_rss_mib": rss_peak_mib(),
                           "rss_before_mib": rss_ready}))  # fmt: skip


def settle() -> None:
    """Before a measured stage: empty AIS's trash, then flush dirty pages (the previous stage wrote ~1 GiB into
    AIS) so that its writeback does not slow the next."""
    endpoint = os.environ.get("AIS_ENDPOINT", "").rstrip("/")
    if endpoint:
        empty_trash(endpoint)
    os.sync()
    time.sleep(1.0)


@contextlib.contextmanager
def high_watermark(endpoint: str, percent: int | None) -> Iterator[None]:
    """AIS's `space.highwm` at `percent` for a while (None: as configured), restored on exit. On a shared disk
    the other tenants' bytes count against the watermark too (see `empty_trash`)."""
    import requests

    if percent is None:
        yield
        return
    before = requests.get(f"{endpoint}/v1/cluster", params={"what": "cluster_config"}, timeout=10).json()["space"]
    requests.put(f"{endpoint}/v1/cluster/set-config", params={"space.highwm": percent}, timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.put(f"{endpoint}/v1/cluster/set-config", params={"space.highwm": int(before["highwm"])},
                     timeout=10).raise_for_status()  # fmt: skip


def empty_trash(endpoint: str) -> None:
    """Run AIS's store cleanup, which empties the trash (a destroyed bucket only moves to `.$deleted`).

    Capacity is the host filesystem's: a dropped bucket's bytes count against the watermarks until AIS cleans up
    by itself. In a 1.28 M-sample run on a shared disk, 8 GiB of trash were part of the space whose lack made
    dSort refuse every attempt (above `space.highwm`, 90 %).
    The cleanup walks every object (15 s at 2.5 M objects); it runs before the clock starts.
    """
    client = sdk(endpoint)
    client.job(client.job(job_kind="cleanup-store").start()).wait(timeout=900)


def run_children(
    target: Callable[..., None], arg_sets: list[tuple[Any, ...]], before_go: Callable[[list[int]], None] | None = None
) -> tuple[float, list[Result], float]:
    """Start one spawned process per arg tuple (target(*args, go, q)), release them together, wait.

    Returns the wall time from release to the last child's end, the children's results by index, and the CPU
    seconds the AIS nodes (aisnode processes on this host) used meanwhile.
    """
    ctx = mp.get_context("spawn")
    go, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, go, q)) for args in arg_sets]
    for p in procs:
        p.start()
    ready = 0
    results: dict[int, Result] = {}
    try:
        while ready < len(procs):
            msg = q.get(timeout=600)
            ready += msg[0] == "ready"
        settle()
        if before_go is not None:
            before_go([p.pid or 0 for p in procs])
        ais0 = ais_cpu_s()
        t_go = time.time()
        go.set()
        while len(results) < len(procs):
            msg = q.get(timeout=1800)
            if msg[0] == "done":
                results[msg[1]] = msg[2]
        ais_used = ais_cpu_s() - ais0
        for p in procs:
            p.join(60)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        raise RuntimeError(f"benchmark child failed: exit codes {bad}")
    ordered = [results[i] for i in sorted(results)]
    wall = max(r["t1"] for r in ordered) - t_go
    return wall, ordered, ais_used


def ais_cpu_s() -> float:
    """CPU seconds used so far by the AIS nodes running on this host (nan when there are none)."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    total, found = 0.0, False
    for p in psutil.process_iter(["name", "cpu_times"]):
        if p.info.get("name") == "aisnode" and p.info.get("cpu_times") is not None:
            total += p.info["cpu_times"].user + p.info["cpu_times"].system
            found = True
    return total if found else float("nan")


def best(runs: list[Result]) -> Result:
    """The fastest of repeated runs, with every run's wall time."""
    return {**min(runs, key=lambda r: r["wall_s"]), "repeats_wall_s": [r["wall_s"] for r in runs]}


def rate(rs: list[Result], wall: float, ais_cpu: float) -> Result:
    """Totals over the processes of one run: rates, and CPU of the client processes and of AIS."""
    nbytes = sum(r["bytes"] for r in rs)
    cpu = sum(r["cpu_s"] for r in rs)
    out: Result = {"wall_s": round(wall, 3), "mib": round(nbytes / MIB, 2), "mib_per_s": round(nbytes / MIB / wall, 2)}
    if "samples" in rs[0]:
        samples = sum(r["samples"] for r in rs)
        out["samples"] = samples
        out["samples_per_s"] = round(samples / wall, 2)
        out["client_cpu_ms_per_sample"] = round(cpu * 1000 / max(samples, 1), 3)
    out["client_cpu_s"] = round(cpu, 2)
    out["client_cpu_pct_of_core"] = round(cpu / wall * 100, 1)
    out["ais_cpu_s"] = round(ais_cpu, 2)
    out["ais_cpu_pct_of_core"] = round(ais_cpu / wall * 100, 1)
    return out


# ============================================================================================ AIS helpers


def sdk(endpoint: str) -> Any:
    from aistore.sdk import Client

    return Client(endpoint)


def drop_bucket(endpoint: str, name: str) -> None:
    sdk(endpoint).bucket(name).delete(missing_ok=True)


def fresh_bucket(endpoint: str, name: str) -> None:
    drop_bucket(endpoint, name)
    sdk(endpoint).bucket(name).create(exist_ok=True)


def ensure_dataset(endpoint: str, bucket: str, n: int) -> dict[str, Any]:
    """The raw dataset in `bucket`, generated (after emptying the bucket) unless expected.json matches."""
    from sds_tools import exampledata

    want = exampledata.plan(n).manifest
    try:
        got = json.loads(sdk(endpoint).bucket(bucket).object(exampledata.MANIFEST_NAME).get_reader().read_all())
        if all(got.get(k) == want[k] for k in ("samples", "seed", "sample_kib", "total_bytes", "files")):
            log(f"dataset ais://{bucket}: {n} samples present")
            return dict(got)
    except Exception:  # missing bucket or object: generate
        pass
    log(f"dataset ais://{bucket}: generating {n} samples ({want['total_bytes'] / MIB:.0f} MiB)")
    t = time.time()
    drop_bucket(endpoint, bucket)
    manifest = exampledata.write_ais(endpoint, bucket, n_samples=n, workers=8)
    log(f"  generated in {time.time() - t:.0f} s")
    return dict(manifest)


def dsort_times(endpoint: str, job_id: str) -> tuple[float | None, float | None]:
    """dSort's own start and finish (earliest and latest over the targets), epoch seconds."""
    import requests

    r = requests.get(f"{endpoint}/v1/sort", params={"uuid": job_id}, timeout=30)
    r.raise_for_status()
    per_target = r.json() or {}
    starts = [_ts(t.get("started_time")) for t in per_target.values()]
    ends = [_ts(t.get("finish_time")) for t in per_target.values()]
    s = [x for x in starts if x]
    e = [x for x in ends if x]
    return (min(s) if s else None), (max(e) if e else None)


def _ts(s: str | None) -> float | None:
    """RFC 3339 in UTC ('Z'), with or without a fraction of up to nanoseconds -> epoch seconds."""
    if not s:
        return None
    head, _, frac = s.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + (float(f"0.{frac}") if frac else 0.0)


# ============================================================================================ the resource


def example_spec(source_bucket: str, out_bucket: str) -> dict[str, Any]:
    """examples/01-oxford-pets.yaml's spec over `source_bucket`, output to `out_bucket`, 4 workers, Delete."""
    import yaml

    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec["source"] = {"ais": {"bucket": source_bucket, "provider": "ais", "prefix": ""}}
    spec["output"] = {
        **spec["output"],
        "bucket": out_bucket,
        "maxSamplesPerShard": MAX_SAMPLES_PER_SHARD,
        "maxShardSize": "100MiB",
    }
    spec["conversion"] = {"workers": 4}
    spec["deletionPolicy"] = "Delete"
    return spec


def get_dataset(custom: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The ShardedDataset `namespace/name` (custom: a kubernetes CustomObjectsApi), or None when there is none."""
    from kubernetes.client.rest import ApiException

    try:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def wait_gone(get: Callable[[], Any], timeout: float) -> None:
    """Poll `get` until it returns None or `timeout` seconds have passed."""
    deadline = time.time() + timeout
    while time.time() < deadline and get() is not None:
        time.sleep(0.5)


def operator_pid() -> int | None:
    """The operator process on this host, found by its command line (`python -m sharded_dataset_operator.main`)."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if OPERATOR_MODULE in cmd and "-m" in cmd:
            found.append(p.pid)
    return found[0] if len(found) == 1 else (found[0] if found else None)


class PeakSampler(threading.Thread):
    """The peaks (MiB) of what `probe` reads (name -> MiB), sampled every `interval` seconds while the `with`
    block runs. A failed sample (a process ending or restarting mid-sample) is skipped, not fatal."""

    def __init__(self, probe: Callable[[], dict[str, float]], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.probe, self.interval = probe, interval
        self.peak: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(Exception):
                for name, mib in self.probe().items():
                    self.peak[name] = max(self.peak.get(name, 0.0), mib)
            self.done.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()

    def result(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.peak.items()}


def operator_rss() -> dict[str, float]:
    """The operator process's RSS (MiB), as `{"operator": ...}` ({} while it is not running)."""
    import psutil  # type: ignore[import-untyped,unused-ignore]

    pid = operator_pid()
    return {"operator": float(psutil.Process(pid).memory_info().rss) / MIB} if pid else {}


def summed_pss(pick: Callable[[Any], bool]) -> Callable[[], dict[str, float]]:
    """A probe: the summed PSS (MiB) of the processes `pick` selects, as `{"pss": ...}` (PSS splits shared pages
    between the processes that share them, so forked workers are not counted twice)."""

    def probe() -> dict[str, float]:
        import psutil  # type: ignore[import-untyped,unused-ignore]

        total = 0.0
        for p in psutil.process_iter():
            with contextlib.suppress(Exception):
                if pick(p):
                    total += p.memory_full_info().pss / MIB
        return {"pss": total}

    return probe


def peak_rss_by_role(roles: dict[str, str]) -> Callable[[], dict[str, float]]:
    """A probe: per role, the largest VmHWM (the kernel's own peak RSS, MiB) of the processes whose command line
    holds the role's marker (so a peak between two samples is not missed)."""

    def probe() -> dict[str, float]:
        import psutil  # type: ignore[import-untyped,unused-ignore]

        out = dict.fromkeys(roles, 0.0)
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info.get("cmdline") or [])
            role = next((r for r, marker in roles.items() if marker in cmd), None)
            if role is None:
                continue
            with contextlib.suppress(OSError), open(f"/proc/{p.pid}/status") as f:
                hwm = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")), 0.0)
                out[role] = max(out[role], hwm)
        return out

    return probe
