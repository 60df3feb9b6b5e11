"""AIS ETL benchmark (`make bench-etl`, see bench/README.md): the same resize in the converter and by AIS ETL.

For each dataset size (default 1,000 and 4,000 Oxford-style samples of the example data, ~40 KiB each, every
image larger than the limit), in one run and in alternating order, a ShardedDataset without a shuffle converts
the data with `spec.transform.resize` (in the converter pods) and with `spec.transform.aisEtl` running
`sdo_etl.examples:ResizeImage` (the same resize code, in the ETL pods next to the targets; the converters read
the images through it). Each run is timed from its status (polled every 0.2 s): `etl` (starting the ETL, AIS
ETL only), `converting` (the converter Job) and apply -> Ready. Reports samples/s of the converting step and
the ratio AIS ETL / converter per size. Writes bench/results/etl.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import common  # bench/common.py: AIS helpers, the example dataset and spec
from common import GROUP, PLURAL, VERSION, Result

NAMESPACE = "bench-etl"
RESIZE = {"member": "image.jpg", "maxSide": 128, "format": "jpeg", "quality": 90}
ETL = {
    "image": "localhost/sdo-etl:dev",
    "class": "sdo_etl.examples:ResizeImage",
    "member": "image.jpg",
    "env": {"MAX_SIDE": "128", "FORMAT": "jpeg", "QUALITY": "90"},
}


def api() -> Any:
    from kubernetes import client, config

    config.load_kube_config()
    core = client.CoreV1Api()
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        time.sleep(2)  # the default service account
    except client.rest.ApiException as e:
        if e.status != 409:
            raise
    return client.CustomObjectsApi()


def get(custom: Any, name: str) -> dict[str, Any] | None:
    return common.get_dataset(custom, NAMESPACE, name)


def convert_once(custom: Any, name: str, raw: str, transform: dict[str, Any], timeout: float) -> Result:
    """Apply a dataset converting `raw` with `transform`, wait until Ready, delete it; the steps' durations."""
    spec = common.example_spec(raw, "bench-etl-out")
    spec.pop("shuffle", None)
    spec["transform"] = transform
    spec["conversion"] = {"workers": 2}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ShardedDataset", "metadata": {"name": name}, "spec": spec}
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
    t0 = time.time()
    marks: dict[str, float] = {}
    status: dict[str, Any] = {}
    try:
        while time.time() - t0 < timeout:
            status = (get(custom, name) or {}).get("status") or {}
            if status.get("phase") in ("Ready", "Failed"):
                marks.setdefault(status["phase"], time.time() - t0)
                break
            reason = next((c["reason"] for c in status.get("conditions") or [] if c["type"] == "Reconciling"), "")
            if reason:
                marks.setdefault(reason, time.time() - t0)
            time.sleep(common.POLL_S)
        if "Ready" not in marks:
            raise RuntimeError(f"{name} not Ready: {json.dumps(status)[:1500]}")
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        common.wait_gone(lambda: get(custom, name), 600)
    after = marks.get("Verifying", marks["Ready"])
    converting = after - marks["Converting"]
    samples = int(status["samples"]["written"])
    out = {
        "samples": samples,
        "etl_start_s": round(marks["Converting"] - marks["EtlStarting"], 2) if "EtlStarting" in marks else None,
        "converting_s": round(converting, 2),
        "samples_per_s": round(samples / converting, 1),
        "to_ready_s": round(marks["Ready"], 2),
    }
    common.log(f"{name}: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,4000", help="comma-separated sample counts")
    ap.add_argument("--out", default=str(common.REPO / "bench" / "results" / "etl.json"))
    args = ap.parse_args(argv)
    endpoint = common.ais_endpoint(ap, "bench-etl")
    custom = api()
    rows: list[Result] = []
    for n in (int(x) for x in args.sizes.split(",")):
        raw = f"bench-etl-raw-{n}"
        common.ensure_dataset(endpoint, raw, n)
        common.fresh_bucket(endpoint, "bench-etl-out")
        # alternate the order so that neither kind always runs on a warmer cluster
        converter = convert_once(custom, f"conv-{n}", raw, {"resize": RESIZE}, 1800)
        etl = convert_once(custom, f"etl-{n}", raw, {"aisEtl": ETL}, 1800)
        etl2 = convert_once(custom, f"etl-{n}-b", raw, {"aisEtl": ETL}, 1800)
        converter2 = convert_once(custom, f"conv-{n}-b", raw, {"resize": RESIZE}, 1800)
        best_conv = min((converter, converter2), key=lambda r: r["converting_s"])
        best_etl = min((etl, etl2), key=lambda r: r["converting_s"])
        row = {
            "samples": n,
            "converter": best_conv,
            "ais_etl": best_etl,
            "etl_over_converter_converting": round(best_etl["converting_s"] / best_conv["converting_s"], 2),
            "etl_over_converter_to_ready": round(best_etl["to_ready_s"] / best_conv["to_ready_s"], 2),
        }
        common.log(f"{n} samples: AIS ETL / converter = {row['etl_over_converter_converting']}x converting time")
        rows.append(row)
    result = {"bench": "etl", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    common.write_json(Path(args.out), result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
