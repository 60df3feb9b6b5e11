"""Benchmark scenario 3 (bench/run.py, see bench/README.md): the converter alone, as host processes.

The planner (`make_plan()`, one process, timed apart) and then `convert()` in N spawned processes (index
0..N-1, like `JOB_COMPLETION_INDEX`), each with its own `Ais` client configured like the converter pod, with
the config `builders.converter_config` produces for examples/01; also without and with examples/04's resize.
bench/scale.py reuses `measure_converter`.

Imports only the standard library at top level (the children are spawned; see bench/common.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from common import (
    CONV_BUCKET,
    NAMESPACE,
    REPO,
    Result,
    best,
    drop_bucket,
    example_spec,
    fresh_bucket,
    log,
    rate,
    run_children,
    timed_child,
)

RESIZE_EXAMPLE = REPO / "examples" / "04-resize.yaml"
READAHEAD_MIB = 64  # converter.main.MAX_READAHEAD


def converter_config(
    source_bucket: str, workers: int, tag: str, reads: str = "batch", spec_over: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The config a converter pod of examples/01 would get (via builders.converter_config), output bench-conv."""
    from sharded_dataset_operator.core.builders import Owner
    from sharded_dataset_operator.core.builders import converter_config as build
    from sharded_dataset_operator.core.spec import parse_spec

    spec = example_spec(source_bucket, CONV_BUCKET)
    spec["conversion"] = {"workers": workers, "reads": {"mode": reads}}
    spec.update(spec_over or {})
    parsed = parse_spec(spec, name=tag, default_endpoint="http://unused")
    owner = Owner(name=tag, namespace=NAMESPACE, uid=uuid.uuid4().hex, generation=1)
    return build(parsed, owner)


def _child_plan(endpoint: str, config: dict[str, Any], index: int, go: Any, q: Any) -> None:
    """`make_plan()` exactly as the planner pod runs it: lists the source once and writes the plan."""
    from sharded_dataset_operator.clients.ais import Ais
    from sharded_dataset_operator.pods.common import make_source
    from sharded_dataset_operator.pods.planner import make_plan

    ais = Ais(endpoint, attempts=5, pool=32)
    source = make_source(config, ais)

    def work() -> Result:
        manifest = make_plan(config, ais, source)
        return {
            "samples": manifest["samples"],
            "files": manifest["filesListed"],
            "list_pages": manifest["listPages"],
            "sort_runs": manifest["sortRuns"],
            "bytes": 0,
        }

    timed_child(index, go, q, work)


def _child_convert(endpoint: str, config: dict[str, Any], index: int, go: Any, q: Any) -> None:
    """`convert()` exactly as a converter pod runs it (same Ais client settings as converter.main)."""
    from sharded_dataset_operator.clients.ais import Ais
    from sharded_dataset_operator.pods.common import make_source
    from sharded_dataset_operator.pods.converter import convert

    ais = Ais(endpoint, attempts=5, pool=32)
    source = make_source(config, ais)

    def work() -> Result:
        report = convert(config, index, ais, source)
        return {
            "samples": report.written,
            "bytes": report.total_bytes,
            "shards": len(report.shards),
            "batch_requests": report.batch_requests,
            "object_requests": report.object_requests,
        }

    timed_child(index, go, q, work)


def measure_plan(endpoint: str, config: dict[str, Any]) -> Result:
    """The planner step alone (one process): listing, grouping, external sort, plan chunks."""
    wall, (r,), ais_cpu = run_children(_child_plan, [(endpoint, config, 0)])
    return {
        "wall_s": round(wall, 3),
        "samples": r["samples"],
        "files": r["files"],
        "list_pages": r["list_pages"],
        "sort_runs": r["sort_runs"],
        "client_cpu_s": round(r["cpu_s"], 2),
        "ais_cpu_s": round(ais_cpu, 2),
        "peak_rss_mib": round(r["peak_rss_mib"], 1),
    }


def measure_converter(
    endpoint: str,
    source_bucket: str,
    workers: int,
    before_go: Callable[[list[int]], None] | None = None,
    reads: str = "batch",
    spec_over: dict[str, Any] | None = None,
) -> Result:
    """Plan (timed apart), then `workers` converter processes; the rates are the converters' alone."""
    fresh_bucket(endpoint, CONV_BUCKET)
    config = converter_config(source_bucket, workers, f"bench-w{workers}", reads, spec_over)
    planned = measure_plan(endpoint, config)
    wall, rs, ais_cpu = run_children(_child_convert, [(endpoint, config, i) for i in range(workers)], before_go)
    drop_bucket(endpoint, CONV_BUCKET)
    out = {
        **rate(rs, wall, ais_cpu),
        "reads": reads,
        "plan": planned,
        "batch_requests": sum(r["batch_requests"] for r in rs),
        "object_requests": sum(r["object_requests"] for r in rs),
        "shards": sum(r["shards"] for r in rs),
        "peak_rss_mib_per_worker": [round(r["peak_rss_mib"], 1) for r in rs],
        "rss_before_convert_mib_per_worker": [round(r["rss_before_mib"], 1) for r in rs],
        "worker_wall_s": [round(r["t1"] - r["t0"], 2) for r in rs],
    }
    log(
        f"converter x{workers} on {source_bucket}: {out['samples_per_s']} samples/s, {out['mib_per_s']} MiB/s, "
        f"peak RSS {max(out['peak_rss_mib_per_worker'])} MiB"
    )
    return out


def measure_transforms(endpoint: str, raw: str, repeat: int, workers: Sequence[int]) -> Result:
    """The converter without and with examples/04's resize, interleaved, the best of `repeat` runs of each."""
    import yaml

    transform = yaml.safe_load(RESIZE_EXAMPLE.read_text())["spec"]["transform"]
    out: Result = {"transform": transform}
    for w in workers:
        plain: list[Result] = []
        resized: list[Result] = []
        for _ in range(max(1, repeat)):
            plain.append(measure_converter(endpoint, raw, w))
            resized.append(measure_converter(endpoint, raw, w, spec_over={"transform": transform}))
        p, r = best(plain), best(resized)
        ratio = round(r["samples_per_s"] / p["samples_per_s"], 3)
        out[str(w)] = {"plain": p, "resize": r, "resize_vs_plain_samples_per_s": ratio}
        log(f"converter x{w}: {p['samples_per_s']} samples/s plain, {r['samples_per_s']} with resize ({ratio:.2f}x)")
    return out


def transforms_table(res: Result) -> str:
    lines = [f"transform: {json.dumps(res['transform'])}"]
    for w, t in res.items():
        if w == "transform":
            continue
        p, r = t["plain"], t["resize"]
        lines.append(
            f"converter x{w}: {p['samples_per_s']} samples/s plain ({p['mib_per_s']} MiB/s out, "
            f"{p['client_cpu_ms_per_sample']} ms CPU/sample), {r['samples_per_s']} with resize ({r['mib_per_s']} "
            f"MiB/s out, {r['client_cpu_ms_per_sample']} ms CPU/sample): {t['resize_vs_plain_samples_per_s']:.2f}x"
        )
    return "\n".join(lines)
