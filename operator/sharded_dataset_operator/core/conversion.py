"""Phase 2, conversion: the converter workers on the units the plan did not find converted already (and the
AIS ETLs the conversion or the readers use); the counts of the conversion."""

from __future__ import annotations

from typing import Any

from sharded_dataset_operator.core import builders, naming, prefetch, units
from sharded_dataset_operator.core.actions import CreateJob, Decision, Event, InitEtl
from sharded_dataset_operator.core.observed import TakenOver, Track
from sharded_dataset_operator.core.spec import DatasetSpec
from sharded_dataset_operator.core.state import Pass, seconds_since, stalled
from sharded_dataset_operator.core.status import CONVERTED, DatasetStatus, Phase, StepState
from sharded_dataset_operator.core.times import epoch
from sharded_dataset_operator.core.verify import Totals

SERVE_ETL_RETRY = 300.0  # seconds between attempts to start a serving ETL that AIS could not start


def converter_workers(spec: DatasetSpec, plan: dict[str, Any]) -> int:
    """Converter pods for a plan: `spec.conversion.workers`, fewer when fewer units are left to convert."""
    return min(spec.conversion.workers, int((plan.get("units") or {}).get("convert") or 0))


def step(p: Pass) -> Decision | None:
    """The converter workers, each on its share of the units the plan did not find converted already."""
    assert p.plan is not None
    spec, obs, st, plan = p.spec, p.obs, p.st, p.plan
    workers = converter_workers(spec, plan)
    st.workers = workers
    if len(p.reports) < workers:
        st.steps[CONVERTED] = StepState(False, "Converting")
        st.progress = conversion_progress(plan, obs.progress, p.reports, p.owner.generation, p.reused)
        todo = f"{(plan.get('units') or {}).get('convertSamples', plan['samples'])} samples"
        if p.reused:
            todo += f" ({int(p.reused.get('written') or 0)} more reused from an earlier version)"
        waiting = _etl(p)
        if waiting is not None:
            return waiting
        if obs.job is None:
            warm = prefetch.warm(p.st.prefetch)
            job = builders.build_converter_job(spec, p.owner, p.defaults, workers=workers, warm=warm)
            p.decision.actions.append(CreateJob(job))
            return p.working(Phase.CONVERTING, "Converting", f"starting {workers} converter worker(s) for {todo}")
        missing = sorted(set(range(workers)) - set(p.reports))
        msg = f"converter Job completed but reports of worker(s) {missing} are missing"
        settled = p.job_ended(
            obs.job, "converter", "Converting", "ConversionFailed", ("ReportsPending", "ReportMissing", msg)
        )
        if settled is not None:
            return settled
        wait = _waiting(p)
        if wait is not None:  # the workers wait for the source (its remote store is down): Stalled, resumes
            return stalled(p.decision, p.prev_stalled, Phase.CONVERTING, *wait)
        return p.working(
            Phase.CONVERTING,
            "Converting",
            f"{len(p.reports)}/{workers} converter workers done, {st.progress['samples']}/{plan['samples']} samples",
        )
    done = [*p.reports.values(), *([p.reused] if p.reused else [])]
    reused = f", {st.shards_reused} reused" if st.shards_reused else ""
    st.steps[CONVERTED] = StepState(
        True, "Converted", f"{st.samples_written} samples in {st.shards_converted} shards{reused}"
    )
    transformed_away = sum(int(n) for r in done for n in (r.get("skippedByReason") or {}).values())
    if st.samples_written + transformed_away != int(plan.get("samples") or 0):
        msg = f"the converters wrote {st.samples_written} samples but the plan holds {plan['samples']}"
        if transformed_away:
            msg += f" ({transformed_away} skipped by the transform)"
        return p.failed(CONVERTED, "ConversionIncomplete", msg)
    covered = sum(int(r.get("planFingerprint") or 0) for r in done) % units.FINGERPRINT_MOD
    if covered != int((plan.get("units") or {}).get("fingerprint") or 0):
        msg = "the converted and reused units do not hold exactly the planned samples (unit fingerprints differ)"
        return p.failed(CONVERTED, "ConversionIncomplete", msg)
    if st.samples_written == 0 and transformed_away:
        errors = sorted(str(r.get("firstTransformError")) for r in done if r.get("firstTransformError"))
        first = f"first error: sample {errors[0]}" if errors else "the function dropped every sample"
        return p.failed(CONVERTED, "TransformFailed", f"the transform left no sample; {first}")
    records = [s for r in done for s in r.get("shards") or []]
    pool = builders.unit_pool(spec, p.owner)
    foreign = [str(s.get("name")) for s in records if not str(s.get("name") or "").startswith(pool)]
    if foreign:
        msg = f"the reports list shards outside this resource's converted shards ({pool}*): {', '.join(foreign[:3])}"
        return p.failed(CONVERTED, "ConversionIncomplete", msg)
    p.converted_shards = sorted(s["name"] for s in records)
    p.key_order = [s["name"] for s in sorted(records, key=lambda s: (str(s.get("firstKey") or ""), s.get("part") or 0))]
    for r in done:
        p.written.merge(Totals.from_dict(r))
    if spec.splits is None:
        tar_bytes = sum(int(r.get("bytes") or 0) for r in done)
        kept = TakenOver.of(records)
        p.tracks = [Track(None, p.converted_shards, p.key_order, p.written, st.samples_written, tar_bytes, kept)]
        return None
    by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in spec.splits.names}
    for record in records:
        by_split.setdefault(str(record.get("split") or ""), []).append(record)
    unknown = sorted(k for k in by_split if k not in spec.splits.names)
    if unknown:
        return p.failed(CONVERTED, "ConversionIncomplete", f"the reports name splits the spec has not: {unknown}")
    for name in spec.splits.names:
        recs = by_split[name]
        written = Totals()
        for record in recs:
            written.merge(Totals.from_dict(record))
        samples = sum(int(r.get("samples") or 0) for r in recs)
        if samples == 0:
            return p.failed(CONVERTED, "SplitEmpty", f"split {name} holds no complete sample")
        order = [r["name"] for r in sorted(recs, key=lambda r: (str(r.get("firstKey") or ""), r.get("part") or 0))]
        tar_bytes = sum(int(r.get("bytes") or 0) for r in recs)
        shards = sorted(r["name"] for r in recs)
        p.tracks.append(Track(name, shards, order, written, samples, tar_bytes, TakenOver.of(recs)))
    st.splits = {t.split or "": {"samples": t.samples, "convertedShards": len(t.shards)} for t in p.tracks}
    return None


