"""Planner and converter workers over a directory source, writing into an in-memory object store."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sds_tools import exampledata
from sharded_dataset_operator.clients.ais import AisUnavailable, Membership, started_at
from sharded_dataset_operator.core.builders import EXIT_UNAVAILABLE, Owner, converter_config
from sharded_dataset_operator.core.model import Entry
from sharded_dataset_operator.core.samples import FieldRule, LabelRule, group_samples, parse_labels
from sharded_dataset_operator.core.spec import parse_spec
from sharded_dataset_operator.core.verify import OutputTally, Totals, compare
from sharded_dataset_operator.pods.common import (
    PermanentError,
    cluster_disturbed,
    cluster_whole,
    restarted,
    unreachable_exit,
)
from sharded_dataset_operator.pods.converter import MiB, convert, read_plan
from sharded_dataset_operator.pods.planner import make_plan
from sharded_dataset_operator.pods.sources import VolumeSource

OWNER = Owner(name="pets", namespace="ml", uid="00000000-1111-4222-8333-444444444444", generation=1)
BASE = "out/s-0000000011114222-g1-"


class MemoryStore:
    """Stands in for the AIS client: the object calls the planner and the converter make."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.peak_runs = 0

    def put(self, bucket: str, name: str, data: bytes, provider: str = "ais") -> None:
        self.objects[f"{bucket}/{name}"] = data
        self.peak_runs = max(self.peak_runs, sum("plan-run-" in k for k in self.objects))

    def get(self, bucket: str, name: str, provider: str = "ais", direct: bool = False) -> bytes | None:
        return self.objects.get(f"{bucket}/{name}")

    def stream_lines(self, bucket: str, name: str, provider: str = "ais") -> Iterator[str]:
        yield from self.objects[f"{bucket}/{name}"].decode().splitlines()

    def list_objects(self, bucket: str, provider: str = "ais", prefix: str = "") -> list[Entry]:
        full = f"{bucket}/{prefix}"
        return [Entry(k.split("/", 1)[1], len(v)) for k, v in sorted(self.objects.items()) if k.startswith(full)]

    def delete_objects(self, bucket: str, names: list[str], provider: str = "ais") -> int:
        for n in names:
            self.objects.pop(f"{bucket}/{n}", None)
        return len(names)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, exampledata.Manifest]:
    root = tmp_path_factory.mktemp("pets")
    return root, exampledata.write_dir(root, n_samples=120, seed=3, sample_kib=8)


def config(workers: int = 3, **output: Any) -> dict[str, Any]:
    spec = {
        "source": {"volume": {"claimName": "raw"}},
        "samples": {
            "fields": [
                {"pattern": "images/*.jpg", "name": "image.jpg"},
                {"pattern": "annotations/trimaps/*.png", "name": "trimap.png"},
            ],
            "labels": {"path": "annotations/list.txt", "name": "cls"},
        },
        "output": {"bucket": "out", "prefix": "s-", "maxSamplesPerShard": 25, **output},
        "conversion": {"workers": workers},
        "shuffle": {"seed": "5"},
    }
    return converter_config(parse_spec(spec, name="pets", default_endpoint="http://ais:1"), OWNER)


def run_all(root: Path, cfg: dict[str, Any], **plan_kw: Any) -> tuple[MemoryStore, dict[str, Any], list[Any]]:
    store = MemoryStore()
    manifest = make_plan(cfg, store, VolumeSource(str(root)), **plan_kw)  # type: ignore[arg-type]
    reports = [
        convert(cfg, i, store, VolumeSource(str(root)), progress_interval=0)  # type: ignore[arg-type]
        for i in range(cfg["workers"])
    ]
    return store, manifest, reports


def members(data: bytes) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            f = tf.extractfile(m)
            assert f is not None and m.mtime == 0 and m.mode == 0o444
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = f.read()
    return out


def tally_of(store: MemoryStore) -> OutputTally:
    """What the operator's archive listing would count (members sorted by name within each shard)."""
    tally = OutputTally("s-")
    for name in sorted(k for k in store.objects if k.endswith(".tar")):
        data = store.objects[name]
        obj = name.split("/", 1)[1]
        tally.add(obj, len(data))
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for m in sorted(tf.getmembers(), key=lambda m: m.name):
                tally.add(f"{obj}/{m.name}", m.size)
    return tally


