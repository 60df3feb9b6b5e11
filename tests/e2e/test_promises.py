"""The operator's promises end to end (README "What the operator promises", issue 25): a source accident never
reaches the readers of a published dataset, and a retry after a failed conversion starts clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Ais
from sharded_dataset_operator.core import naming

from .conftest import Kube, unique, wait_until
from .test_operator import RawDataset, assert_complete_samples, check_index, condition, dataset, read_shards
from .test_versions import Reader, published

pytestmark = pytest.mark.e2e
SAMPLES = 80


def status_reason(kube: Kube, namespace: str, name: str, reason: str, timeout: float = 300) -> dict[str, Any]:
    """Block until the resource's Stalled condition says `reason`."""

    def stalled(o: dict[str, Any] | None) -> bool:
        conditions = ((o or {}).get("status") or {}).get("conditions") or []  # no status before the first pass
        return any(c.get("type") == "Stalled" and c.get("reason") == reason for c in conditions)

    return wait_until(  # type: ignore[no-any-return]
        lambda: (o := kube.get("sds", name, namespace)) and stalled(o) and o, timeout, f"{name} Stalled with {reason}"
    )


def readable(ais: Ais, bucket: str, index: dict[str, Any]) -> None:
    """Every shard the index names is there with the size it says."""
    for shard in index["shardlist"]:
        assert len(ais.get(bucket, shard["url"]) or b"") == shard["filesize"], shard["url"]


def events(kube: Kube, namespace: str, name: str, reason: str) -> list[str]:
    return [str(e.get("message")) for e in kube.events(namespace, name) if e["reason"] == reason]


def test_an_emptied_source_is_never_published_and_the_published_version_stays_readable(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    """Problem 1 of issue 25: without a shuffle, an empty plan used to pass verification and be published."""
    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], SAMPLES, seed=51, sample_kib=4)
    out = unique("empty")
    obj = dataset("emptied", namespace, raw.bucket, out, shuffle=None, conversion={"workers": 1})
    obj["spec"]["output"]["retainPrevious"] = "0s"
    kube.apply(obj)
    first = wait_until(lambda: (o := kube.get("sds", "emptied", namespace)) and published(o) == "g1" and o, 300, "g1")
    index = "samples-index.json"
    before = json.loads(ais.get(out, index) or b"{}")
    assert sum(s["nsamples"] for s in before["shardlist"]) == len(raw.manifest["complete"])

    ais.delete_objects(raw.bucket, [e.name for e in ais.list_objects(raw.bucket)])  # every source object
    kube.run("annotate", "sds", "emptied", "-n", namespace, "shardeddataset.dev/refresh=after-delete")
    failed = status_reason(kube, namespace, "emptied", "NoSamples")
    st = failed["status"]
    assert st["phase"] == "Failed" and "g1 stays published" in st["message"], st["message"]
    assert condition(failed, "Ready")["status"] == "True" and condition(failed, "Ready")["reason"] == "Serving"
    assert published(failed) == "g1" and st["versions"]["building"]["reason"] == "NoSamples"
    assert json.loads(ais.get(out, index) or b"{}") == before  # untouched, and every shard still there
    readable(ais, out, before)
    assert first["status"]["versions"]["published"] == st["versions"]["published"]


