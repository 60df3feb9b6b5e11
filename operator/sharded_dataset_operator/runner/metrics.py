"""Prometheus metrics of the operator (`prometheus_client`), fed from what each reconcile pass observes.

Counters count what this operator process saw happen: a run is counted when a pass moves it to Ready or
Failed, never again afterwards (settled resources are not reconciled), so a restart does not count finished
runs a second time (counters restart from zero, as Prometheus expects). Gauges are recomputed from the last
status seen of every dataset. Labels are bounded: namespace and phase on the gauge, outcome and reason on the
run counter, the step on histograms; never a dataset name.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sharded_dataset_operator.core.times import epoch

PHASES = ("Pending", "Converting", "Shuffling", "Verifying", "Ready", "Failed")
SETTLED = ("Ready", "Failed")
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)


def _transition(status: dict[str, Any], type_: str) -> float | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return epoch(c.get("lastTransitionTime"))
    return None


def step_durations(status: dict[str, Any]) -> dict[str, float]:
    """Seconds per step of a Ready status, from its condition transition times (second precision)."""
    start, done = epoch(status.get("startTime")), epoch(status.get("completionTime"))
    converted, shuffled = _transition(status, "Converted"), _transition(status, "Shuffled")
    out: dict[str, float] = {}
    if start is not None and converted is not None:
        out["conversion"] = converted - start
    if converted is not None and shuffled is not None:
        out["dsort"] = shuffled - converted
    before_verification = shuffled if shuffled is not None else converted
    if before_verification is not None and done is not None:
        out["verification"] = done - before_verification
    if start is not None and done is not None:
        out["apply_to_ready"] = done - start
    return {k: max(0.0, v) for k, v in out.items()}


class Metrics:
    """Every metric of the operator, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.datasets = Gauge(
            "sharded_dataset_datasets",
            "ShardedDatasets by phase (last status seen)",
            ["namespace", "phase"],
            registry=r,
        )
        self.runs = Counter(
            "sharded_dataset_runs", "Runs finished by this operator, by outcome and reason", ["outcome", "reason"],
            registry=r,
        )  # fmt: skip
        self.durations = Histogram(
            "sharded_dataset_step_duration_seconds",
            "Duration of each step of runs that reached Ready (conversion includes planning)",
            ["step"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.samples = Counter(
            "sharded_dataset_samples", "Samples of runs that reached Ready: written or skipped", ["kind"], registry=r
        )
        self.output_bytes = Counter(
            "sharded_dataset_output_bytes", "Bytes of verified output shards of runs that reached Ready", registry=r
        )
        self.retries = Counter("sharded_dataset_retries", "Step retries (dSort attempts after a fault)", ["step"],
                               registry=r)  # fmt: skip
        self.retry_requests = Counter(
            "sharded_dataset_retry_requests", "Retry annotations handled on Failed runs", registry=r
        )
        self.passes = Counter("sharded_dataset_reconcile_passes", "Reconcile passes", registry=r)
        self.errors = Counter(
            "sharded_dataset_reconcile_errors", "Reconcile passes that hit a problem, by reason", ["reason"], registry=r
        )
        self.oldest = Gauge(
            "sharded_dataset_oldest_unsettled_age_seconds",
            "Age of the oldest run that is neither Ready nor Failed (0 when there is none)",
            registry=r,
        )
        self.oldest.set_function(self._oldest_age)
        self._known: dict[tuple[str, str], tuple[str, float | None]] = {}

    # ---------------------------------------------------------------- bookkeeping

    def seen(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """The dataset's current status (settled or not): phase gauge and oldest-run age."""
        phase = str(status.get("phase") or "Pending")
        start = None if phase in SETTLED else epoch(status.get("startTime"))
        self._known[(namespace, name)] = (phase, start)
        self._refresh()

    def forget(self, namespace: str, name: str) -> None:
        self._known.pop((namespace, name), None)
        self._refresh()

    def passed(self, previous: dict[str, Any], status: dict[str, Any], events: list[Any]) -> None:
        """One pass's outcome: counts a run when this pass settled it, and the retries it started."""
        self.passes.inc()
        for e in events:
            if getattr(e, "reason", "") == "ShuffleRetry":
                self.retries.labels(step="dsort").inc()
            if getattr(e, "reason", "") == "RetryRequested":
                self.retry_requests.inc()
        phase = status.get("phase")
        generation = status.get("observedGeneration")
        already = previous.get("phase") == phase and previous.get("observedGeneration") == generation
        if phase not in SETTLED or already:
            return
        reason = "Succeeded" if phase == "Ready" else str(_stalled_reason(status) or "Unknown")
        self.runs.labels(outcome=str(phase), reason=reason).inc()
        if phase == "Ready":
            for step, seconds in step_durations(status).items():
                self.durations.labels(step=step).observe(seconds)
            samples = status.get("samples") or {}
            self.samples.labels(kind="written").inc(int(samples.get("written") or 0))
            self.samples.labels(kind="skipped").inc(int(samples.get("skipped") or 0))
            self.output_bytes.inc(int((status.get("shards") or {}).get("bytes") or 0))

    def error(self, reason: str) -> None:
        self.errors.labels(reason=reason).inc()

    # ---------------------------------------------------------------- derived

    def _refresh(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for (namespace, _), (phase, _) in self._known.items():
            counts[(namespace, phase)] = counts.get((namespace, phase), 0) + 1
        self.datasets.clear()
        for (namespace, phase), n in counts.items():
            self.datasets.labels(namespace=namespace, phase=phase).set(n)

    def _oldest_age(self) -> float:
        starts = [start for _, start in self._known.values() if start is not None]
        return max(0.0, time.time() - min(starts)) if starts else 0.0


def _stalled_reason(status: dict[str, Any]) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return str(c.get("reason"))
    return None


METRICS = Metrics()