def test_workers_write_every_complete_sample_once_and_the_plan_counts_the_rest(
    dataset: tuple[Path, exampledata.Manifest],
) -> None:
    root, manifest = dataset
    store, plan, reports = run_all(root, config())
    shards = {k: v for k, v in store.objects.items() if k.endswith(".tar")}
    seen: dict[str, dict[str, bytes]] = {}
    for data in shards.values():
        part = members(data)
        assert len(part) <= 25
        assert not set(part) & set(seen)
        seen.update(part)
    assert sorted(seen) == sorted(manifest["complete"])
    key = manifest["complete"][0]
    assert seen[key]["image.jpg"] == (root / f"images/{key}.jpg").read_bytes()
    assert seen[key]["cls"].decode() == manifest["classes"][key]
    assert "__order__" in seen[key]
    assert sum(r.written for r in reports) == len(manifest["complete"]) == plan["samples"]
    expected_skips = {reason: len(keys) for reason, keys in manifest["incomplete"].items() if keys}
    assert plan["skipped"] == expected_skips
    assert plan["rejectedFiles"] == {"invalid-key": len(manifest["junk_files"])}
    report0 = json.loads(store.objects[f"{BASE}report-w0000.json"])
    assert report0["written"] == reports[0].written and report0["shards"] == reports[0].shards
    progress = json.loads(store.objects[f"{BASE}progress-w0000.json"])
    assert progress["samples"] == reports[0].written == progress["partitionSamples"]
    # what the converters report is exactly what an archive listing of their shards counts
    written = Totals()
    for r in reports:
        written.merge(r.totals)
    tally = tally_of(store)
    assert compare(plan["samples"], written, tally) is None
    assert written.member_bytes == sum(s["memberBytes"] for r in reports for s in r.shards)


