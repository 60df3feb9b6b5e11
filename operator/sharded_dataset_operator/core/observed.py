"""What the decision core is given: everything observed for the wanted version (`Observed`, gathered by
`runner.observation`), and one output of a version as the conversion left it (`Track`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core.model import AisJob, DsortJob, JobState
from sharded_dataset_operator.core.verify import OutputTally, Totals
from sharded_dataset_operator.core.versions import IndexInfo


@dataclass(frozen=True, slots=True)
class PublishedShard:
    """One shard of the published version, as its index lists it (object name resolved)."""

    name: str
    samples: int
    size: int


@dataclass(slots=True)
class Observed:
    """Everything the decision needs; `output` is gathered only when `Decision.need_output` asks for it."""

    previous: dict[str, Any]
    source_problem: str | None = None
    planner: JobState | None = None
    plan: dict[str, Any] | None = None
    job: JobState | None = None
    stale_jobs: list[str] = field(default_factory=list)
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    dsort_attempts: dict[int, DsortJob] = field(default_factory=dict)
    split_attempts: dict[str, dict[int, DsortJob]] = field(default_factory=dict)  # with spec.splits, per split
    capacity_problems: tuple[str, ...] = ()  # AIS targets' capacity errors, asked for when a dSort job is lost
    retry_request: str | None = None
    output: OutputTally | None = None
    outputs: dict[str, OutputTally] = field(default_factory=dict)  # with spec.splits: each split's, by split
    published: IndexInfo | None = None  # what the stable index names (when this resource wrote it)
    version_indexes: dict[str, IndexInfo] = field(default_factory=dict)  # versions whose own index exists
    wanted_index: dict[str, Any] | None = None  # the wanted version's own index, when already written
    reused: dict[str, Any] | None = None  # the planner's record of the converted shards it reuses
    output_conflict: str | None = None  # the stable index belongs to another resource: why, naming it
    etls: dict[str, str] = field(default_factory=dict)  # this resource's AIS ETLs (naming.etl_prefix): stage
    rebalancing: tuple[str, ...] = ()  # AIS's running rebalance jobs, asked for before a dSort attempt starts
    prefetch: AisJob | None = None  # the prefetch job status.prefetch records (None: none, or AIS forgot it)
    approval: str | None = None  # the approve annotation (guard.APPROVE_ANNOTATION): the version a person approved
    split_stables: dict[str, str | None] = field(default_factory=dict)  # with splits: the version each split's
    # stable index names (None: it names none of this resource's)
    split_sources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (version, split): own
    published_shards: dict[str, list[PublishedShard]] = field(default_factory=dict)  # with refreshMode Append:
    # the published version's shards by output ("" or the split), from its indexes (absent: not read)


@dataclass(slots=True)
class TakenOver:
    """The converted shards of an output whose units the plan took over whole from the published version."""

    shards: frozenset[str] = frozenset()
    samples: int = 0
    written: Totals = field(default_factory=Totals)
    tar_bytes: int = 0

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> TakenOver:
        kept = [r for r in records if r.get("takenOver")]
        written = Totals()
        for r in kept:
            written.merge(Totals.from_dict(r))
        return cls(
            frozenset(str(r["name"]) for r in kept),
            sum(int(r.get("samples") or 0) for r in kept),
            written,
            sum(int(r.get("bytes") or 0) for r in kept),
        )


@dataclass(slots=True)
class Track:
    """What one output of the version is made of: the whole dataset, or one split of it (`split`)."""

    split: str | None
    shards: list[str]  # converted shard names, sorted
    key_order: list[str]  # the same, by first key (the index order without a shuffle)
    written: Totals
    samples: int
    tar_bytes: int
    taken_over: TakenOver = field(default_factory=TakenOver)
