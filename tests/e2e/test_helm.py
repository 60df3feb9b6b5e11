"""Installing with Helm: install, a dataset reaches Ready, upgrade mid-flight, least privilege, uninstall.

While this module runs, the operator installed by `make deploy` is scaled to zero so that exactly one operator
reconciles; the Helm release is scoped to the test namespace (watchNamespaces) and takes over the CRD for the
duration (then `kubectl apply` takes it back).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import OPERATOR_NS, REPO, Kube, unique, wait_until
from .test_operator import dataset, raw_dataset, wait_phase, wait_ready

pytestmark = pytest.mark.e2e
RELEASE, RELEASE_NS = "sdo", "sdo-helm"
CHART = str(REPO / "charts/sharded-dataset-operator")


def helm(kube: Kube, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["helm", *args], capture_output=True, text=True, env=kube.env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {p.stderr}{p.stdout}")
    return p


@pytest.fixture(scope="module")
def watched(kube: Kube) -> Iterator[str]:
    ns = unique("e2e-helm")
    kube.run("create", "namespace", ns)
    wait_until(lambda: kube.get("serviceaccount", "default", ns) is not None, 60, "default serviceaccount")
    yield ns
    kube.run("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(kube: Kube, watched: str, operator: Any) -> Iterator[str]:
    kube.run("-n", OPERATOR_NS, "scale", "deployment/sharded-dataset-operator", "--replicas=0")
    wait_until(lambda: not kube.list("pods", OPERATOR_NS, "app.kubernetes.io/component=operator"), 120, "scale 0")
    try:
        helm(kube, "install", RELEASE, CHART, "-n", RELEASE_NS, "--create-namespace", "--take-ownership",
             "--force-conflicts", "--set", f"watchNamespaces={{{watched}}}", "--wait", "--timeout", "5m")  # fmt: skip
        yield RELEASE
    finally:
        helm(kube, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", check=False)
        kube.run("delete", "namespace", RELEASE_NS, "--wait=false", check=False)
        # hand the CRD and the cluster back to the plain install
        kube.run("apply", "--server-side", "--force-conflicts", "-f",
                 str(REPO / "manifests/crd/shardeddatasets.shardeddataset.dev.yaml"))  # fmt: skip
        kube.run("-n", OPERATOR_NS, "scale", "deployment/sharded-dataset-operator", "--replicas=1")
        kube.run("-n", OPERATOR_NS, "rollout", "status", "deployment/sharded-dataset-operator", "--timeout=180s")


def operator_sa(kube: Kube) -> str:
    deps = kube.list("deployments", RELEASE_NS)
    assert len(deps) == 1
    return f"system:serviceaccount:{RELEASE_NS}:{deps[0]['spec']['template']['spec']['serviceAccountName']}"


def can_i(kube: Kube, who: str, verb: str, resource: str, namespace: str | None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={who}"] + (["-n", namespace] if namespace else [])
    p = kube.try_run(*args)
    return p.stdout.strip() == "yes"


def test_rendered_manifests_pass_server_side_dry_run(kube: Kube) -> None:
    rendered = helm(kube, "template", RELEASE, CHART, "-n", "default").stdout
    p = kube.try_run("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-", input=rendered)
    assert p.returncode == 0, p.stderr
    plain = kube.try_run(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests")
    )
    assert plain.returncode == 0, plain.stderr


def test_helm_install_reconciles_and_upgrade_resumes_work_in_progress(
    kube: Kube, release: str, watched: str, ais: Any, cluster_env: dict[str, str]
) -> None:
    raw = raw_dataset(ais, cluster_env, 600)
    out = unique("helm")
    kube.apply(dataset("via-helm", watched, raw.bucket, out, conversion={"workers": 2},
                       output={"bucket": out, "prefix": "h-", "maxSamplesPerShard": 40}))  # fmt: skip
    wait_phase(kube, watched, "via-helm", ("Converting", "Shuffling"), timeout=120)
    before = kube.list("pods", RELEASE_NS)[0]["metadata"]["uid"]
    helm(kube, "upgrade", RELEASE, CHART, "-n", RELEASE_NS, "--reuse-values", "--set", "logLevel=DEBUG",
         "--wait", "--timeout", "5m")  # fmt: skip
    pods = [p for p in kube.list("pods", RELEASE_NS) if not p["metadata"].get("deletionTimestamp")]
    assert pods and pods[0]["metadata"]["uid"] != before, "upgrade did not roll the operator"
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["SDS_LOG_LEVEL"] == "DEBUG"
    obj = wait_ready(kube, watched, "via-helm")
    assert obj["status"]["samples"]["written"] == len(raw.manifest["complete"])
    # kubectl wait works on the kind (kstatus-style Ready condition)
    kube.run("wait", "--for=condition=Ready", "sds/via-helm", "-n", watched, "--timeout=10s")


def test_operator_service_account_is_least_privilege(kube: Kube, release: str, watched: str) -> None:
    sa = operator_sa(kube)
    sds = "shardeddatasets.shardeddataset.dev"
    allowed = [("get", "secrets", watched), ("create", "jobs.batch", watched), ("patch", sds, watched),
               ("patch", f"{sds}/status", watched), ("create", "events", watched),
               ("list", "customresourcedefinitions.apiextensions.k8s.io", None)]  # fmt: skip
    denied = [("get", "secrets", "default"), ("get", "secrets", "kube-system"), ("list", "secrets", watched),
              ("create", "jobs.batch", "default"), ("delete", "shardeddatasets.shardeddataset.dev", watched),
              ("create", "pods", watched), ("delete", "nodes", None), ("create", "clusterrolebindings", None),
              ("update", "customresourcedefinitions.apiextensions.k8s.io", None),
              ("patch", "shardeddatasets.shardeddataset.dev", "default")]  # fmt: skip
    for verb, res, ns in allowed:
        assert can_i(kube, sa, verb, res, ns), f"operator cannot {verb} {res} in {ns}"
    for verb, res, ns in denied:
        assert not can_i(kube, sa, verb, res, ns), f"operator may {verb} {res} in {ns}"


def test_helm_uninstall_keeps_the_crd_and_the_datasets(kube: Kube, release: str, watched: str) -> None:
    assert kube.list("sds", watched), "expected the dataset of the install test"
    helm(kube, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait")
    assert kube.get("crd", "shardeddatasets.shardeddataset.dev") is not None
    names = [o["metadata"]["name"] for o in kube.list("sds", watched)]
    assert "via-helm" in names
    assert not [d for d in kube.list("deployments", RELEASE_NS)]
    status = json.loads(kube.run("get", "sds", "via-helm", "-n", watched, "-o", "json"))["status"]
    assert status["phase"] == "Ready"
