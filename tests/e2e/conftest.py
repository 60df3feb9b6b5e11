"""Fixtures for tests against the real local cluster (hack/cluster.sh): kube-apiserver + etcd, controllers, a
kubelet on containerd running the project image, and AIS with dSort.

With SDS_E2E=1 (what `make test` sets) a missing cluster is an error; otherwise these tests are skipped when
no healthy cluster is found.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharded_dataset_operator.clients.ais import Ais

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NS = "sharded-dataset-operator"


def _cluster_env() -> dict[str, str]:
    out = subprocess.run([str(REPO / "hack/cluster.sh"), "env"], capture_output=True, text=True, check=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            env[k] = v.replace("$PATH", os.environ.get("PATH", ""))
    return env


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    env = _cluster_env()
    healthy = subprocess.run([str(REPO / "hack/cluster.sh"), "status"], capture_output=True, text=True)
    if healthy.returncode != 0:
        if os.environ.get("SDS_E2E") == "1":
            pytest.fail(f"local cluster is not healthy (make cluster-up):\n{healthy.stdout}")
        pytest.skip("no healthy local cluster (run `make cluster-up`, or set SDS_E2E=1 to require it)")
    os.environ.update(env)
    return env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed e2e test carries the operator's log (and its previous container's, after a crash) in its
    report: CI tears the cluster down right after, and the log is what explains a failure there.
    """
    report = yield
    if report.when != "call" or not report.failed or "cluster_env" not in getattr(item, "fixturenames", ()):
        return report
    env = {**os.environ, **_cluster_env()}
    for which in ("--previous", ""):
        args = ["kubectl", "-n", OPERATOR_NS, "logs", "deployment/sharded-dataset-operator", "--tail=300"]
        p = subprocess.run([*args, *([which] if which else [])], capture_output=True, text=True, env=env)
        report.sections.append((f"operator log {which or '(current)'}", p.stdout or p.stderr))
    return report


class Kube:
    """kubectl against the local cluster, with JSON/YAML helpers."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        p = subprocess.run(
            ["kubectl", *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
        return p.stdout + (p.stderr if not check else "")

    def try_run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=self.env)

    def apply(self, obj: dict[str, Any] | str, *extra: str) -> str:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.run("apply", *extra, "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        p = self.try_run(*args)
        if p.returncode != 0:
            if "NotFound" in p.stderr or "not found" in p.stderr:
                return None
            raise AssertionError(p.stderr)
        obj: dict[str, Any] = json.loads(p.stdout)
        return obj

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = json.loads(self.run(*args))["items"]
        return items

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.list("events", namespace) if e.get("involvedObject", {}).get("name") == name]


@pytest.fixture(scope="session")
def kube(cluster_env: dict[str, str]) -> Kube:
    return Kube(cluster_env)


@pytest.fixture(scope="session")
def ais(cluster_env: dict[str, str]) -> Ais:
    return Ais(cluster_env["AIS_ENDPOINT"])


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().replace("_", "-"))[:30].strip("-")
    name = f"e2e-{slug}-{uuid.uuid4().hex[:5]}"
    kube.run("create", "namespace", name)
    wait_until(lambda: kube.get("serviceaccount", "default", name) is not None, 60, "default serviceaccount")
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(kube: Kube) -> dict[str, Any]:
    """The operator Deployment installed by `make deploy`, available."""
    dep = kube.get("deployment", "sharded-dataset-operator", OPERATOR_NS)
    if dep is None:
        pytest.fail("operator not deployed (make deploy)")
    kube.run("-n", OPERATOR_NS, "rollout", "status", "deployment/sharded-dataset-operator", "--timeout=180s")
    return dep


def wait_until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
