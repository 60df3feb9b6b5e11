"""Planner memory and time with a metadata table, at growing table sizes (`make bench-tables`).

For each size N, a fresh spawned process plans a dataset of N images (`images/<n>.jpg`, listed, never read)
with a metadata table of N rows (Hugging Face style: `file_name`, a caption with commas, a score), once as CSV
and once as JSON Lines, and, as the baseline measured in the same run, the same listing without a table. The
planner is the real one (`pods.planner.make_plan`): listing, external sort (runs spilled to the store), judging,
plan chunks and unit tables; the store is a directory on local disk instead of an AIS bucket, so the numbers
are the planner's own. Peak memory is the child's VmHWM.

Writes bench/results/tables.json and prints a table; the claim it checks: the planner's peak memory does not
grow with the table (flat from 100 k to 1 M rows), and what a table costs in time per row.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import RESULTS, log, rss_now_mib, rss_peak_mib, write_json

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


class DiskStore:
    """The object calls the planner makes, on a local directory (object names are flattened file names)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, bucket: str, name: str) -> Path:
        return self.root / bucket / name.replace("/", "%2F")

    def put(self, bucket: str, name: str, data: bytes, provider: str = "ais") -> None:
        path = self._path(bucket, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get(self, bucket: str, name: str, provider: str = "ais", direct: bool = False) -> bytes | None:
        path = self._path(bucket, name)
        return path.read_bytes() if path.exists() else None

    def stream_lines(self, bucket: str, name: str, provider: str = "ais") -> Iterator[str]:
        path = self._path(bucket, name)
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield line.rstrip("\n")

    def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> list[Any]:
        from sharded_dataset_operator.core.model import Entry

        folder = self.root / bucket
        names = sorted(p.name.replace("%2F", "/") for p in folder.iterdir()) if folder.exists() else []
        return [Entry(n, self._path(bucket, n).stat().st_size) for n in names if n.startswith(prefix)]

    def delete_objects(self, bucket: str, names: list[str], provider: str = "ais") -> int:
        for n in names:
            self._path(bucket, n).unlink(missing_ok=True)
        return len(names)


class Lazy(io.RawIOBase):
    """A table made as it is read: the benchmark's own input never sits in memory either."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self.parts, self.pending = parts, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while len(self.pending) < len(buffer):
            part = next(self.parts, None)
            if part is None:
                break
            self.pending += part
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def table_rows(n: int, fmt: str) -> Iterator[bytes]:
    if fmt == "csv":
        yield b"file_name,text,score\n"
    for i in range(n):
        caption = f"a photo, number {i}, of something"
        if fmt == "csv":
            yield f'{i:08d}.jpg,"{caption}",{i % 100 / 10}\n'.encode()
        else:
            yield (json.dumps({"file_name": f"{i:08d}.jpg", "text": caption, "score": i % 100 / 10}) + "\n").encode()


class SyntheticSource:
    """N listed images and, optionally, one metadata table; nothing is read but the table."""

    def __init__(self, n: int, fmt: str | None) -> None:
        from sharded_dataset_operator.pods.sources import ListingStats, ReadStats

        self.n, self.fmt = n, fmt
        self.listing, self.reads = ListingStats(), ReadStats()

    def files(self) -> Iterator[Any]:
        from sharded_dataset_operator.core.samples import RawFile

        self.listing.pages = 1 + self.n // 1000
        for i in range(self.n):
            self.listing.files += 1
            yield RawFile(f"images/{i:08d}.jpg", 1000 + i % 4000, f"etag{i}")

    def read_many(self, paths: Any) -> list[bytes]:
        raise AssertionError("the planner reads no images")

    def lines(self, path: str) -> Iterator[str] | None:
        return None

    def open_file(self, path: str) -> Any:
        if self.fmt is None or path != f"images/metadata.{self.fmt}":
            return None
        return io.BufferedReader(Lazy(table_rows(self.n, self.fmt)), buffer_size=1 << 16)

    def describe(self) -> str:
        return "synthetic"


def config(fmt: str | None) -> dict[str, Any]:
    from sharded_dataset_operator.core.builders import Owner, converter_config
    from sharded_dataset_operator.core.spec import parse_spec

    samples: dict[str, Any] = {"fields": [{"pattern": "images/*.jpg", "name": "jpg"}]}
    if fmt is not None:
        samples["tables"] = [
            {
                "path": f"images/metadata.{fmt}",
                "members": [{"column": "text", "name": "txt"}],
                "json": {"name": "json", "columns": ["score"]},
            }
        ]
    spec = {
        "source": {"ais": {"bucket": "raw"}},
        "samples": samples,
        "output": {"bucket": "out", "maxShardSize": "64MiB"},
        "shuffle": {"seed": "1"},
    }
    owner = Owner(name="bench", namespace="bench", uid="00000000-1111-4222-8333-444444444444", generation=1)
    return converter_config(parse_spec(spec, name="bench", default_endpoint="http://ais:1"), owner)


def child(n: int, fmt: str | None, root: str, q: Any) -> None:
    from sharded_dataset_operator.pods.planner import make_plan

    cfg = config(fmt)
    store = DiskStore(Path(root))
    before = rss_now_mib()
    t0 = time.perf_counter()
    manifest = make_plan(cfg, store, SyntheticSource(n, fmt))  # type: ignore[arg-type]
    secs = time.perf_counter() - t0
    q.put(
        {
            "rows": n if fmt else 0,
            "files": n,
            "table": fmt or "none",
            "seconds": round(secs, 2),
            "peak_rss_mib": round(rss_peak_mib(), 1),
            "rss_before_mib": round(before, 1),
            "samples": manifest["samples"],
            "sort_runs": manifest["sortRuns"],
            "rows_unused": manifest["rows"],
        }
    )


def measure(n: int, fmt: str | None) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="sds-bench-tables-")
    try:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(n, fmt, root, q))
        p.start()
        result: dict[str, Any] = q.get()
        p.join()
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    args = ap.parse_args()
    results = []
    for n in args.sizes:
        for fmt in (None, "csv", "jsonl"):
            r = measure(n, fmt)
            log(f"{n:>9} files, table {r['table']:>5}: {r['seconds']:7.1f} s, peak {r['peak_rss_mib']:6.1f} MiB")
            results.append(r)
    sizes = sorted(args.sizes)
    largest, smallest = sizes[-1], sizes[-2] if len(sizes) > 1 else sizes[-1]  # past the sort buffer's filling
    summary = {}
    for fmt in ("csv", "jsonl"):
        big = next(r for r in results if r["files"] == largest and r["table"] == fmt)
        small = next(r for r in results if r["files"] == smallest and r["table"] == fmt)
        base = next(r for r in results if r["files"] == largest and r["table"] == "none")
        summary[fmt] = {
            "peak_ratio_largest_to_next": round(big["peak_rss_mib"] / small["peak_rss_mib"], 3),
            "peak_ratio_to_no_table": round(big["peak_rss_mib"] / base["peak_rss_mib"], 3),
            "time_ratio_to_no_table": round(big["seconds"] / base["seconds"], 3),
            "us_per_row": round((big["seconds"] - base["seconds"]) / largest * 1e6, 2),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": results, "summary": summary}
    write_json(RESULTS / "tables.json", out)
    log(f"summary: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
