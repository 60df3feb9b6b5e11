"""The Helm chart: lint, RBAC modes, values validation and the pod's restricted security context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharded_dataset_operator.runner import settings

from .conftest import CHART, NAMESPACE, Helm, render

NAMESPACED_RESOURCES = {"shardeddatasets", "shardeddatasets/status", "jobs", "pods", "persistentvolumeclaims"}
NAMESPACED_RESOURCES |= {"secrets", "events"}


def _values(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _resources(role: dict[str, Any]) -> set[str]:
    return {r for rule in role["rules"] for r in rule["resources"]}


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_lint(helm: Helm) -> None:
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout


def test_lint_with_watched_namespaces(helm: Helm) -> None:
    helm("lint", "--strict", str(CHART), "--set", "watchNamespaces={a,b}")


def test_all_namespaces_gets_cluster_wide_rbac(helm: Helm) -> None:
    objs = render(helm)
    assert not _kind(objs, "Role") and not _kind(objs, "RoleBinding")
    (cluster_role,) = _kind(objs, "ClusterRole")
    assert _resources(cluster_role) >= NAMESPACED_RESOURCES
    (binding,) = _kind(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sharded-dataset-operator", "namespace": NAMESPACE}
    ]
    assert _env(_kind(objs, "Deployment")[0])["SDS_WATCH_NAMESPACES"] == ""


def test_watched_namespaces_get_roles(helm: Helm) -> None:
    objs = render(helm, "--set", "watchNamespaces={a,b}")
    roles = {r["metadata"]["namespace"]: r for r in _kind(objs, "Role")}
    assert sorted(roles) == ["a", "b"]
    for role in roles.values():
        assert _resources(role) == NAMESPACED_RESOURCES
    bindings = {b["metadata"]["namespace"]: b for b in _kind(objs, "RoleBinding")}
    assert sorted(bindings) == ["a", "b"]
    for ns, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "sharded-dataset-operator",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "sharded-dataset-operator", "namespace": NAMESPACE}
        ]
        assert binding["metadata"]["name"] == roles[ns]["metadata"]["name"]
    (cluster_role,) = _kind(objs, "ClusterRole")
    assert _resources(cluster_role) == {"customresourcedefinitions", "namespaces"}
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    assert _env(_kind(objs, "Deployment")[0])["SDS_WATCH_NAMESPACES"] == "a,b"


def test_rbac_and_serviceaccount_can_be_disabled(helm: Helm) -> None:
    objs = render(
        helm, "--set", "rbac.create=false", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops"
    )
    assert {o["kind"] for o in objs} == {"CustomResourceDefinition", "Deployment", "Service"}  # Service: metrics
    assert _kind(objs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_crd_can_be_left_out(helm: Helm) -> None:
    assert not _kind(render(helm, "--set", "crds.install=false"), "CustomResourceDefinition")


def test_crd_is_kept_on_uninstall(helm: Helm) -> None:
    (crd,) = _kind(render(helm), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--set", "logLevel=LOUD"], "/logLevel"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "converter.image.pullPolicy=Sometimes"], "/converter/image/pullPolicy"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "image.unknownKey=1"], "unknownKey"),
        (["--set", "watchNamespaces={Not_A_Namespace}"], "/watchNamespaces/0"),
        (["--set", "ais.endpoint=ftp://ais"], "/ais/endpoint"),
        (["--set", "resources.requests.cpu=lots"], "/resources/requests/cpu"),
        (["--set", "crds.install=maybe"], "/crds/install"),
        (["--set", "tolerations[0].operator=Maybe"], "/tolerations/0/operator"),
        (["--set", "image.tag=has space"], "/image/tag"),
    ],
)
def test_bad_values_fail_naming_the_field(helm: Helm, args: list[str], field: str) -> None:
    proc = helm("template", "x", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"helm template {args} unexpectedly succeeded"
    assert field in proc.stderr, proc.stderr


def test_serviceaccount_name_required_when_not_created(helm: Helm) -> None:
    proc = helm("template", "x", str(CHART), "--set", "serviceAccount.create=false", check=False)
    assert proc.returncode != 0
    assert "serviceAccount.name" in proc.stderr


def test_restricted_pod(helm: Helm) -> None:
    (deployment,) = _kind(render(helm), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]]
    (container,) = pod["containers"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080
    assert _env(deployment)["SDS_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def test_labels(helm: Helm) -> None:
    for obj in render(helm):
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] == "CustomResourceDefinition":
            continue  # byte-for-byte manifests/crd
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version"):
            assert key in labels, (obj["kind"], key)
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "sharded-dataset-operator-0.1.0"


def test_operator_and_converter_settings_reach_the_operator(helm: Helm, tmp_path: Path) -> None:
    values = {
        "image": {"repository": "registry.example.com/sds", "tag": "1.0.0", "pullPolicy": "Always"},
        "ais": {"endpoint": "https://ais.example.com:51080"},
        "logLevel": "DEBUG",
        "converter": {
            "image": {"tag": "1.0.1"},
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "nodeSelector": {"pool": "system"},
        "podAnnotations": {"example.com/team": "ml"},
    }
    (deployment,) = _kind(render(helm, "-f", _values(tmp_path, values)), "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/team": "ml"}
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["containers"][0]["image"] == "registry.example.com/sds:1.0.0"
    env = _env(deployment)
    assert env["SDS_CONVERTER_IMAGE"] == "registry.example.com/sds:1.0.1"
    assert env["SDS_CONVERTER_PULL_POLICY"] == "Always"
    assert json.loads(env["SDS_CONVERTER_RESOURCES"]) == values["converter"]["resources"]
    s = settings.from_env(env)
    assert s.ais_endpoint == "https://ais.example.com:51080"
    assert s.log_level == "DEBUG"
    assert s.converter_image == "registry.example.com/sds:1.0.1"
    assert s.converter_resources == values["converter"]["resources"]
    assert s.converter_node_selector == {"pool": "cpu"}
    assert s.converter_tolerations == values["converter"]["tolerations"]


def test_default_converter_settings(helm: Helm) -> None:
    (deployment,) = _kind(render(helm), "Deployment")
    s = settings.from_env(_env(deployment))
    assert s.converter_image == "localhost/sharded-dataset-operator:dev"
    assert s.converter_pull_policy == "IfNotPresent"
    assert (s.converter_resources, s.converter_node_selector, s.converter_tolerations) == ({}, {}, [])


def test_metrics_service_and_service_monitor(helm: Helm, tmp_path: Path) -> None:
    objs = render(helm)
    (service,) = [o for o in _kind(objs, "Service") if o["metadata"]["name"].endswith("-metrics")]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}]
    (dep,) = _kind(objs, "Deployment")
    assert _env(dep)["SDS_METRICS_PORT"] == "8000"
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": 8000, "protocol": "TCP"} in ports
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert not _kind(objs, "ServiceMonitor")
    assert "prometheus.io/scrape" not in (dep["spec"]["template"]["metadata"].get("annotations") or {})

    on = render(helm, "-f", _values(tmp_path, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {
        "release": "kube-prometheus"}}, "podAnnotations": True}}))  # fmt: skip
    (monitor,) = _kind(on, "ServiceMonitor")
    (service,) = [o for o in _kind(on, "Service") if o["metadata"]["name"].endswith("-metrics")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    (dep,) = _kind(on, "Deployment")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }

    off = render(helm, "--set", "metrics.port=0", "--set", "metrics.serviceMonitor.enabled=true")
    assert not [o for o in off if o["kind"] in ("Service", "ServiceMonitor")]
    (dep,) = _kind(off, "Deployment")
    assert _env(dep)["SDS_METRICS_PORT"] == "0"
    assert settings.from_env({"SDS_METRICS_PORT": "0"}).metrics_port == 0
