"""Fault injection on the local cluster: kill an AIS node process and start it again, as it was started, or
push every target over its capacity high watermark.

AIS nodes run on this host (hack/cluster.sh); a killed node is restarted with its own command line and
environment, read from /proc before the kill, and the helpers always undo their fault, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from sharded_dataset_operator.clients.ais import Ais

LOGS = Path("/var/lib/sharded-dataset-operator/cluster/logs")


def node_pid(role: str, name: str) -> int:
    """PID of the aisnode process whose local config is `<name>/local.json` (e.g. target1, proxy0)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(cmd).decode(errors="replace")
        if "aisnode" in text and f"-role={role}" in text and f"/{name}/local.json" in text:
            return int(proc.name)
    raise AssertionError(f"no running AIS {role} {name}")


def cluster_healthy(endpoint: str, targets: int = 2) -> bool:
    """The primary is ready and at least `targets` targets are in its map, each answering its own health check
    (a killed target stays in the map until the proxy's keepalive notices, so the map alone is not enough).
    """
    try:
        if requests.get(f"{endpoint}/v1/health?prr=true", timeout=2).status_code != 200:
            return False
    except requests.RequestException:
        return False
    now = Ais(endpoint).membership()
    return now is not None and now.answering == now.targets >= targets


@contextlib.contextmanager
def node_down(endpoint: str, role: str, name: str) -> Iterator[None]:
    """SIGKILL the node; on exit start it again exactly as it ran and wait until the cluster is whole."""
    with nodes_down(endpoint, [(role, name)]):
        yield


@contextlib.contextmanager
def nodes_down(endpoint: str, nodes: list[tuple[str, str]]) -> Iterator[None]:
    """SIGKILL the (role, name) nodes at once; on exit start each again exactly as it ran, then wait until the
    cluster is whole."""
    procs = []
    for role, name in nodes:
        proc = Path(f"/proc/{node_pid(role, name)}")
        cmd = [c.decode() for c in (proc / "cmdline").read_bytes().split(b"\0") if c]
        env = dict(line.decode().split("=", 1) for line in (proc / "environ").read_bytes().split(b"\0") if b"=" in line)
        procs.append((name, proc, cmd, env, os.readlink(proc / "cwd")))
    for _, proc, *_ in procs:
        os.kill(int(proc.name), signal.SIGKILL)
    try:
        yield
    finally:
        for name, proc, cmd, env, cwd in procs:
            deadline = time.monotonic() + 30
            while proc.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            with open(LOGS / f"ais-{name}.log", "ab") as log:
                subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while not cluster_healthy(endpoint) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert cluster_healthy(endpoint), f"AIS {', '.join(n for _, n in nodes)} did not rejoin within 120 s"


@contextlib.contextmanager
def above_high_watermark(endpoint: str) -> Iterator[None]:
    """Every target over its capacity high watermark, as on a disk that is filling up: the cluster's space
    watermarks are set to 1 %. Targets then refuse new dSort jobs (and other new bucket-wide jobs) while reads
    and writes go on. On exit the watermarks are restored and the targets' capacity errors have cleared.
    """
    space = requests.get(f"{endpoint}/v1/cluster", params={"what": "cluster_config"}, timeout=10).json()["space"]
    ais = Ais(endpoint)
    targets = ais.membership()
    assert targets is not None

    def set_space(cleanup: int, low: int, high: int) -> None:
        values = {"space.cleanupwm": cleanup, "space.lowwm": low, "space.highwm": high}
        requests.put(f"{endpoint}/v1/cluster/set-config", params=values, timeout=10).raise_for_status()

    def wait(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60  # a target refreshes its capacity on its stats tick (10 s)
        while not check():
            assert time.monotonic() < deadline, f"AIS targets: {what} within 60 s"
            time.sleep(0.5)

    set_space(1, 1, 1)
    try:
        wait(lambda: len(ais.capacity_problems()) == targets.targets, "no capacity error after the watermarks")
        yield
    finally:
        set_space(int(space["cleanupwm"]), int(space["lowwm"]), int(space["highwm"]))
        wait(lambda: not ais.capacity_problems(), "capacity errors left after restoring the watermarks")
