"""Seeded fault simulation of the operator's decision core (tests/sim): N runs, every invariant after every pass.

`SDS_SIM_RUNS` (default 10000) runs from seed `SDS_SIM_BASE` (default 0); `SDS_SIM_SOAK=1` runs 20x as many;
`SDS_SIM_SEED=<n>` replays one seed (with `SDS_SIM_TRACE=1`: pass by pass).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time

import pytest

from tests.sim import driver


def kind(violation: str) -> str:
    """`seed 7: P5 retry-failed: a retry after X ...` -> `P5 retry-failed after X` (the class of a finding)."""
    text = violation.split(": ", 1)[1]
    head = text.split(":", 1)[0]
    after = re.search(r"after (\w+)", text) if "retry" in head or "convergence" in head else None
    return head + (f" after {after.group(1)}" if after else "")


def _run(seed: int) -> list[str]:
    return driver.run(seed).violations


def run_seeds(seeds: list[int]) -> dict[int, list[str]]:
    if len(seeds) < 200:
        return {s: _run(s) for s in seeds}
    # spawn, not fork: earlier tests in the same process leave threads (thread pools, HTTP servers) whose locks a
    # forked child could inherit held, which hung one CI run until pytest's timeout; spawned workers start clean.
    # A bounded wait turns any other hang into a failure that says so.
    with multiprocessing.get_context("spawn").Pool(int(os.environ.get("SDS_SIM_PROCS", "2"))) as pool:
        pending = pool.map_async(_run, seeds, chunksize=50)
        try:
            found = pending.get(timeout=float(os.environ.get("SDS_SIM_WAIT", str(max(600, len(seeds) / 10)))))
        except multiprocessing.TimeoutError:
            raise AssertionError(f"the simulation's workers did not finish {len(seeds)} runs in time") from None
        return dict(zip(seeds, found, strict=True))


@pytest.mark.timeout(0 if os.environ.get("SDS_SIM_SOAK") else 900)  # a soak runs 20x as long as the default
def test_simulation() -> None:
    if os.environ.get("SDS_SIM_SEED"):
        seeds = [int(os.environ["SDS_SIM_SEED"])]
    else:
        runs = int(os.environ.get("SDS_SIM_RUNS", "10000")) * (20 if os.environ.get("SDS_SIM_SOAK") else 1)
        base = int(os.environ.get("SDS_SIM_BASE", "0"))
        seeds = list(range(base, base + runs))
    started = time.monotonic()
    results = run_seeds(seeds)
    elapsed = time.monotonic() - started
    found: dict[str, list[tuple[int, int, str]]] = {}  # kind -> (run number, seed, message)
    for n, seed in enumerate(seeds, 1):
        for v in results[seed]:
            found.setdefault(kind(v), []).append((n, seed, v))
    lines = [f"{len(seeds)} runs in {elapsed:.1f}s ({len(seeds) / elapsed:.0f} runs/s)"]
    for k, hits in sorted(found.items(), key=lambda kv: kv[1][0][0]):
        n, seed, message = hits[0]
        lines.append(f"{k}: {len(hits)} runs, first seed {seed} (run {n}): {message}")
        lines.append(f"    replay: SDS_SIM_SEED={seed} SDS_SIM_TRACE=1 pytest -s tests/unit/test_simulation.py")
    print("\n".join(lines))
    failing = sorted({seed for hits in found.values() for _, seed, _ in hits})
    assert not found, "\n".join([*lines, f"failing seeds ({len(failing)}): {failing[:50]}"])


# seeds the soak found (outside the default range), replayed on every run once fixed: split stable indexes that
# still named a version the stable index had left, whose units were swept from when the stable index left it
# (1018259, 1183075); a dSort attempt recorded ahead of a status about the earlier generation, started again and
# again under the same number (1109393); a pass that did not see the stable index published anyway, and the
# version that index still named was deleted counting its use from an earlier pass (1125267, 1128348)
FOUND_BY_SOAK = (1018259, 1109393, 1125267, 1128348, 1183075)


@pytest.mark.parametrize("seed", FOUND_BY_SOAK)
def test_seeds_found_by_the_soak(seed: int) -> None:
    assert _run(seed) == []
