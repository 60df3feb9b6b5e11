"""The operator's Prometheus endpoint, scraped from inside the cluster through its Service."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sharded_dataset_operator.clients.ais import Ais

from .conftest import OPERATOR_NS, Kube, unique, wait_until
from .test_cluster import pod, wait_pod_done
from .test_operator import dataset, raw_dataset, wait_phase, wait_ready

pytestmark = pytest.mark.e2e
URL = f"http://sharded-dataset-operator-metrics.{OPERATOR_NS}.svc:8000/metrics"
_scrapes = itertools.count()

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(kube: Kube, namespace: str) -> Samples:
    """GET /metrics from a pod (cluster DNS, the Service, kube-proxy), parsed with prometheus_client's parser."""
    code = f"import urllib.request; print(urllib.request.urlopen({URL!r}, timeout=10).read().decode())"
    for tries_left in (2, 1, 0):  # right after a rollout the Service may route to the old pod ("No route to host")
        name = f"scrape-{next(_scrapes)}"
        kube.apply(pod(name, namespace, ["python", "-c", code]))
        if wait_pod_done(kube, namespace, name) == "Succeeded":
            break
        assert tries_left, kube.run("logs", "-n", namespace, name, check=False)
        time.sleep(5)
    text = kube.run("logs", "-n", namespace, name)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_runs_are_counted_once_with_outcome_durations_and_samples(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    raw = raw_dataset(ais, cluster_env, 200)
    out = unique("metrics")
    before = scrape(kube, namespace)

    kube.apply(dataset("counted", namespace, raw.bucket, out, conversion={"workers": 2}))
    st = wait_ready(kube, namespace, "counted")["status"]
    after = scrape(kube, namespace)
    ready = {"outcome": "Ready", "reason": "Succeeded"}
    assert (
        value(after, "sharded_dataset_runs_total", **ready) == value(before, "sharded_dataset_runs_total", **ready) + 1
    )
    written = value(after, "sharded_dataset_samples_total", kind="written")
    assert written - value(before, "sharded_dataset_samples_total", kind="written") == st["samples"]["written"]
    for step in ("conversion", "dsort", "verification", "apply_to_ready"):
        count = "sharded_dataset_step_duration_seconds_count"
        assert value(after, count, step=step) == value(before, count, step=step) + 1, step
    assert value(after, "sharded_dataset_datasets", namespace=namespace, phase="Ready") == 1
    assert value(after, "sharded_dataset_reconcile_passes_total") > value(
        before, "sharded_dataset_reconcile_passes_total"
    )

    # a run that fails is counted with its reason
    nothing = dataset(
        "empty",
        namespace,
        raw.bucket,
        out,
        output={"bucket": out, "prefix": "empty-", "maxSamplesPerShard": 10},
        shuffle={"seed": "1", "outputPrefix": "empty-shuffled-"},
    )  # its own stable index: a second dataset on the same index would be refused (OutputConflict)
    nothing["spec"]["samples"] = {"fields": [{"pattern": "nowhere/*.bin", "name": "bin"}]}
    kube.apply(nothing)
    failed = wait_phase(kube, namespace, "empty", ("Failed", "Ready"))
    assert failed["status"]["phase"] == "Failed"
    after_fail = scrape(kube, namespace)
    no_samples = {"outcome": "Failed", "reason": "NoSamples"}
    assert value(after_fail, "sharded_dataset_runs_total", **no_samples) == (
        value(before, "sharded_dataset_runs_total", **no_samples) + 1
    )
    assert value(after_fail, "sharded_dataset_datasets", namespace=namespace, phase="Failed") == 1

    # after a restart the finished runs are not counted again (the gauges come back from the statuses)
    kube.run("-n", OPERATOR_NS, "rollout", "restart", "deployment/sharded-dataset-operator")
    kube.run("-n", OPERATOR_NS, "rollout", "status", "deployment/sharded-dataset-operator", "--timeout=180s")

    def restarted() -> Samples | None:
        try:
            got = scrape(kube, namespace)
        except AssertionError:  # the Service may still route to the old pod for a moment ("No route to host")
            return None
        seen = value(got, "sharded_dataset_datasets", namespace=namespace, phase="Ready")
        return (
            got if seen == 1 and value(got, "sharded_dataset_datasets", namespace=namespace, phase="Failed") else None
        )

    fresh = wait_until(restarted, 120, "the restarted operator to see both datasets", interval=2)
    assert value(fresh, "sharded_dataset_runs_total", **ready) == 0
    assert value(fresh, "sharded_dataset_runs_total", **no_samples) == 0
    assert value(fresh, "sharded_dataset_samples_total", kind="written") == 0
