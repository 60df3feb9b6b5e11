"""The plain install under manifests/ is generated from the Helm chart: check it is current.

manifests/crd/ is the CRD's source of truth; the chart carries a byte-identical copy (files/crd.yaml) that its
template renders with `helm.sh/resource-policy: keep` added. manifests/operator.yaml is rendered by
hack/render-manifests.sh with the chart's default values.
"""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import yaml

from .conftest import CHART, REPO, Helm, helm_path, render

CRD_SOURCE = REPO / "manifests" / "crd" / "shardeddatasets.shardeddataset.dev.yaml"
CRD_COPY = CHART / "files" / "crd.yaml"
KEEP = "  annotations:\n    helm.sh/resource-policy: keep\n"


def _diff(expected: str, actual: str, a: str, b: str) -> str:
    return "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), a, b))


def test_chart_crd_copy_is_byte_identical() -> None:
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        f"{CRD_COPY.relative_to(REPO)} differs from {CRD_SOURCE.relative_to(REPO)}: run hack/render-manifests.sh"
    )


def test_operator_manifest_is_current(helm: Helm, tmp_path: Path) -> None:
    # the fixture has skipped/failed already when helm is missing, so the script will not try to build it
    assert helm_path().exists()
    subprocess.run([str(REPO / "hack" / "render-manifests.sh"), str(tmp_path)], check=True, capture_output=True)
    committed = (REPO / "manifests" / "operator.yaml").read_text()
    rendered = (tmp_path / "operator.yaml").read_text()
    assert rendered == committed, "manifests/operator.yaml is stale; run hack/render-manifests.sh\n" + _diff(
        committed, rendered, "manifests/operator.yaml", "rendered"
    )


def test_rendered_crd_is_the_source_plus_keep(helm: Helm) -> None:
    out = helm("template", "sharded-dataset-operator", str(CHART)).stdout
    docs = out.split("\n---\n")
    crd_docs = [d for d in docs if "/templates/crds/" in d.split("\n", 2)[0]]
    assert len(crd_docs) == 1, "expected exactly one document from templates/crds/"
    body = crd_docs[0].split("\n", 1)[1]  # without the "# Source:" line
    assert KEEP in body
    source = CRD_SOURCE.read_text()
    assert body.replace(KEEP, "", 1).rstrip("\n") == source.rstrip("\n"), _diff(
        source, body.replace(KEEP, "", 1), "manifests/crd", "rendered"
    )


def test_rendered_default_objects(helm: Helm) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render(helm))
    assert kinds == sorted(
        [
            ("ClusterRole", "sharded-dataset-operator"),
            ("ClusterRoleBinding", "sharded-dataset-operator"),
            ("CustomResourceDefinition", "shardeddatasets.shardeddataset.dev"),
            ("Deployment", "sharded-dataset-operator"),
            ("Service", "sharded-dataset-operator-metrics"),
            ("ServiceAccount", "sharded-dataset-operator"),
        ]
    )


def test_kustomization_lists_every_manifest() -> None:
    manifests = REPO / "manifests"
    kustomization = yaml.safe_load((manifests / "Kustomization").read_text())
    listed = sorted(kustomization["resources"])
    on_disk = sorted(str(p.relative_to(manifests)) for p in manifests.rglob("*.yaml"))
    assert listed == on_disk
    # `kubectl apply -f manifests/ -R` reads only *.yaml/*.yml/*.json files: the Kustomization must not be one
    assert not list(manifests.glob("kustomization.y*ml"))
