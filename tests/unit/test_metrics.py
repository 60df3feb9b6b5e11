"""Metric bookkeeping: counted once per settled run, durations from the status, bounded labels."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sharded_dataset_operator.core.actions import Event
from sharded_dataset_operator.runner.metrics import Metrics, step_durations


def cond(type_: str, when: str, status: str = "True", reason: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "lastTransitionTime": when}


READY = {
    "phase": "Ready",
    "observedGeneration": 1,
    "startTime": "2026-11-25T10:00:00Z",
    "completionTime": "2026-11-25T10:02:00Z",
    "conditions": [
        cond("Ready", "2026-11-25T10:02:00Z"),
        cond("Converted", "2026-11-25T10:00:40Z"),
        cond("Shuffled", "2026-11-25T10:01:50Z"),
        cond("Verified", "2026-11-25T10:02:00Z"),
    ],
    "samples": {"written": 90, "skipped": 10},
    "shards": {"bytes": 12345},
}
FAILED = {
    "phase": "Failed",
    "observedGeneration": 1,
    "conditions": [cond("Stalled", "2026-11-25T10:01:00Z", reason="ShuffleFailed")],
}


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition text, as Prometheus would."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_run_is_counted_once_when_a_pass_settles_it() -> None:
    m = Metrics()
    converting = {"phase": "Converting", "observedGeneration": 1, "startTime": "2026-11-25T10:00:00Z"}
    m.passed({}, converting, [])
    m.passed(converting, READY, [Event("Normal", "Ready", "done")])
    m.passed(READY, READY, [])  # the same state seen again (e.g. after an operator restart): not counted
    got = samples(m)
    assert got[("sharded_dataset_runs_total", (("outcome", "Ready"), ("reason", "Succeeded")))] == 1
    assert got[("sharded_dataset_samples_total", (("kind", "written"),))] == 90
    assert got[("sharded_dataset_samples_total", (("kind", "skipped"),))] == 10
    assert got[("sharded_dataset_output_bytes_total", ())] == 12345
    assert got[("sharded_dataset_step_duration_seconds_count", (("step", "dsort"),))] == 1
    assert got[("sharded_dataset_step_duration_seconds_sum", (("step", "apply_to_ready"),))] == 120
    assert got[("sharded_dataset_reconcile_passes_total", ())] == 3
    # a new generation that fails is a new run, counted with its reason
    m.passed({**READY, "observedGeneration": 1}, {**FAILED, "observedGeneration": 2}, [])
    assert samples(m)[("sharded_dataset_runs_total", (("outcome", "Failed"), ("reason", "ShuffleFailed")))] == 1


def test_step_durations_from_condition_times() -> None:
    assert step_durations(READY) == {"conversion": 40, "dsort": 70, "verification": 10, "apply_to_ready": 120}
    no_shuffle = {**READY, "conditions": [c for c in READY["conditions"] if c["type"] != "Shuffled"]}
    assert step_durations(no_shuffle) == {"conversion": 40, "verification": 80, "apply_to_ready": 120}


def test_phase_gauge_oldest_age_retries_and_errors() -> None:
    m = Metrics()
    m.seen("a", "x", {"phase": "Converting", "startTime": "2020-01-01T00:00:00Z"})
    m.seen("a", "y", {"phase": "Ready"})
    m.seen("b", "z", {"phase": "Ready"})
    m.passed({}, {"phase": "Shuffling"}, [Event("Warning", "ShuffleRetry", "dSort attempt 2/3")])
    m.error("AISUnavailable")
    got = samples(m)
    assert got[("sharded_dataset_datasets", (("namespace", "a"), ("phase", "Converting")))] == 1
    assert got[("sharded_dataset_datasets", (("namespace", "b"), ("phase", "Ready")))] == 1
    assert got[("sharded_dataset_oldest_unsettled_age_seconds", ())] > 365 * 86400
    assert got[("sharded_dataset_retries_total", (("step", "dsort"),))] == 1
    assert got[("sharded_dataset_reconcile_errors_total", (("reason", "AISUnavailable"),))] == 1
    m.seen("a", "x", {"phase": "Ready"})
    m.forget("b", "z")
    got = samples(m)
    assert got[("sharded_dataset_oldest_unsettled_age_seconds", ())] == 0
    assert ("sharded_dataset_datasets", (("namespace", "a"), ("phase", "Converting"))) not in got
    assert ("sharded_dataset_datasets", (("namespace", "b"), ("phase", "Ready"))) not in got
    assert got[("sharded_dataset_datasets", (("namespace", "a"), ("phase", "Ready")))] == 2


def test_dashboard_and_alert_rules_use_only_metrics_that_exist() -> None:
    import json
    import re
    from pathlib import Path

    import yaml

    docs = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
    m = Metrics()
    m.passed({}, READY, [Event("Warning", "ShuffleRetry", "x")])
    m.seen("ns", "a", READY)
    m.error("AISUnavailable")  # every labelled family has a sample now
    exposed = {s.name for f in text_string_to_metric_families(generate_latest(m.registry).decode()) for s in f.samples}
    exposed |= {"sharded_dataset_step_duration_seconds_bucket", "up"}
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((docs / "prometheus-rules.yaml").read_text())
    exprs += [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"\b(sharded_dataset_[a-z_]+|up)\b", e)}
    assert used and used <= exposed, used - exposed
