"""spec.source.ais.prefetch: one AIS prefetch job between planning and conversion; the converters read warm
after it finished, cold after it failed (never failing the build); the record carried over passes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sharded_dataset_operator.core.actions import DONE, NOT_STARTED, CreateJob, Outcome, StartPrefetch
from sharded_dataset_operator.core.builders import CONFIG_ENV
from sharded_dataset_operator.core.decision import after_actions, decide
from sharded_dataset_operator.core.model import AisJob, JobState
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.spec import SpecError
from sharded_dataset_operator.core.status import Phase
from tests.unit.test_reconcile import DEFAULTS, NOW, OWNER, plan, spec

LATER = "2026-11-23T10:00:42Z"


def s3_spec(prefetch: bool = True) -> Any:
    return spec(source={"ais": {"bucket": "raw", "provider": "aws", "prefix": "d/", "prefetch": prefetch}})


def converting(record: dict[str, Any] | None, **over: Any) -> Observed:
    previous = {"observedGeneration": 3, "phase": "Converting", "prefetch": record}
    return Observed(previous=previous, plan=plan(9), **over)


def converter_config(d: Any) -> dict[str, Any]:
    job = next(a for a in d.actions if isinstance(a, CreateJob))
    env = job.manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    config: dict[str, Any] = json.loads(next(e["value"] for e in env if e["name"] == CONFIG_ENV))
    return config


def test_a_plan_starts_the_prefetch_and_the_job_id_is_recorded() -> None:
    d = decide(s3_spec(), OWNER, Observed(previous={"observedGeneration": 3}, plan=plan(9)), DEFAULTS, NOW)
    start = [a for a in d.actions if isinstance(a, StartPrefetch)]
    assert start == [StartPrefetch("raw", "aws", "d/")] and not any(isinstance(a, CreateJob) for a in d.actions)
    assert d.status.phase == Phase.CONVERTING and d.status.reason == "Prefetching"
    d = after_actions(d, [Outcome(start[0], DONE, result="pf-1")])
    assert d.status.prefetch == {"startedAt": NOW, "jobId": "pf-1"}


def test_running_then_finished_prefetch_starts_converters_that_read_warm() -> None:
    record = {"startedAt": NOW, "jobId": "pf-1"}
    running = decide(s3_spec(), OWNER, converting(record, prefetch=AisJob("pf-1", False, False)), DEFAULTS, LATER)
    assert running.status.reason == "Prefetching" and not running.actions
    done = decide(s3_spec(), OWNER, converting(record, prefetch=AisJob("pf-1", True, False)), DEFAULTS, LATER)
    assert done.status.prefetch == {**record, "finishedAt": LATER, "seconds": 42.0}
    assert converter_config(done)["source"]["warm"] is True
    assert "Prefetched" in [e.reason for e in done.events]


@pytest.mark.parametrize(
    ("job", "why"),
    [(AisJob("pf-1", False, True, "aborted by a user"), "aborted by a user"), (None, "no longer knows the job")],
)
def test_a_failed_or_forgotten_prefetch_converts_cold(job: AisJob | None, why: str) -> None:
    record = {"startedAt": NOW, "jobId": "pf-1"}
    d = decide(s3_spec(), OWNER, converting(record, prefetch=job), DEFAULTS, LATER)
    assert d.status.prefetch is not None and why in d.status.prefetch["failed"]
    assert "warm" not in converter_config(d)["source"] and d.status.phase == Phase.CONVERTING
    assert "PrefetchFailed" in [e.reason for e in d.events]


def test_a_prefetch_ais_did_not_start_is_a_warning_not_a_failure() -> None:
    d = decide(s3_spec(), OWNER, Observed(previous={"observedGeneration": 3}, plan=plan(9)), DEFAULTS, NOW)
    start = next(a for a in d.actions if isinstance(a, StartPrefetch))
    d = after_actions(d, [Outcome(start, NOT_STARTED, error="HTTP 500", at=NOW)])
    assert d.status.phase == Phase.CONVERTING and d.status.prefetch is not None
    assert "not started: HTTP 500" in d.status.prefetch["failed"]
    again = decide(s3_spec(), OWNER, converting(d.status.prefetch), DEFAULTS, LATER)
    assert "warm" not in converter_config(again)["source"]


def test_the_record_stays_while_converting_and_no_prefetch_without_the_flag() -> None:
    record = {"startedAt": NOW, "jobId": "pf-1", "finishedAt": LATER, "seconds": 42.0}
    job = JobState("pets-convert-g3", 3, active=2)
    d = decide(s3_spec(), OWNER, converting(record, job=job), DEFAULTS, LATER)
    assert d.status.prefetch == record and not d.actions
    plain = decide(s3_spec(prefetch=False), OWNER, Observed(previous={}, plan=plan(9)), DEFAULTS, NOW)
    assert not any(isinstance(a, StartPrefetch) for a in plain.actions) and plain.status.prefetch is None
    with pytest.raises(SpecError, match="only a remote bucket"):
        spec(source={"ais": {"bucket": "raw", "prefetch": True}})


def test_every_prefetch_status_field_is_in_the_crd() -> None:
    from tests.unit.test_crd_status import status_schema, unknown

    record = {"startedAt": NOW, "jobId": "pf-1", "finishedAt": LATER, "seconds": 42.0, "failed": "why"}
    assert unknown({"prefetch": record}, status_schema(), "status") == []
