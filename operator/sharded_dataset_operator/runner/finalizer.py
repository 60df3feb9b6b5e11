"""`deletionPolicy: Delete`: remove every object any version of the resource wrote in AIS, and say what is left
when that is given up."""

from __future__ import annotations

import json
from typing import Any

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.core import (
    builders,
    naming,
    records,
    versions,
)
from sharded_dataset_operator.core.spec import DatasetSpec, SpecError, parse_spec
from sharded_dataset_operator.runner.executor import cleanup_record
from sharded_dataset_operator.runner.passes import ais_for, dsort_for, owner_of
from sharded_dataset_operator.runner.settings import Settings


def leftover_summary(obj: dict[str, Any], settings: Settings) -> str:
    """Where a dataset whose deletion was given up wrote in AIS (bucket and prefix per location)."""
    owner = owner_of(obj)
    try:
        spec = parse_spec(obj.get("spec") or {}, name=owner.name, default_endpoint=settings.ais_endpoint)
    except (SpecError, KeyError, TypeError, ValueError):
        return "unknown (the spec does not parse)"
    places = {
        f"{spec.output.bucket.provider}://{spec.output.bucket.name}/{naming.uid_base(spec.output.prefix, owner.uid)}*",
        f"{spec.output.bucket.provider}://{spec.output.bucket.name}/{naming.unit_pool(spec.output.prefix, owner.uid)}*",
    }
    for prefix in _output_prefixes(spec):
        b = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
        places.add(f"{b.provider}://{b.name}/{naming.uid_base(prefix, owner.uid)}*")
    bucket, provider, index = records.index_location(spec)
    places.add(f"{provider}://{bucket}/{index}")
    return ", ".join(sorted(places))


def delete_everything(obj: dict[str, Any], settings: Settings) -> int:
    """deletionPolicy Delete: remove every object any version of this resource wrote in AIS."""
    owner = owner_of(obj)
    spec = parse_spec(obj.get("spec") or {}, name=owner.name, default_endpoint=settings.ais_endpoint)
    if not settings.endpoint_allowed(spec.ais.endpoint):
        raise RuntimeError(f"spec.ais.endpoint {spec.ais.endpoint} is not an allowed AIS endpoint: nothing deleted")
    ais = ais_for(spec, owner.namespace)
    dsort = dsort_for(spec, ais, settings)
    # Converters still running would write after the cleanup: stop them first.
    if not kube.stop_converters(owner.namespace, owner.name):
        raise RuntimeError("converter pods are still terminating")
    recorded = [
        r
        for r in (obj.get("status") or {}).get("artifacts") or []
        if versions.record_problem(r, owner.namespace, owner.name, owner.uid) is None
    ]
    recorded.append(records.artifact_record(spec, owner))
    deleted = 0
    for record in recorded:
        cleanup_record(ais, record, owner.uid, dsort, owner.namespace)
        pool = record.get("pool") or {}
        if pool.get("prefix"):
            ais.delete_prefix(str(pool["bucket"]), str(pool["prefix"]), str(pool.get("provider") or "ais"))
        deleted += 1
    # Every version of this uid, including ones whose records were lost.
    shuffled = spec.shuffle.output_bucket if spec.shuffle else spec.output.bucket
    for bucket, prefix in {
        (spec.output.bucket, naming.uid_base(spec.output.prefix, owner.uid)),
        (spec.output.bucket, naming.unit_pool(spec.output.prefix, owner.uid)),
        *((shuffled, naming.uid_base(prefix, owner.uid)) for prefix in _output_prefixes(spec)),
    }:
        ais.delete_prefix(bucket.name, prefix, bucket.provider)
    for name in dsort.etl_list(naming.etl_prefix(owner.uid)):
        dsort.etl_delete(name)
    bucket_name, provider, index = records.index_location(spec)
    indexes = [index]
    if spec.splits:
        indexes += [naming.index_name(builders.split_prefix(records.index_prefix(spec), s)) for s in spec.splits.names]
    for name in indexes:
        data = ais.get(bucket_name, name, provider)
        if data:
            try:
                mine = (json.loads(data).get("info") or {}).get("uid") == owner.uid
            except (ValueError, AttributeError):
                mine = False
            if mine:
                ais.delete_objects(bucket_name, [name], provider)
    return deleted


def _output_prefixes(spec: DatasetSpec) -> list[str]:
    """The prefixes the shuffled shards of every version are written under (one per split)."""
    if spec.shuffle is None:
        return []
    return [
        builders.split_prefix(spec.shuffle.output_prefix, s) for s in (spec.splits.names if spec.splits else [None])
    ]
