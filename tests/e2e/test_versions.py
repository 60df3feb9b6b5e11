"""Living datasets end to end: a new version is built beside the published one, published by one PUT of the
stable index, and the replaced version stays readable for `retainPrevious`; readers never see a missing shard."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Ais
from sharded_dataset_operator.core import naming

from .conftest import Kube, unique, wait_until
from .test_operator import FULL_FLOW_SAMPLES, condition, dataset, raw_dataset, wait_phase, wait_ready

pytestmark = pytest.mark.e2e


@dataclass
class Reader:
    """Loops over every shard of the published version, each pass through the index it opened at its start,
    like a training job's epoch; records every error and what each pass saw."""

    ais: Ais
    bucket: str
    index: str
    passes: list[tuple[str, int, frozenset[str]]] = field(default_factory=list)  # (version, shards, keys)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                body = json.loads(self.ais.get(self.bucket, self.index) or b"{}")
                keys: set[str] = set()
                directory = self.index.rsplit("/", 1)[0] + "/" if "/" in self.index else ""
                for shard in body["shardlist"]:
                    data = self.ais.get(self.bucket, directory + shard["url"])
                    if data is None:
                        self.errors.append(f"{body['info']['version']}: {shard['url']} is missing")
                        continue
                    if len(data) != shard["filesize"]:
                        self.errors.append(f"{shard['url']}: {len(data)} bytes, the index says {shard['filesize']}")
                    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                        keys.update(m.name.split(".", 1)[0] for m in tf)
                self.passes.append((body["info"]["version"], len(body["shardlist"]), frozenset(keys)))
            except Exception as e:  # every failure of a pass is what the test is about
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.2)

    def __enter__(self) -> Reader:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def published(obj: dict[str, Any] | None) -> str | None:
    return (((obj or {}).get("status") or {}).get("versions") or {}).get("published", {}).get("version")


