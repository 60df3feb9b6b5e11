"""The main job: generate an Oxford-IIIT-Pet-shaped dataset into AIS, apply examples/01, wait for Ready, and
print the status and the shard listing. Run through `make demo` (which brings the cluster and operator up).

    python examples/run_demo.py [--samples N | --full]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sds_tools import exampledata
from sharded_dataset_operator.clients.ais import Ais

HERE = Path(__file__).resolve().parent
NAME, NAMESPACE, RAW_BUCKET, OUT_BUCKET = "oxford-pets", "ml", "pets-raw", "pets"


def kubectl(*args: str, check: bool = True) -> str:
    p = subprocess.run(["kubectl", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {p.stderr}")
    return p.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1000, help="dataset size (default 1000)")
    ap.add_argument("--full", action="store_true", help="the full Oxford size: 7,390 samples (~790 MiB)")
    ap.add_argument("--timeout", type=int, default=900)
    args = ap.parse_args()
    samples = 7390 if args.full else args.samples
    endpoint = os.environ["AIS_ENDPOINT"]

    t0 = time.monotonic()
    manifest = exampledata.write_ais(endpoint, RAW_BUCKET, n_samples=samples)
    print(f"generated {samples} samples ({len(manifest['complete'])} complete) into ais://{RAW_BUCKET} "
          f"in {time.monotonic() - t0:.1f}s")  # fmt: skip

    kubectl("apply", "-f", str(HERE / "00-namespace.yaml"))
    if kubectl("get", "sds", NAME, "-n", NAMESPACE, "--ignore-not-found", "-o", "name").strip():
        # A previous demo run: start over, removing what it wrote.
        kubectl("patch", "sds", NAME, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"deletionPolicy":"Delete"}}')
        kubectl("delete", "sds", NAME, "-n", NAMESPACE, "--timeout=300s")
    t1 = time.monotonic()
    kubectl("apply", "-f", str(HERE / "01-oxford-pets.yaml"))
    print(f"applied examples/01-oxford-pets.yaml; waiting for Ready (timeout {args.timeout}s)")
    wait = subprocess.run(["kubectl", "wait", "--for=condition=Ready", f"sds/{NAME}", "-n", NAMESPACE,
                           f"--timeout={args.timeout}s"])  # fmt: skip
    print(kubectl("get", "sds", NAME, "-n", NAMESPACE, "-o", "wide"))
    obj = json.loads(kubectl("get", "sds", NAME, "-n", NAMESPACE, "-o", "json"))
    status = obj.get("status", {})
    print(json.dumps({k: status.get(k) for k in ("phase", "message", "samples", "shards", "shuffle", "indexObject",
                                                 "startTime", "completionTime")}, indent=2))  # fmt: skip
    if wait.returncode != 0:
        print(kubectl("describe", "sds", NAME, "-n", NAMESPACE))
        return 1
    print(f"Ready {time.monotonic() - t1:.1f}s after apply\n\nshuffled shards in ais://{OUT_BUCKET}:")
    ais = Ais(endpoint)
    for e in ais.list_objects(OUT_BUCKET, prefix="shuffled-shard-"):
        print(f"  {e.name:60s} {e.size / 2**20:8.1f} MiB")
    expected = len(manifest["complete"])
    written = status["samples"]["written"]
    print(f"\n{written} samples written, {expected} complete samples in the raw data: "
          f"{'OK' if written == expected else 'MISMATCH'}")  # fmt: skip
    return 0 if written == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