def _waiting(p: Pass) -> tuple[str, str] | None:
    """(reason, message) of the longest wait a running worker says it is in (`pods.progress.mark_waiting`); a
    worker that converts again drops its mark with its next progress write."""
    waits = [
        w
        for i, pr in sorted(p.obs.progress.items())
        if i not in p.reports and int(pr.get("generation", -1)) == p.owner.generation
        and isinstance(w := pr.get("waiting"), dict)
    ]  # fmt: skip
    if not waits:
        return None
    first = min(waits, key=lambda w: str(w.get("since") or ""))
    return str(first.get("reason") or "SourceUnavailable"), f"since {first.get('since')}: {first.get('message')}"


def _etl(p: Pass) -> Decision | None:
    """With `spec.transform.aisEtl`: the version's AIS ETL must run before (and while) the converters read
    through it; it is started here and removed once the conversion is over (`decide`)."""
    etl = p.spec.transform.ais_etl if p.spec.transform else None
    if etl is None:
        return None
    name = naming.etl_name(p.owner.uid, p.owner.version)
    p.etls_needed.add(name)
    stage = p.obs.etls.get(name)
    p.st.etl = {"name": name, "stage": stage or "Initializing", "image": etl.image}
    if stage == "Running":
        return None
    problem = builders.etl_image_problem(etl, p.defaults)
    if problem is not None:
        return p.failed(CONVERTED, "EtlNotAllowed", problem)
    if stage is None:
        p.decision.actions.append(InitEtl(name, builders.etl_init_message(etl, name, p.owner, p.defaults)))
        return p.working(Phase.CONVERTING, "EtlStarting", f"starting AIS ETL {name} ({etl.image}) on every target")
    if stage in ("Aborted", "Unknown"):
        p.etls_needed.discard(name)  # removed, so that a retry starts it afresh
        return p.failed(CONVERTED, "EtlFailed", f"AIS ETL {name} is {stage}: see its pods in the AIS namespace")
    return p.working(Phase.CONVERTING, "EtlStarting", f"waiting for AIS ETL {name} ({stage})")


