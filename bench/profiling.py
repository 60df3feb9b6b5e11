"""Benchmark scenario 5 (bench/run.py, see bench/README.md): a profile of the 1-worker converter.

py-spy `--gil` attached to the converter child (where the Python CPU goes), or cProfile of all threads in this
process when py-spy is missing or cannot attach. Writes the top functions to bench/results/profile.txt.

Imports only the standard library at top level (the converter child is spawned; see bench/common.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import CONV_BUCKET, Result, drop_bucket, fresh_bucket, log
from converter import converter_config, measure_converter

# thread/process plumbing and the bench harness (its frames in bench/run.py, common.py and converter.py)
PLUMBING = (
    "(threading.py)",
    "(concurrent/futures/thread.py)",
    "(multiprocessing/process.py)",
    "(multiprocessing/spawn.py)",
    "(<string>)",
    "(run.py)",
    "(common.py)",
    "(converter.py)",
)


def _py_spy() -> str | None:
    cand = Path(sys.executable).with_name("py-spy")
    return str(cand) if cand.exists() else shutil.which("py-spy")


def profile_converter(endpoint: str, raw: str, out_txt: Path) -> Result:
    """py-spy --gil of a 1-worker converter run (where the Python CPU goes); cProfile of all threads as fallback."""
    spy = _py_spy()
    stacks = Path(tempfile.mkdtemp(prefix="bench-prof-")) / "stacks.txt"
    procs: list[subprocess.Popen[bytes]] = []

    def attach(pids: list[int]) -> None:
        cmd = [
            spy or "py-spy",
            "record",
            "--pid",
            str(pids[0]),
            "--format",
            "raw",
            "--rate",
            "200",
            "--gil",
            "-o",
            str(stacks),
        ]
        procs.append(subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(1.0)  # let py-spy attach before the work starts

    if spy:
        measure_converter(endpoint, raw, 1, attach)
        err = procs[0].communicate(timeout=60)[1].decode(errors="replace") if procs else ""
        text = stacks.read_text() if stacks.exists() else ""
        shutil.rmtree(stacks.parent, ignore_errors=True)
        if text:
            return _write_profile(
                _parse_collapsed(text),
                "py-spy --gil (samples of the thread holding the GIL: where the Python CPU goes)",
                out_txt,
            )
        log(f"py-spy failed ({err.strip()[-300:]}); falling back to cProfile")
    return _write_profile(_cprofile_converter(endpoint, raw), "cProfile (all threads, cumulative seconds)", out_txt)


def _parse_collapsed(text: str) -> tuple[list[tuple[str, float, float]], float]:
    """py-spy raw (collapsed) stacks -> [(function, inclusive, self)] in samples, and the sample total."""
    incl: dict[str, float] = {}
    own: dict[str, float] = {}
    total = 0.0
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = float(count_s)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        for f in set(frames):
            incl[f] = incl.get(f, 0.0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0.0) + count
    return [(f, incl[f], own.get(f, 0.0)) for f in incl], total


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`, shortened to the package-relative path."""
    func, _, loc = frame.partition(" (")
    path = loc.rstrip(")").rpartition(":")[0] or loc.rstrip(")")
    for marker in ("site-packages/", "lib/python3.11/", "operator/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def _cprofile_converter(endpoint: str, raw: str) -> tuple[list[tuple[str, float, float]], float]:
    import cProfile
    import pstats
    import threading

    from sharded_dataset_operator.clients.ais import Ais
    from sharded_dataset_operator.pods.common import make_source
    from sharded_dataset_operator.pods.converter import convert
    from sharded_dataset_operator.pods.planner import make_plan

    fresh_bucket(endpoint, CONV_BUCKET)
    config = converter_config(raw, 1, "bench-prof")
    ais = Ais(endpoint, attempts=5, pool=32)
    make_plan(config, ais, make_source(config, ais))
    profilers: list[cProfile.Profile] = []

    def per_thread(*_: Any) -> None:
        p = cProfile.Profile()
        profilers.append(p)
        p.enable()

    main_p = cProfile.Profile()
    threading.setprofile(per_thread)
    t0 = time.time()
    main_p.enable()
    try:
        convert(config, 0, ais, make_source(config, ais))
    finally:
        main_p.disable()
        threading.setprofile(None)  # type: ignore[arg-type,unused-ignore]
    wall = time.time() - t0
    drop_bucket(endpoint, CONV_BUCKET)
    stats = pstats.Stats(main_p)
    for p in profilers:
        p.disable()
        stats.add(p)
    rows = []
    for (file, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((_frame_name(f"{func} ({file}:0)"), ct, tt))
    return rows, wall


def _write_profile(parsed: tuple[list[tuple[str, float, float]], float], method: str, out_txt: Path) -> Result:
    rows, total = parsed
    unit = "samples" if method.startswith("py-spy") else "s"
    # thread/process plumbing is ~100% cumulative and says nothing; rank the rest
    by_cum = sorted((r for r in rows if not r[0].endswith(PLUMBING)), key=lambda r: -r[1])
    by_self = sorted(rows, key=lambda r: -r[2])

    def fmt(rs: list[tuple[str, float, float]]) -> list[str]:
        return [f"{c / total * 100:6.1f}% {c:10.1f}  self {s / total * 100:5.1f}%  {f}" for f, c, s in rs]

    lines = [
        f"# converter, 1 worker, full dataset; {method}; total {total:.0f} {unit}",
        "",
        "## top 15 by cumulative (thread-pool and process plumbing frames left out)",
    ]
    lines += [*fmt(by_cum[:15]), "", "## top 15 by self (where the CPU goes)", *fmt(by_self[:15])]
    out_txt.write_text("\n".join(lines) + "\n")

    def js(rs: list[tuple[str, float, float]]) -> list[Result]:
        return [
            {"function": f, "cumulative_pct": round(c / total * 100, 1), "self_pct": round(s / total * 100, 1)}
            for f, c, s in rs
        ]

    return {"method": method, "top5_cumulative": js(by_cum[:5]), "top5_self": js(by_self[:5])}
