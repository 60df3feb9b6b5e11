"""Shared helpers for unit tests that run the pinned, locally built helm (hack/build-binaries.sh helm)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sharded-dataset-operator"
RELEASE = "sharded-dataset-operator"
NAMESPACE = "sharded-dataset-operator"

Helm = Callable[..., subprocess.CompletedProcess[str]]


def helm_path() -> Path:
    """$HELM_BIN/helm as hack/lib/common.sh defines it (the cache directory of the pinned helm version)."""
    out = subprocess.run(
        ["bash", "-c", '. hack/lib/common.sh && printf %s "$HELM_BIN"'],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(out) / "helm"


@pytest.fixture(scope="session")
def helm() -> Helm:
    """Run the cached helm; skip when it is not built, unless SDS_REQUIRE_HELM is set (then fail)."""
    path = helm_path()
    if not os.access(path, os.X_OK):
        msg = f"{path} not found: run hack/build-binaries.sh helm"
        if os.environ.get("SDS_REQUIRE_HELM"):
            pytest.fail(msg + " (SDS_REQUIRE_HELM is set)")
        pytest.skip(msg)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(path), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def render(helm: Helm, *args: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """`helm template` of the chart, as a list of objects."""
    out = helm("template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]