def serve_etl(p: Pass) -> None:
    """`spec.serve.etl`: an AIS ETL kept running while the resource exists, for readers to apply to its shards
    on the fly (`GET <shard>?etl_name=<status.serve.etl>`). Started on any pass that finds it missing."""
    etl = p.spec.serve_etl
    if etl is None:
        return
    name = naming.serve_etl_name(p.owner.uid)
    stage = p.obs.etls.get(name)
    serve: dict[str, Any] = {"etl": name, "stage": stage or "Initializing", "image": etl.image}
    p.st.serve = serve
    problem = builders.etl_image_problem(etl, p.defaults)
    if problem is not None and stage is None:
        serve.update(etl=None, stage=None, message=problem)
        if (p.prev.get("serve") or {}).get("message") != problem:
            p.decision.events.append(Event("Warning", "EtlNotAllowed", problem))
        return
    if stage in ("Aborted", "Unknown"):
        serve["message"] = f"AIS ETL {name} is {stage}: started again"
        return  # not needed: removed now, started again on the next pass
    p.etls_needed.add(name)
    if stage is None:
        failed_at = epoch((p.prev.get("serve") or {}).get("failedAt"))
        if failed_at is not None and seconds_since(failed_at, p.now) < SERVE_ETL_RETRY:
            serve.update(
                stage=None, message=(p.prev.get("serve") or {}).get("message"), failedAt=p.prev["serve"]["failedAt"]
            )
            return  # AIS could not start it a moment ago: try again later, not on every pass
        p.decision.actions.append(InitEtl(name, builders.etl_init_message(etl, name, p.owner, p.defaults), True))


def conversion_progress(
    plan: dict[str, Any],
    progress: dict[int, dict[str, Any]],
    reports: dict[int, dict[str, Any]],
    generation: int,
    reused: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Samples and bytes converted so far, from the workers' progress objects (a report counts as done, and
    so do the samples of reused shards)."""
    planned = int(plan.get("samples") or 0)
    samples = int((reused or {}).get("consumed") or 0)
    nbytes = int((reused or {}).get("bytes") or 0)
    for worker, p in progress.items():
        if worker in reports or int(p.get("generation", -1)) != generation:
            continue
        samples += int(p.get("samples") or 0)
        nbytes += int(p.get("bytes") or 0)
    for r in reports.values():
        samples += int(r.get("written") or 0)
        nbytes += int(r.get("bytes") or 0)
    samples = min(samples, planned)
    percent = 100 if planned == 0 else samples * 100 // planned
    return {
        "summary": f"{percent}%",
        "percent": percent,
        "samples": samples,
        "samplesPlanned": planned,
        "bytes": nbytes,
    }


def fill_counts(
    st: DatasetStatus,
    plan: dict[str, Any] | None,
    reports: dict[int, dict[str, Any]],
    reused: dict[str, Any] | None = None,
) -> None:
    done = [*reports.values(), *([reused] if reused else [])]
    st.samples_written = sum(int(r.get("written") or 0) for r in done)
    plan = plan or {}
    st.skipped_by_reason = {str(k): int(v) for k, v in (plan.get("skipped") or {}).items()}
    for r in done:  # samples the transform dropped or failed on, counted by the workers
        for reason, n in (r.get("skippedByReason") or {}).items():
            st.skipped_by_reason[str(reason)] = st.skipped_by_reason.get(str(reason), 0) + int(n)
    st.rejected_files = {str(k): int(v) for k, v in (plan.get("rejectedFiles") or {}).items()}
    st.rows_unused = {str(k): int(v) for k, v in (plan.get("rows") or {}).items()}
    st.classes = {str(k): int(v) for k, v in (plan.get("classes") or {}).items()}
    st.samples_skipped = sum(st.skipped_by_reason.values())
    st.samples_total = int(plan.get("samples") or 0) + sum(int(v) for v in (plan.get("skipped") or {}).values())
    st.shards_converted = sum(len(r.get("shards") or []) for r in done)
    st.shards_reused = len((reused or {}).get("shards") or [])
    st.samples_reused = int((reused or {}).get("written") or 0)
    st.bytes_output = 0