def test_a_spec_change_builds_beside_the_published_version_and_its_readers_never_fail(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    raw = raw_dataset(ais, cluster_env, FULL_FLOW_SAMPLES)
    complete = frozenset(raw.manifest["complete"])
    out = unique("living")
    obj = dataset("living", namespace, raw.bucket, out, deletionPolicy="Delete")
    obj["spec"]["output"]["retainPrevious"] = "20s"
    obj["spec"]["shuffle"]["outputShardSize"] = "4MiB"
    kube.apply(obj)
    first = wait_ready(kube, namespace, "living")
    tag = naming.uid_tag(first["metadata"]["uid"])
    assert published(first) == "g1" and first["status"]["versions"].get("building") is None
    assert condition(first, "UpToDate")["status"] == "True"

    with Reader(ais, out, "shuffled-index.json") as reader:
        wait_until(lambda: len(reader.passes) >= 2, 60, "the reader's first passes")
        obj["spec"]["shuffle"]["outputShardSize"] = "8MiB"
        kube.apply(obj)
        building = wait_until(
            lambda: (
                (o := kube.get("sds", "living", namespace))
                and (o["status"].get("versions") or {}).get("building")
                and o["status"]["phase"] in ("Converting", "Shuffling", "Verifying")
                and o
            ),
            120,
            "generation 2 building",
            interval=0.3,
        )
        # the published version serves while the new one builds
        assert condition(building, "Ready")["status"] == "True" and condition(building, "Ready")["reason"] == "Serving"
        assert condition(building, "UpToDate")["status"] == "False"
        assert published(building) == "g1" and building["status"]["versions"]["building"]["version"] == "g2"
        second = wait_until(
            lambda: (o := kube.get("sds", "living", namespace)) and published(o) == "g2" and o, 300, "g2 published"
        )
        seen = len(reader.passes)
        wait_until(lambda: len(reader.passes) >= seen + 2, 60, "reader passes over the new version")

    assert reader.errors == [], reader.errors[:5]
    versions = [v for v, _, _ in reader.passes]
    assert "g1" in versions and "g2" in versions
    assert versions == sorted(versions), "a reader went back to the old version"
    for version, shards, keys in reader.passes:
        assert keys == complete, f"a pass over {version} ({shards} shards) saw an incomplete version"
    assert {v: s for v, s, _ in reader.passes}["g2"] < {v: s for v, s, _ in reader.passes}["g1"]

    # the stable index names only the new version's shards; the old one is kept until retainPrevious
    stable = json.loads(ais.get(out, "shuffled-index.json") or b"{}")
    assert stable["info"]["version"] == "g2"
    assert all(f"{tag}-g2-" in s["url"] for s in stable["shardlist"])
    own = json.loads(ais.get(out, f"shuffled-{tag}-g2-index.json") or b"{}")
    assert own == stable
    previous = second["status"]["versions"]["previous"]
    assert [p["version"] for p in previous] == ["g1"] and previous[0]["deleteAfter"]
    assert ais.get(out, f"shuffled-{tag}-g1-index.json") is not None
    # ... then deleted, with its own index; the new version's objects stay
    wait_until(lambda: not [e for e in ais.list_objects(out) if f"{tag}-g1-" in e.name], 90, "g1 deleted")
    final = wait_until(
        lambda: (o := kube.get("sds", "living", namespace)) and not o["status"]["versions"]["previous"] and o,
        60,
        "status without previous versions",
    )
    assert [a["version"] for a in final["status"]["artifacts"]] == ["g2"]
    assert "VersionDeleted" in {e["reason"] for e in kube.events(namespace, "living")}
    assert [e for e in ais.list_objects(out) if f"{tag}-g2-" in e.name]

    # deletionPolicy Delete still removes every version and the stable index
    kube.run("delete", "sds", "living", "-n", namespace, "--timeout=120s")
    assert [e.name for e in ais.list_objects(out)] == []


def test_a_failed_new_version_leaves_the_published_one_ready_and_readable(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any
) -> None:
    raw = raw_dataset(ais, cluster_env, FULL_FLOW_SAMPLES)
    out = unique("keep")
    obj = dataset("keep", namespace, raw.bucket, out)
    kube.apply(obj)
    first = wait_ready(kube, namespace, "keep")
    before = json.loads(ais.get(out, "shuffled-index.json") or b"{}")

    # generation 2: a transform that raises on every sample (json.loads on the sample dict)
    obj["spec"]["transform"] = {"function": {"name": "json:loads"}}
    kube.apply(obj)
    failed = wait_phase(kube, namespace, "keep", ("Failed", "Ready"), timeout=300)
    st = failed["status"]
    assert st["phase"] == "Failed", json.dumps(st, indent=1)
    assert condition(failed, "Ready")["status"] == "True" and condition(failed, "Ready")["reason"] == "Serving"
    assert condition(failed, "Stalled")["status"] == "True"
    assert condition(failed, "Stalled")["reason"] == "ConversionFailed"
    assert condition(failed, "UpToDate")["status"] == "False"
    ready_msg = condition(failed, "Ready")["message"]
    assert "serving version g1" in ready_msg and "g2" in ready_msg and "transform" in ready_msg
    assert st["versions"]["published"]["version"] == "g1"
    assert st["versions"]["building"]["version"] == "g2" and st["versions"]["building"]["reason"] == "ConversionFailed"
    # g1 is untouched and readable: the same index, every shard present with its size
    assert json.loads(ais.get(out, "shuffled-index.json") or b"{}") == before
    for shard in before["shardlist"]:
        assert len(ais.get(out, shard["url"]) or b"") == shard["filesize"]
    assert first["status"]["versions"]["published"]["samples"] == st["versions"]["published"]["samples"]


def _version_of(refresh: str, generation: int = 1) -> str:
    from sharded_dataset_operator.core.naming import version_id

    return version_id(generation, refresh)


def test_a_refresh_converts_only_the_changed_units_and_the_newest_request_wins(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Any
) -> None:
    from .test_operator import RawDataset, assert_complete_samples, check_index, read_shards

    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], 600, seed=11, sample_kib=8)  # its own: it changes
    out = unique("fresh")
    obj = dataset("fresh", namespace, raw.bucket, out, conversion={"workers": 2})
    obj["spec"]["output"] = {"bucket": out, "prefix": "samples-", "maxSamplesPerShard": 20, "retainPrevious": "0s"}
    kube.apply(obj)
    first = wait_ready(kube, namespace, "fresh")
    tag = naming.uid_tag(first["metadata"]["uid"])
    pool = f"samples-{tag}-u"
    before = {e.name: ais.get(out, e.name) for e in ais.list_objects(out, prefix=pool)}
    assert first["status"]["conversion"]["reusedShards"] == 0 and before

    # the source changes: 1 % new samples among the old keys, three samples relabelled
    complete = sorted(raw.manifest["complete"])
    added = [f"{complete[i].rsplit('_', 1)[0]}_9{i:03d}" for i in range(0, 600, 100)]
    for i, key in enumerate(added):
        donor = complete[i * 7]
        raw.files[f"images/{key}.jpg"] = raw.files[f"images/{donor}.jpg"] + key.encode()
        raw.files[f"annotations/trimaps/{key}.png"] = raw.files[f"annotations/trimaps/{donor}.png"] + key.encode()
        ais.put(raw.bucket, f"images/{key}.jpg", raw.files[f"images/{key}.jpg"])
        ais.put(raw.bucket, f"annotations/trimaps/{key}.png", raw.files[f"annotations/trimaps/{key}.png"])
        raw.manifest["classes"][key] = "7"
    relabelled = [complete[50], complete[250], complete[450]]
    lines = []
    for line in (ais.get(raw.bucket, "annotations/list.txt") or b"").decode().splitlines():
        key = line.split(" ", 1)[0]
        if key in relabelled:
            line = " ".join([key, "37", *line.split()[2:]])
            raw.manifest["classes"][key] = "37"
        lines.append(line)
    lines += [f"{key} 7 1 7" for key in added]
    ais.put(raw.bucket, "annotations/list.txt", ("\n".join(lines) + "\n").encode())
    raw.manifest["complete"] = sorted([*complete, *added])
    changed = {*added, *relabelled}

    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:  # every version the stable index ever names
        while not stop.is_set():
            info = json.loads(ais.get(out, "shuffled-index.json") or b"{}").get("info") or {}
            seen.add(str(info.get("version")))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # two refresh requests in quick succession: the first is superseded while it builds
        kube.run("annotate", "sds", "fresh", "-n", namespace, "shardeddataset.dev/refresh=first")
        wait_until(
            lambda: (
                ((kube.get("sds", "fresh", namespace) or {}).get("status", {}).get("versions") or {})
                .get("building", {})
                .get("version")
                == _version_of("first")
            ),
            60,
            "the first refresh building",
            interval=0.3,
        )
        kube.run("annotate", "sds", "fresh", "-n", namespace, "shardeddataset.dev/refresh=second", "--overwrite")
        done = wait_until(
            lambda: (o := kube.get("sds", "fresh", namespace)) and published(o) == _version_of("second") and o,
            300,
            "the second refresh published",
        )
    finally:
        stop.set()
        watcher.join(10)
    assert seen <= {"g1", _version_of("second")}, seen  # nothing half-built was ever published
    st = done["status"]
    assert st["phase"] == "Ready" and st["samples"]["written"] == len(raw.manifest["complete"])
    assert st["versions"]["published"]["refresh"] == "second"

    # exact: every complete sample of the new source once, byte-identical, new labels included
    shardlist = check_index(ais, done, out, "shuffled-index.json")
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shardlist], tmp_path))

    # only the invalidated units were converted (from the reports and the plan's unit table)
    version = _version_of("second")
    base = f"samples-{tag}-{version}-"
    reports = [json.loads(ais.get(out, e.name) or b"{}") for e in ais.list_objects(out, prefix=f"{base}report-")]
    converted = {s["name"]: s for r in reports for s in r["shards"]}
    plan = json.loads(ais.get(out, f"{base}plan.json") or b"{}")
    table = [
        json.loads(line) for c in plan["units"]["chunks"] for line in (ais.get(out, c) or b"").decode().splitlines()
    ]
    reused = json.loads(ais.get(out, f"{base}reused.json") or b"{}")
    assert st["conversion"]["reusedShards"] == len(reused["shards"]) > 0
    keys_of = {}
    for name in [*converted, *(s["name"] for s in reused["shards"])]:
        with tarfile.open(fileobj=io.BytesIO(ais.get(out, name) or b"")) as tf:
            keys_of[name] = {m.name.split(".", 1)[0] for m in tf}
    # the units this refresh cut (converted by it, or by the superseded first refresh of the same source) hold
    # the new samples and those of the first version's units that held a relabelled one: a new key breaks no
    # unit, wherever it sorts. Every other unit of the first version was taken over whole, the very objects.
    cut = {u[0] for u in table if u[6] in (0, 1)}
    records = [*converted.values(), *reused["shards"]]
    cut_keys = set().union(*(keys_of[r["name"]] for r in records if r["unit"] in cut))
    assert changed <= cut_keys, changed - cut_keys
    first_keys = {}
    for name, data in before.items():
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            first_keys[name] = {m.name.split(".", 1)[0] for m in tf}
    broken = {name for name, k in first_keys.items() if k & set(relabelled)}
    assert cut_keys <= set(added).union(*(first_keys[n] for n in broken)), cut_keys - set(added)
    taken = [r for r in reused["shards"] if r["unit"] not in cut]
    assert sorted(r["name"] for r in taken) == sorted(set(before) - broken)
    for r in taken:
        assert before[r["name"]] == ais.get(out, r["name"])
    assert len(cut) <= 3 * len(changed)
    assert sum(s["samples"] for s in converted.values()) < 0.25 * len(raw.manifest["complete"])

    # the superseded refresh left nothing behind: no objects, no Jobs
    first_base = f"samples-{tag}-{_version_of('first')}-"
    wait_until(lambda: not list(ais.list_objects(out, prefix=first_base)), 60, "the first refresh deleted")
    assert not [j for j in kube.list("jobs", namespace) if _version_of("first") in j["metadata"]["name"]]
    assert not list(ais.list_objects(out, prefix=f"shuffled-{tag}-{_version_of('first')}-"))
    # and the old version went at publish (retainPrevious: 0s), with every unit no version holds
    wait_until(lambda: not list(ais.list_objects(out, prefix=f"samples-{tag}-g1-")), 60, "g1 deleted")
    held = set(converted) | {s["name"] for s in reused["shards"]}
    wait_until(lambda: {e.name for e in ais.list_objects(out, prefix=pool)} == held, 60, "only held units left")