def test_a_source_that_lost_most_samples_is_held_for_a_person_and_published_once_approved(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """Problem 2 of issue 25: 60 % of the images deleted, then a refresh: PublishHeld with the numbers, the
    readers of the published version unaffected; an approval of another version is ignored with an Event, the
    approval of the held one publishes it."""
    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], SAMPLES, seed=52, sample_kib=4)
    out = unique("shrunk")
    obj = dataset("shrunk", namespace, raw.bucket, out, conversion={"workers": 1})
    kube.apply(obj)
    wait_until(lambda: (o := kube.get("sds", "shrunk", namespace)) and published(o) == "g1" and o, 300, "g1")
    complete = sorted(raw.manifest["complete"])
    gone = complete[: len(complete) * 6 // 10]
    ais.delete_objects(raw.bucket, [f"images/{k}.jpg" for k in gone])
    version = naming.version_id(1, "shrunk")

    with Reader(ais, out, "shuffled-index.json") as reader:
        kube.run("annotate", "sds", "shrunk", "-n", namespace, "shardeddataset.dev/refresh=shrunk")
        held = status_reason(kube, namespace, "shrunk", "PublishHeld")
        wait_until(lambda: len(reader.passes) >= 2, 60, "reader passes while the version is held")
    assert reader.errors == [], reader.errors[:5]
    assert {v for v, _, _ in reader.passes} == {"g1"}
    assert all(keys == frozenset(complete) for _, _, keys in reader.passes)
    st = held["status"]
    guard = st["publishGuard"]
    assert guard["version"] == version and guard["held"] is True
    assert (guard["published"], guard["new"], guard["removed"], guard["added"]) == (
        len(complete),
        len(complete) - len(gone),
        len(gone),
        0,
    ), guard
    assert guard["maxRemoved"] == len(complete) // 10
    assert condition(held, "Ready")["status"] == "True" and published(held) == "g1"
    assert f"shardeddataset.dev/approve={version}" in st["message"]
    assert events(kube, namespace, "shrunk", "PublishHeld")

    kube.run("annotate", "sds", "shrunk", "-n", namespace, "shardeddataset.dev/approve=g7")
    wait_until(lambda: events(kube, namespace, "shrunk", "ApprovalIgnored"), 120, "the wrong approval ignored")
    assert published(kube.get("sds", "shrunk", namespace)) == "g1"

    kube.run("annotate", "--overwrite", "sds", "shrunk", "-n", namespace, f"shardeddataset.dev/approve={version}")
    done = wait_until(
        lambda: (o := kube.get("sds", "shrunk", namespace)) and published(o) == version and o, 120, "approved"
    )
    assert done["status"]["phase"] == "Ready" and done["status"]["samples"]["written"] == len(complete) - len(gone)
    assert events(kube, namespace, "shrunk", "PublishApproved")
    shards = check_index(ais, done, out, "shuffled-index.json")
    raw.manifest["complete"] = [k for k in complete if k not in set(gone)]
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shards], tmp_path))


def test_the_retry_after_conversion_incomplete_sets_the_bad_reports_aside_and_reaches_ready_exact(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    """Problem 5 of issue 25: a report that does not add up (here: one more, written where the workers write
    theirs before the planner ran) fails the conversion; the retry annotation used to bring the same failure
    back. Now it sets the reports aside, converts again, and ends Ready with exact samples."""
    raw_bucket = unique("late-raw")
    out = unique("incomplete")
    kube.apply(dataset("incomplete", namespace, raw_bucket, out, conversion={"workers": 2}))
    waiting = status_reason(kube, namespace, "incomplete", "SourceNotFound", timeout=120)
    base = naming.generation_base("samples-", waiting["metadata"]["uid"], "g1")
    ais.ensure_bucket(out)
    forged = {"worker": 7, "generation": 1, "written": 1, "bytes": 0, "shards": []}
    ais.put(out, naming.report_name(base, 7), json.dumps(forged).encode())
    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], SAMPLES, seed=53, sample_kib=4, bucket=raw_bucket)

    failed = status_reason(kube, namespace, "incomplete", "ConversionIncomplete")
    assert failed["status"]["phase"] == "Failed"
    kube.run("annotate", "sds", "incomplete", "-n", namespace, "shardeddataset.dev/retry=1")
    ready = wait_until(
        lambda: (o := kube.get("sds", "incomplete", namespace)) and o["status"].get("phase") == "Ready" and o,
        300,
        "Ready after the retry",
    )
    assert ready["status"]["samples"]["written"] == len(raw.manifest["complete"])
    assert ais.get(out, naming.report_name(base, 7)) is None  # set aside with the failed attempt
    shards = check_index(ais, ready, out, "shuffled-index.json")
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shards], tmp_path))
