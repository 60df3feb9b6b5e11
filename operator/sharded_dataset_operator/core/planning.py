"""Phase 1, planning: one planner pod lists the source and writes the plan."""

from __future__ import annotations

from sharded_dataset_operator.core import builders, naming
from sharded_dataset_operator.core.actions import CreateJob, Decision, EnsureBucket
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.spec import DatasetSpec
from sharded_dataset_operator.core.state import Pass, examples, stalled
from sharded_dataset_operator.core.status import CONVERTED, Phase, StepState
from sharded_dataset_operator.core.versions import IndexInfo


def step(p: Pass) -> Decision | None:
    """One pod lists the source and writes the plan."""
    obs, st = p.obs, p.st
    placement = builders.placement_problem(p.spec, p.defaults)
    if placement is not None:
        return p.failed(None, "PlacementNotAllowed", placement)
    if p.plan is not None:
        if int(p.plan.get("samples") or 0) == 0:  # never published, shuffle or not (promise P4)
            msg = "no complete samples: " + (examples(p.plan) or "the source is empty")
            if p.obs.published is not None:
                msg += f"; version {p.obs.published.version} stays published"
            return p.failed(CONVERTED, "NoSamples", msg)
        return None
    st.steps[CONVERTED] = StepState(False, "Planning")
    if obs.planner is None:
        if obs.source_problem:
            return stalled(p.decision, p.prev_stalled, Phase.PENDING, "SourceNotFound", obs.source_problem)
        p.decision.actions.append(EnsureBucket(p.spec.output.bucket.name, p.spec.output.bucket.provider))
        previous = previous_plan(p.spec, p.owner, obs.published)
        p.decision.actions.append(CreateJob(builders.build_planner_job(p.spec, p.owner, p.defaults, previous)))
        return p.working(Phase.CONVERTING, "Planning", "starting the planner")
    msg = f"planner Job {obs.planner.name} completed but its plan is missing"
    settled = p.job_ended(obs.planner, "planner", "Planning", "PlanningFailed", ("PlanPending", "PlanMissing", msg))
    if settled is not None:
        return settled
    return p.working(Phase.CONVERTING, "Planning", "listing the source and grouping it into samples")


def previous_plan(spec: DatasetSpec, owner: Owner, published: IndexInfo | None) -> str | None:
    """The plan manifest of the published version, when it is another version of this resource whose converted
    shards are where this version writes its own (the new planner takes over its intact units)."""
    if published is None or published.version == owner.version:
        return None
    record = published.record
    pool = record.get("pool") or {}
    b = spec.output.bucket
    if (pool.get("bucket"), pool.get("provider") or "ais", pool.get("prefix")) != (
        b.name,
        b.provider,
        builders.unit_pool(spec, owner),
    ):
        return None
    plan = str(record.get("plan") or "")
    return plan if plan.startswith(naming.uid_base(spec.output.prefix, owner.uid)) else None