def test_an_append_refresh_shuffles_only_the_added_samples_and_keeps_the_published_shards(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Any
) -> None:
    """spec.shuffle.refreshMode Append: a refresh that only added samples gives dSort the new units alone and
    copies the published version's shuffled shards (byte for byte) into the new version; a refresh that changed
    a sample shuffles everything again, and the ShuffleMode event says why."""
    from .test_operator import RawDataset, assert_complete_samples, check_index, read_shards
    from .test_promises import events

    raw = RawDataset(ais, cluster_env["AIS_ENDPOINT"], 300, seed=13, sample_kib=8)
    out = unique("append")
    obj = dataset("grows", namespace, raw.bucket, out, conversion={"workers": 2})
    obj["spec"]["output"] = {"bucket": out, "prefix": "samples-", "maxSamplesPerShard": 20, "retainPrevious": "0s"}
    obj["spec"]["shuffle"]["refreshMode"] = "Append"
    obj["spec"]["shuffle"]["outputShardSize"] = "256KiB"
    kube.apply(obj)
    wait_ready(kube, namespace, "grows")
    old_index = json.loads(ais.get(out, "shuffled-index.json") or b"{}")
    old_shards = [ais.get(out, s["url"]) for s in sorted(old_index["shardlist"], key=lambda s: s["url"])]
    assert len(old_shards) >= 3 and "appended" not in old_index["info"]

    # 5 new samples, sorting among the old keys; nothing else changes
    complete = sorted(raw.manifest["complete"])
    added = [f"{complete[i].rsplit('_', 1)[0]}_8{i:03d}" for i in range(0, 300, 60)]
    lines = (ais.get(raw.bucket, "annotations/list.txt") or b"").decode().splitlines()
    for i, key in enumerate(added):
        donor = complete[i * 11]
        for path in (f"images/{key}.jpg", f"annotations/trimaps/{key}.png"):
            raw.files[path] = raw.files[path.replace(key, donor)] + key.encode()
            ais.put(raw.bucket, path, raw.files[path])
        raw.manifest["classes"][key] = "5"
        lines.append(f"{key} 5 1 5")
    ais.put(raw.bucket, "annotations/list.txt", ("\n".join(lines) + "\n").encode())
    raw.manifest["complete"] = sorted([*complete, *added])

    kube.run("annotate", "sds", "grows", "-n", namespace, "shardeddataset.dev/refresh=more")
    done = wait_until(
        lambda: (o := kube.get("sds", "grows", namespace)) and published(o) == _version_of("more") and o,
        300,
        "the append refresh published",
    )
    assert done["status"]["samples"]["written"] == len(raw.manifest["complete"]), done["status"]["samples"]
    shardlist = check_index(ais, done, out, "shuffled-index.json")
    index = json.loads(ais.get(out, "shuffled-index.json") or b"{}")
    assert index["info"]["appended"] == {"to": "g1", "keptShards": len(old_shards)}
    kept = sorted(s["url"] for s in shardlist if "-a1-k" in s["url"])
    assert [ais.get(out, url) for url in kept] == old_shards  # the published shards, copied byte for byte
    new = [s["url"] for s in shardlist if s["url"] not in kept]
    new_samples = read_shards(ais, out, new, _fresh(tmp_path / "new"))
    assert sorted(s["__key__"] for s in new_samples) == sorted(added)  # dSort shuffled the added samples only
    all_samples = read_shards(ais, out, [s["url"] for s in shardlist], _fresh(tmp_path / "all"))
    assert_complete_samples(raw, all_samples)
    assert any("appending 5 new samples" in m for m in events(kube, namespace, "grows", "ShuffleMode"))

    # a relabelled sample breaks its unit: everything is shuffled again, and the event says why
    lines = [" ".join([complete[7], "9", *ln.split()[2:]]) if ln.startswith(f"{complete[7]} ") else ln for ln in lines]
    ais.put(raw.bucket, "annotations/list.txt", ("\n".join(lines) + "\n").encode())
    raw.manifest["classes"][complete[7]] = "9"
    kube.run("annotate", "sds", "grows", "-n", namespace, "shardeddataset.dev/refresh=relabel", "--overwrite")
    again = wait_until(
        lambda: (o := kube.get("sds", "grows", namespace)) and published(o) == _version_of("relabel") and o,
        300,
        "the reshuffling refresh published",
    )
    shardlist = check_index(ais, again, out, "shuffled-index.json")
    assert "appended" not in json.loads(ais.get(out, "shuffled-index.json") or b"{}")["info"]
    assert not any("-k" in s["url"].rsplit("-a", 1)[-1] for s in shardlist)
    assert_complete_samples(raw, read_shards(ais, out, [s["url"] for s in shardlist], _fresh(tmp_path / "again")))
    why = [m for m in events(kube, namespace, "grows", "ShuffleMode") if "shuffled again" in m]
    assert why and "lost or changed samples" in why[0], why


def _fresh(directory: Any) -> Any:
    directory.mkdir()
    return directory
