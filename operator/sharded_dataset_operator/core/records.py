"""Where a version writes (its artifacts record: enough to delete it later even if the spec changes) and the
stable indexes readers use."""

from __future__ import annotations

from typing import Any

from sharded_dataset_operator.core import builders, naming, versions
from sharded_dataset_operator.core.builders import Owner
from sharded_dataset_operator.core.spec import DatasetSpec


def artifact_record(spec: DatasetSpec, owner: Owner) -> dict[str, Any]:
    """Where this version writes: enough to delete it later even if the spec changes."""
    locations = [
        {
            "bucket": spec.output.bucket.name,
            "provider": spec.output.bucket.provider,
            "prefix": builders.converted_base(spec, owner),
        }
    ]
    if spec.shuffle is not None:
        for split in spec.splits.names if spec.splits else (None,):
            locations.append(
                {
                    "bucket": spec.shuffle.output_bucket.name,
                    "provider": spec.shuffle.output_bucket.provider,
                    "prefix": builders.output_base(spec, owner, split),
                }
            )
    bucket, provider, stable = index_location(spec)
    return {
        "version": owner.version,
        "generation": owner.generation,
        "refresh": owner.refresh,
        "locations": locations,
        "dsortDescription": naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.version),
        "plan": naming.plan_manifest_name(builders.converted_base(spec, owner)),
        "pool": {
            "bucket": spec.output.bucket.name,
            "provider": spec.output.bucket.provider,
            "prefix": builders.unit_pool(spec, owner),
        },
        "index": {
            "bucket": bucket,
            "provider": provider,
            "stable": stable,
            "versioned": naming.versioned_index_name(index_prefix(spec), owner.uid, owner.version),
            **(
                {
                    "splits": {
                        split: {
                            "stable": naming.index_name(builders.split_prefix(index_prefix(spec), split)),
                            "versioned": naming.versioned_index_name(
                                builders.split_prefix(index_prefix(spec), split), owner.uid, owner.version
                            ),
                        }
                        for split in spec.splits.names
                    }
                }
                if spec.splits
                else {}
            ),
        },
    }


def index_prefix(spec: DatasetSpec) -> str:
    return spec.shuffle.output_prefix if spec.shuffle is not None else spec.output.prefix


def index_location(spec: DatasetSpec) -> tuple[str, str, str]:
    """(bucket, provider, name) of the stable index."""
    b = spec.shuffle.output_bucket if spec.shuffle is not None else spec.output.bucket
    return b.name, b.provider, naming.index_name(index_prefix(spec))


def stable_indexes(spec: DatasetSpec) -> tuple[tuple[str, str, str], ...]:
    """(bucket, provider, name) of the stable index and of every split's stable index."""
    bucket, provider, stable = index_location(spec)
    names = (
        [stable, *(naming.index_name(builders.split_prefix(index_prefix(spec), s)) for s in spec.splits.names)]
        if spec.splits
        else [stable]
    )
    return tuple((bucket, provider, n) for n in names)


def pool_of(record: dict[str, Any]) -> tuple[str, str, str] | None:
    pool = record.get("pool") or {}
    if not pool.get("prefix"):
        return None
    return str(pool["bucket"]), str(pool.get("provider") or "ais"), str(pool["prefix"])


def stable_url(spec: DatasetSpec) -> str:
    bucket, provider, index = index_location(spec)
    return f"{provider}://{bucket}/{index}"


def current_first(records: list[dict[str, Any]], version: str) -> dict[str, Any]:
    return next(r for r in records if versions.record_version(r) == version)


def unique_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for r in records:
        v = versions.record_version(r)
        if v not in seen:
            seen.add(v)
            out.append(r)
    return out
