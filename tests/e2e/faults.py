"""Fault injection on the local cluster: kill an AIS node (its aisnode process, SIGKILL, then its pod) and let
its StatefulSet bring it back after a set time, or push every target over its capacity high watermark.

AIS runs as pods in namespace `ais` (hack/cluster.sh). A node's container waits while `<data>/<pod>/hold`
exists, so a killed node stays away exactly as long as a test says; the helpers always undo their fault, even
when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import requests

from sharded_dataset_operator.clients.ais import Ais

AIS_DATA = Path("/var/lib/sharded-dataset-operator/cluster/ais")  # one directory per AIS pod (hostPath)


class Kubectl(Protocol):
    def run(self, *args: str, check: bool = ..., timeout: float = ...) -> str: ...


def node_pid(pod: str) -> int:
    """PID (on this host) of the aisnode process of AIS pod `pod` (e.g. ais-target-0, ais-proxy-0)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"/aisnode") and any(c.endswith(f"/{pod}/local.json".encode()) for c in cmd):
            return int(proc.name)
    raise AssertionError(f"no running aisnode in pod {pod}")


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
def node_down(kube: Kubectl, endpoint: str, pod: str, *, delete_pod: bool = True) -> Iterator[None]:
    """Kill AIS pod `pod` for the duration of the block (see `nodes_down`)."""
    with nodes_down(kube, endpoint, [pod], delete_pod=delete_pod):
        yield


@contextlib.contextmanager
def nodes_down(kube: Kubectl, endpoint: str, pods: list[str], *, delete_pod: bool = True) -> Iterator[None]:
    """SIGKILL the aisnode process of each pod at once, as a crash would, then (delete_pod) force-delete the pods
    so that their StatefulSet creates them again; without delete_pod the kubelet restarts the container in place.
    Either way the node's new container waits until the block ends; then the cluster must be whole again."""
    holds = [AIS_DATA / pod / "hold" for pod in pods]
    for hold in holds:
        hold.touch()
    try:
        for pid in [node_pid(pod) for pod in pods]:
            os.kill(pid, signal.SIGKILL)
        if delete_pod:
            kube.run("-n", "ais", "delete", "pod", *pods, "--grace-period=0", "--force", "--wait=false")
        yield
    finally:
        for hold in holds:
            hold.unlink(missing_ok=True)
        deadline = time.monotonic() + 120
        while not cluster_healthy(endpoint) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert cluster_healthy(endpoint), f"AIS {', '.join(pods)} did not rejoin within 120 s"


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


def _versitygw_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"versitygw"):
                pids.append(int(proc.name))
    return pids


@contextlib.contextmanager
def s3_down(kube: Kubectl, s3_answers: Callable[[], bool]) -> Iterator[None]:
    """The local S3 server (versitygw, namespace s3) gone for the duration of the block: scaled to no replica and
    its process SIGKILLed at once (no graceful stop while the test races the converters). On exit it is scaled
    back and must answer again within 60 s."""
    kube.run("-n", "s3", "scale", "deploy/versitygw", "--replicas=0")
    try:
        for pid in _versitygw_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        yield
    finally:
        kube.run("-n", "s3", "scale", "deploy/versitygw", "--replicas=1")
        deadline = time.monotonic() + 60
        while not s3_answers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert s3_answers(), "the S3 server did not come back within 60 s"