def test_plan_and_counts_do_not_depend_on_workers_or_the_sort_buffer(
    dataset: tuple[Path, exampledata.Manifest],
) -> None:
    root, _ = dataset
    store1, plan1, _ = run_all(root, config(workers=1))
    # a 2 KiB sort buffer forces many spilled runs and a real k-way merge
    store4, plan4, _ = run_all(root, config(workers=4), sort_buffer_bytes=2048, chunk_samples=7)
    assert plan4["sortRuns"] > 10 and store4.peak_runs == plan4["sortRuns"]
    assert not any("plan-run-" in k for k in store4.objects)  # runs deleted after planning
    for k in ("samples", "bytes", "members", "skipped", "rejectedFiles", "examples", "unmatchedFiles",
              "valuesWithoutFiles", "listingDigest", "filesListed"):  # fmt: skip
        assert plan1[k] == plan4[k], k
    assert len(plan4["chunks"]) == -(-plan4["samples"] // 7)

    # same samples as the in-memory grouping of the same files
    src = VolumeSource(str(root))
    label_text = (root / "annotations/list.txt").read_text()
    fields = [FieldRule("images/*.jpg", "image.jpg"), FieldRule("annotations/trimaps/*.png", "trimap.png")]
    label = LabelRule("annotations/list.txt", 0, 1, "cls")
    grouped = group_samples(
        list(src.files()), fields, label, parse_labels(label_text, 0, 1), ["image.jpg", "trimap.png", "cls"]
    )
    assert plan1["samples"] == len(grouped.samples) and plan1["skipped"] == grouped.skipped
    # shards hold the same samples whatever W
    keys1 = sorted(k for n, d in store1.objects.items() if n.endswith(".tar") for k in members(d))
    keys4 = sorted(k for n, d in store4.objects.items() if n.endswith(".tar") for k in members(d))
    assert keys1 == keys4


def test_reruns_write_byte_identical_shards(dataset: tuple[Path, exampledata.Manifest]) -> None:
    root, _ = dataset
    first, _, _ = run_all(root, config())
    second, _, _ = run_all(root, config())
    tars = {k: v for k, v in first.objects.items() if k.endswith(".tar")}
    assert tars == {k: v for k, v in second.objects.items() if k.endswith(".tar")}


def test_shards_are_cut_by_size(dataset: tuple[Path, exampledata.Manifest]) -> None:
    root, _ = dataset
    _, _, reports = run_all(root, config(workers=1, maxSamplesPerShard=None, maxShardSize="200KiB"))
    sizes = [s["bytes"] for s in reports[0].shards]
    assert len(sizes) > 2 and all(s <= 200 * 1024 for s in sizes)


def test_a_file_gone_or_changed_after_planning_fails_the_worker(tmp_path: Path) -> None:
    root = tmp_path / "d"
    exampledata.write_dir(root, n_samples=10, seed=1, sample_kib=1)
    cfg = config(workers=1)
    store = MemoryStore()
    plan = make_plan(cfg, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    first = json.loads(store.objects[f"out/{plan['chunks'][0]}"].decode().splitlines()[2])
    victim = root / first[2][0][1]
    victim.write_bytes(victim.read_bytes() + b"more")
    with pytest.raises(PermanentError, match="source changed"):
        convert(cfg, 0, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    victim.unlink()
    from sharded_dataset_operator.pods.common import SourceChanged
    from sharded_dataset_operator.pods.reads import Vanished

    with pytest.raises(Vanished, match="disappeared"):
        convert(cfg, 0, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    assert SourceChanged.reason == "SourceChanged"


@pytest.mark.parametrize("disturbed", [False, True])
def test_a_vanished_file_is_source_changed_unless_the_cluster_changed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, disturbed: bool
) -> None:
    """A 404 while AIS is whole is the source's own change: permanent, tagged SourceChanged for the operator. The
    same 404 while a target left (its objects not served meanwhile) is the cluster's weather: retried."""
    from sharded_dataset_operator.core.builders import CONFIG_ENV, EXIT_PERMANENT
    from sharded_dataset_operator.core.failures import pod_reason
    from sharded_dataset_operator.pods import common
    from sharded_dataset_operator.pods.reads import Vanished

    monkeypatch.setenv(CONFIG_ENV, "{}")
    monkeypatch.setenv("AIS_ENDPOINT", "http://127.0.0.1:9")
    log = tmp_path / "termination-log"
    monkeypatch.setattr(common, "TERMINATION_LOG", str(log))
    views = iter([Membership(7, 2, 2), Membership(8, 1, 1) if disturbed else Membership(7, 2, 2)])
    monkeypatch.setattr(common.Ais, "membership", lambda self: next(views, Membership(7, 2, 2)))
    monkeypatch.setattr(common, "unreachable_exit", lambda e, whole: EXIT_UNAVAILABLE)

    def run(config: dict[str, Any], index: int, ais: Any) -> str:
        raise Vanished("s3://raw/images/a.jpg disappeared during conversion")

    code = common.run_main(run)
    if disturbed:
        assert code == EXIT_UNAVAILABLE and not log.exists()
    else:
        assert code == EXIT_PERMANENT
        assert pod_reason(log.read_text(), "ConversionFailed") == "SourceChanged"
        assert "images/a.jpg disappeared" in log.read_text()


def test_convert_without_a_plan_is_retried_not_permanent(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="plan is missing"):
        convert(config(workers=1), 0, MemoryStore(), VolumeSource(str(tmp_path)))  # type: ignore[arg-type]


def test_missing_labels_file_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images/a.jpg").write_bytes(b"x")
    with pytest.raises(PermanentError, match=r"labels file annotations/list\.txt not found"):
        make_plan(config(workers=1), MemoryStore(), VolumeSource(str(tmp_path)))  # type: ignore[arg-type]


def test_an_emptied_source_plans_no_samples_even_without_its_labels_file(tmp_path: Path) -> None:
    """Everything deleted (the labels file too): an empty plan, so the operator says NoSamples (issue 25)."""
    manifest = make_plan(config(workers=1), MemoryStore(), VolumeSource(str(tmp_path)))  # type: ignore[arg-type]
    assert manifest["samples"] == 0 and manifest["filesListed"] == 0


def test_missing_source_directory_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        make_plan(config(workers=1), MemoryStore(), VolumeSource(str(tmp_path / "nope")))  # type: ignore[arg-type]


def test_read_ahead_follows_the_memory_limit_and_a_too_small_limit_is_permanent() -> None:
    cfg = config(workers=1, maxSamplesPerShard=None, maxShardSize="16MiB")
    assert read_plan(cfg, None).readahead_bytes == 64 * MiB
    small = read_plan(cfg, 192 * MiB)
    assert 4 * MiB <= small.readahead_bytes <= (192 - 48 - 80) * MiB // 2
    assert small.batch_bytes <= small.readahead_bytes
    with pytest.raises(PermanentError, match=r"memory limit 100Mi is too small for shards of 16Mi"):
        read_plan(cfg, 100 * MiB)
    cfg["reads"]["mode"] = "object"
    assert read_plan(cfg, None).batches_in_flight > read_plan(config(), None).batches_in_flight


def _planned(cfg: dict[str, Any], root: Path) -> MemoryStore:
    store = MemoryStore()
    make_plan(cfg, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    return store


class Crashing(VolumeSource):
    """A volume source whose reads fail after `budget` files (a pod killed mid-slice)."""

    def __init__(self, root: str, budget: int) -> None:
        super().__init__(root)
        self.budget = budget

    def read_many(self, paths: Any) -> list[bytes]:
        if self.reads.files + len(paths) > self.budget:
            raise RuntimeError("killed")
        return super().read_many(paths)


def test_a_retried_worker_resumes_after_its_finished_shards_and_writes_the_same_bytes(
    dataset: tuple[Path, exampledata.Manifest],
) -> None:
    root, _ = dataset
    cfg = config(workers=1, maxSamplesPerShard=10)
    cfg["reads"]["batchObjects"] = 8  # small requests, so the crash comes after some shards
    clean, _, (expected,) = run_all(root, cfg)
    store = MemoryStore()
    make_plan(cfg, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="killed"):
        convert(cfg, 0, store, Crashing(str(root), budget=120))  # type: ignore[arg-type]
    progress = json.loads(store.objects[f"{BASE}progress-w0000.json"])
    assert 2 <= len(progress["shards"]) < len(expected.shards)
    again_source = VolumeSource(str(root))
    again = convert(cfg, 0, store, again_source)  # type: ignore[arg-type]
    assert again.resumed_shards == len(progress["shards"])
    # only the samples after the finished shards were read again
    full = VolumeSource(str(root))
    convert(cfg, 0, _planned(cfg, root), full)  # type: ignore[arg-type]
    resumed_samples = sum(sh["samples"] for sh in progress["shards"])
    assert again_source.reads.files <= full.reads.files - resumed_samples
    assert again.written == expected.written and again.shards == expected.shards
    assert again.totals == expected.totals and again.total_bytes == expected.total_bytes
    tars = {k: v for k, v in store.objects.items() if k.endswith(".tar")}
    assert tars == {k: v for k, v in clean.objects.items() if k.endswith(".tar")}
    # a finished shard that went missing is not trusted: the worker redoes the slice from there
    del store.objects[f"out/{expected.shards[1]['name']}"]
    redo = convert(cfg, 0, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    assert redo.resumed_shards == 1 and redo.shards == expected.shards


class LostProgress(MemoryStore):
    """AIS after a target was killed while writing the progress object: its metadata is gone (ErrLmetaNotFound,
    a 500), so reading it fails while everything else reads fine."""

    def get(self, bucket: str, name: str, provider: str = "ais", direct: bool = False) -> bytes | None:
        if "progress-w" in name:
            raise AisUnavailable("STATUS:500 ErrLmetaNotFound: no data available")
        return super().get(bucket, name, provider, direct)


@pytest.mark.parametrize("damage", ["unservable", "torn"])
def test_a_progress_object_that_cannot_be_read_means_starting_over_with_the_same_bytes(
    dataset: tuple[Path, exampledata.Manifest], damage: str
) -> None:
    root, _ = dataset
    cfg = config(workers=1, maxSamplesPerShard=10)
    clean, _, (expected,) = run_all(root, cfg)
    store: MemoryStore = LostProgress() if damage == "unservable" else MemoryStore()
    make_plan(cfg, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    store.objects.update({k: v for k, v in clean.objects.items() if k.endswith(".tar")})
    store.objects[f"{BASE}progress-w0000.json"] = b'{"generation": 1, "shards": [{"na'
    again = convert(cfg, 0, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    assert again.resumed_shards == 0
    assert again.shards == expected.shards and again.totals == expected.totals
    assert {k: v for k, v in store.objects.items() if k.endswith(".tar")} == {
        k: v for k, v in clean.objects.items() if k.endswith(".tar")
    }


def test_a_worker_that_lost_ais_waits_for_it_then_exits_with_the_ignored_code() -> None:
    answers = iter([False, False, False, True])
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    code = unreachable_exit(ConnectionError("refused"), lambda: next(answers), 120.0, sleep, lambda: clock[0])
    assert code == EXIT_UNAVAILABLE and clock[0] == 6.0  # three failed health checks, 2 s apart

    clock[0] = 0.0
    code = unreachable_exit(ConnectionError("refused"), lambda: False, 10.0, sleep, lambda: clock[0])
    assert code == EXIT_UNAVAILABLE and clock[0] == 10.0  # bounded: hands over to a fresh pod anyway


def test_a_failure_is_the_clusters_when_ais_or_a_target_is_away_or_membership_moved() -> None:
    start = Membership(version=7, targets=2, answering=2)
    assert not cluster_disturbed(start, start)  # nothing changed: the worker's own failure, it counts
    assert cluster_disturbed(start, None)  # proxy unreachable
    assert cluster_disturbed(start, Membership(7, 2, 1))  # a target in the map does not answer (killed, not noticed)
    assert cluster_disturbed(start, Membership(8, 1, 1))  # the proxy dropped a target
    assert cluster_disturbed(start, Membership(9, 2, 2))  # it left and came back while the worker ran
    assert cluster_disturbed(None, None) and not cluster_disturbed(None, Membership(3, 2, 2))
    # waiting ends when every target is back, not merely when the proxy answers
    assert not cluster_whole(start, Membership(8, 1, 1))
    assert cluster_whole(start, Membership(9, 2, 2)) and cluster_whole(start, Membership(9, 3, 3))


def test_a_target_restarted_in_place_is_the_clusters_failure_though_the_map_did_not_move() -> None:
    started = (("t1", 1000.0), ("t2", 1000.0))
    start = Membership(7, 2, 2, started)
    # the same processes, their start times read a little differently (request latency): the worker's failure
    assert not cluster_disturbed(start, Membership(7, 2, 2, (("t1", 1000.9), ("t2", 999.2))))
    # t2 was killed and came back at its address before the proxy noticed: same map, a later start
    back = Membership(7, 2, 2, (("t1", 1000.0), ("t2", 1042.0)))
    assert restarted(start, back) == ["t2"] and cluster_disturbed(start, back)
    # a target that did not report its uptime (start time 0) or joined later is not compared
    assert restarted(Membership(7, 2, 2, (("t1", 0.0),)), Membership(7, 2, 2, (("t1", 50.0), ("t3", 60.0)))) == []


def test_a_nodes_start_time_comes_from_the_uptime_it_reports() -> None:
    assert started_at(1000.0, "30000000000") == 970.0
    assert started_at(1000.0, None) == 0.0 and started_at(1000.0, "soon") == 0.0 and started_at(1000.0, "0") == 0.0


def test_sigterm_stops_a_worker_at_once_with_its_own_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import time

    from sharded_dataset_operator.core.builders import CONFIG_ENV
    from sharded_dataset_operator.pods.common import EXIT_TERMINATED, run_main

    monkeypatch.setenv(CONFIG_ENV, "{}")
    monkeypatch.setenv("AIS_ENDPOINT", "http://127.0.0.1:9")
    reached: list[str] = []

    def run(config: dict[str, Any], index: int, ais: Any) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        reached.append("after the signal")
        return "done"

    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert run_main(run) == EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not reached


def _version_config(generation: int, workers: int = 2, previous: int | None = None) -> dict[str, Any]:
    owner = Owner(name=OWNER.name, namespace=OWNER.namespace, uid=OWNER.uid, generation=generation)
    spec = {
        "source": {"volume": {"claimName": "raw"}},
        "samples": {
            "fields": [
                {"pattern": "images/*.jpg", "name": "image.jpg"},
                {"pattern": "annotations/trimaps/*.png", "name": "trimap.png"},
            ],
            "labels": {"path": "annotations/list.txt", "name": "cls"},
        },
        "output": {"bucket": "out", "prefix": "s-", "maxSamplesPerShard": 10},
        "conversion": {"workers": workers},
        "shuffle": {"seed": "5"},
    }
    cfg = converter_config(parse_spec(spec, name="pets", default_endpoint="http://ais:1"), owner)
    if previous is not None:
        cfg["output"]["previous"] = f"s-0000000011114222-g{previous}-plan.json"
    return cfg


def _convert_version(store: MemoryStore, root: Path, cfg: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    manifest = make_plan(cfg, store, VolumeSource(str(root)))  # type: ignore[arg-type]
    workers = min(cfg["workers"], manifest["units"]["convert"])
    cfg = {**cfg, "workers": workers}
    reports = [convert(cfg, i, store, VolumeSource(str(root)), progress_interval=0) for i in range(workers)]  # type: ignore[arg-type]
    reused = json.loads(store.objects[f"out/{cfg['output']['base']}reused.json"])
    covered = (sum(r.plan_fingerprint for r in reports) + reused["planFingerprint"]) % 2**64
    assert covered == manifest["units"]["fingerprint"]  # the operator's check: the units cover the plan exactly
    return manifest, reports


def _samples_of(store: MemoryStore, names: list[str]) -> dict[str, dict[str, bytes]]:
    seen: dict[str, dict[str, bytes]] = {}
    for name in names:
        part = members(store.objects[f"out/{name}"])
        assert not set(part) & set(seen), "a sample in two shards"
        seen.update(part)
    return seen


def _change_source(root: Path, complete: list[str], added: list[str], relabelled: str) -> None:
    donor = complete[0]
    for key in added:
        shutil.copy(root / f"images/{donor}.jpg", root / f"images/{key}.jpg")
        shutil.copy(root / f"annotations/trimaps/{donor}.png", root / f"annotations/trimaps/{key}.png")
    lines = (root / "annotations/list.txt").read_text().splitlines()
    lines = [(ln.replace(f"{relabelled} ", f"{relabelled} 99 ", 1) if ln.startswith(f"{relabelled} ") else ln)
             for ln in lines]  # fmt: skip
    lines += [f"{key} 3 1 1" for key in added]
    (root / "annotations/list.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("where", ["appended", "scattered"])
def test_a_new_version_converts_only_what_changed_and_takes_over_every_intact_unit(
    dataset: tuple[Path, exampledata.Manifest], tmp_path: Path, where: str
) -> None:
    root = tmp_path / "src"
    shutil.copytree(dataset[0], root)
    store = MemoryStore()
    first, _ = _convert_version(store, root, _version_config(1))
    assert first["units"]["reused"] == 0 and first["units"]["convert"] == first["units"]["count"] >= 8
    assert first["units"]["previous"] is None and first["units"]["members"]
    # the next version: three new samples (after the last key, or sorting among the old keys), one relabelled
    complete = sorted(dataset[1]["complete"])
    relabelled = complete[len(complete) // 2]
    if where == "appended":
        added = [f"zz_new_{i}" for i in range(3)]
    else:  # right after keys spread over the whole range: each lands inside an old unit's key range
        added = [f"{complete[i]}a" for i in (5, len(complete) // 3, 2 * len(complete) // 3)]
    _change_source(root, complete, added, relabelled)
    second, reports = _convert_version(store, root, _version_config(2, previous=1))
    u = second["units"]
    changed = {relabelled, *added}
    # only the relabelled sample's old unit is broken; every other old unit is taken over whole
    assert u["previousBroken"] == 1 and u["takenOver"] == first["units"]["count"] - 1, u
    assert u["previousUnits"] == first["units"]["count"]  # not all taken over: an Append refresh reshuffles
    assert u["convertSamples"] <= 10 + len(added) and 1 <= u["convert"] <= 3, u
    assert u["streams"][""]["samples"] == u["convertSamples"]
    reused = json.loads(store.objects["out/s-0000000011114222-g2-reused.json"])
    # the records of the units taken over whole are marked (what dSort leaves out in an Append refresh)
    assert len({s["unit"] for s in reused["shards"] if s.get("takenOver")}) == u["takenOver"]
    converted = _samples_of(store, [s["name"] for r in reports for s in r.shards])
    assert changed <= set(converted)
    taken = _samples_of(store, [s["name"] for s in reused["shards"]])
    assert not set(taken) & changed and not set(taken) & set(converted)
    # exact: the taken-over and converted shards hold what a full conversion of the new source holds
    fresh = MemoryStore()
    _convert_version(fresh, root, _version_config(2))
    expected = _samples_of(fresh, [k.split("/", 1)[1] for k in fresh.objects if k.endswith(".tar")])
    assert {**taken, **converted} == expected
    assert sum(r.written for r in reports) + reused["written"] == second["samples"] == len(complete) + len(added)

    # a third version from the second: the source unchanged, everything is taken over (chained)
    third, reports = _convert_version(store, root, _version_config(3, previous=2))
    assert third["units"]["convert"] == 0 and third["units"]["previousBroken"] == 0 and not reports
    assert third["units"]["takenOver"] == second["units"]["count"] == third["units"]["previousUnits"]
    # a removed sample breaks exactly its unit
    gone = complete[-3]
    (root / f"images/{gone}.jpg").unlink()
    fourth, reports = _convert_version(store, root, _version_config(4, previous=3))
    assert fourth["units"]["previousBroken"] == 1 and fourth["units"]["takenOver"] == third["units"]["count"] - 1
    assert gone not in _samples_of(store, [s["name"] for r in reports for s in r.shards])
    assert fourth["samples"] == third["samples"] - 1


def test_a_previous_version_of_another_layout_is_not_taken_over(
    dataset: tuple[Path, exampledata.Manifest], tmp_path: Path
) -> None:
    store = MemoryStore()
    _convert_version(store, dataset[0], _version_config(1))
    cfg = _version_config(2, previous=1)
    cfg["output"]["maxSamples"] = 11
    second, _ = _convert_version(store, dataset[0], cfg)
    assert second["units"]["previous"] is None and second["units"]["takenOver"] == 0
    assert second["units"]["convert"] == second["units"]["count"]


def _split_config(rest: str | None = None, workers: int = 2) -> dict[str, Any]:
    cfg = _version_config(1, workers)
    cfg["splits"] = {
        "sets": [{"name": n, "listFile": p} for n, p in exampledata.SPLIT_PATHS.items()],
        "rest": rest,
        "keyColumn": 0,
    }
    return cfg


def test_list_splits_put_every_complete_sample_in_its_lists_split_and_units_never_mix_splits(
    dataset: tuple[Path, exampledata.Manifest],
) -> None:
    root, expected = dataset
    store = MemoryStore()
    manifest, reports = _convert_version(store, root, _split_config())
    streams = manifest["units"]["streams"]
    assert sorted(streams) == ["test", "trainval"]
    assert sum(s["samples"] for s in streams.values()) == manifest["samples"] == len(expected["complete"])
    by_split: dict[str, set[str]] = {}
    for r in reports:
        for shard in r.shards:
            keys = set(members(store.objects[f"out/{shard['name']}"]))
            by_split.setdefault(shard["split"], set()).update(keys)
    assert by_split == {k: set(v) for k, v in expected["splits"].items()}
    # the list files are not unmatched files, and every key of the lists that has files is planned
    assert manifest["unmatchedFiles"] == 1  # expected.json; the list files are read, not unmatched
    assert manifest["splitKeysWithoutFiles"] == 1  # the orphan key of list.txt is in a split list too


def test_a_key_in_no_list_goes_to_the_rest_split_or_is_skipped_and_a_key_in_two_lists_fails_the_plan(
    dataset: tuple[Path, exampledata.Manifest], tmp_path: Path
) -> None:
    root = tmp_path / "src"
    shutil.copytree(dataset[0], root)
    complete = dataset[1]["complete"]
    alone, *twice = dataset[1]["splits"]["test"][:3]
    test_list = root / exampledata.SPLIT_PATHS["test"]
    kept = [ln for ln in test_list.read_text().splitlines() if ln.split(" ", 1)[0] != alone]
    test_list.write_text("\n".join(kept) + "\n")  # `alone` (a test key) is now in no list
    skipped = make_plan(_split_config(), MemoryStore(), VolumeSource(str(root)))  # type: ignore[arg-type]
    assert skipped["skipped"]["not-in-split"] == 1 and skipped["samples"] == len(complete) - 1
    assert skipped["examples"]["not-in-split"] == [alone]
    rest = make_plan(_split_config(rest="other"), MemoryStore(), VolumeSource(str(root)))  # type: ignore[arg-type]
    assert rest["samples"] == len(complete) and rest["units"]["streams"]["other"]["samples"] == 1
    # two test keys are listed in trainval.txt too
    trainval = root / exampledata.SPLIT_PATHS["trainval"]
    trainval.write_text(trainval.read_text() + "".join(f"{k} 1 1 1\n" for k in twice))
    with pytest.raises(
        PermanentError, match=r"2 key\(s\) are in more than one split list, e\.g\. .*\(trainval, test\)"
    ):
        make_plan(_split_config(), MemoryStore(), VolumeSource(str(root)))  # type: ignore[arg-type]


def _fraction_config(generation: int = 1, previous: int | None = None) -> dict[str, Any]:
    cfg = _version_config(generation, previous=previous)
    cfg["splits"] = {
        "sets": [
            {"name": "train", "fraction": 0.8},
            {"name": "val", "fraction": 0.1},
            {"name": "test", "fraction": 0.1},
        ],
        "rest": None,
        "keyColumn": 0,
        "seed": "11",
        "stratifyBy": "cls",
    }
    return cfg


def _splits_of(store: MemoryStore, manifest: dict[str, Any]) -> dict[str, str]:
    """key -> split, from the plan chunks."""
    from sharded_dataset_operator.core.plan import decode_sample

    out = {}
    for chunk in manifest["chunks"]:
        for line in store.objects[f"out/{chunk}"].decode().splitlines():
            sample = decode_sample(line)
            assert sample.split is not None
            out[sample.key] = sample.split
    return out


def test_fraction_splits_keep_each_labels_shares_within_one_sample_and_a_refresh_moves_no_old_sample(
    dataset: tuple[Path, exampledata.Manifest], tmp_path: Path
) -> None:
    root = tmp_path / "src"
    shutil.copytree(dataset[0], root)
    classes = dataset[1]["classes"]
    store = MemoryStore()
    first, reports = _convert_version(store, root, _fraction_config(1))
    assigned = _splits_of(store, first)
    assert sorted(assigned) == sorted(dataset[1]["complete"])
    for cls in set(classes.values()):
        keys = [k for k in assigned if classes[k] == cls]
        for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert abs(sum(assigned[k] == split for k in keys) - share * len(keys)) < 1, (cls, split)
    assert {s["split"] for r in reports for s in r.shards} == {"train", "val", "test"}
    assert not [k for k in store.objects if "plan-run-" in k]  # the sort runs are gone
    # the same source again: the same split for every sample
    again = MemoryStore()
    assert _splits_of(again, _convert_version(again, root, _fraction_config(1))[0]) == assigned
    # three new samples: every old one keeps its split
    complete = sorted(dataset[1]["complete"])
    _change_source(root, complete, [f"{complete[i]}a" for i in (3, 30, 60)], complete[0])
    second, _ = _convert_version(store, root, _fraction_config(2, previous=1))
    now = _splits_of(store, second)
    assert all(now[k] == v for k, v in assigned.items()) and len(now) == len(assigned) + 3
