"""Generic layouts end to end (issue 26): examples 10 to 13 on their example-data layouts, plus Hugging Face
metadata as CSV and Parquet and path keys, all applied at once (they share no fault), then each read back with
the webdataset library and compared byte for byte with what the generator says a correct conversion holds.
Then an ImageFolder refresh adds a class folder that sorts first: no class is renumbered."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sds_tools import layouts
from sharded_dataset_operator.clients.ais import Ais
from sharded_dataset_operator.core.builders import order_rank

from ..layout_cases import CASES, point_at_table
from .conftest import REPO, Kube, unique, wait_until
from .test_operator import read_shards, wait_ready

pytestmark = pytest.mark.e2e


def resource(name: str, namespace: str, raw: str, out: str) -> dict[str, Any]:
    example, _, size = CASES[name]
    obj: dict[str, Any] = yaml.safe_load((REPO / "examples" / example).read_text())
    obj["metadata"].update(name=name, namespace=namespace)
    spec = obj["spec"]
    spec["source"]["ais"]["bucket"] = raw
    spec["output"].update(bucket=out, prefix=f"{name}-", maxShardSize="256KiB")  # one output bucket for all
    spec["shuffle"]["outputShardSize"] = "512KiB"
    point_at_table(spec, size)
    return obj


def path_keys(namespace: str, raw: str, out: str) -> dict[str, Any]:
    """Files with the same name in different class folders, kept apart by path keys (no shuffle)."""
    return {
        "apiVersion": "shardeddataset.dev/v1alpha1",
        "kind": "ShardedDataset",
        "metadata": {"name": "path-keys", "namespace": namespace},
        "spec": {
            "source": {"ais": {"bucket": raw, "prefix": "pets/"}},
            "samples": {
                "key": {"from": "path"},
                "fields": [{"pattern": "**/*.jpg", "name": "jpg"}],
                "classes": {"nameMember": "txt"},
            },
            "output": {"bucket": out, "maxSamplesPerShard": 2},
        },
    }


PETS = {"cat/1.jpg": b"cat one", "dog/1.jpg": b"dog one", "dog/2.jpg": b"dog two", "dog/puppies/1.jpg": b"pup"}


def samples_of(ais: Ais, bucket: str, index_url: str, tmp: Path) -> list[dict[str, Any]]:
    index = json.loads(ais.get(bucket, index_url.removeprefix(f"ais://{bucket}/")) or b"{}")
    tmp.mkdir(parents=True, exist_ok=True)
    return read_shards(ais, bucket, [s["url"] for s in index["shardlist"]], tmp)


def assert_exact(samples: list[dict[str, Any]], expected: dict[str, dict[str, bytes]], seed: str) -> None:
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)), "a sample appears twice"
    assert sorted(keys) == sorted(expected)
    for s in samples:
        assert int(s["__order__"]) == order_rank(seed, s["__key__"])
        got = {k: v for k, v in s.items() if not k.startswith("__")}
        assert got == expected[s["__key__"]], f"members of {s['__key__']} differ"


def test_layout_examples_convert_exactly_and_a_new_class_keeps_every_index(
    kube: Kube, namespace: str, ais: Ais, cluster_env: dict[str, str], operator: Any, tmp_path: Path
) -> None:
    out = unique("layouts")
    raws: dict[str, str] = {}
    for name, (_, layout, size) in CASES.items():
        raws[name] = unique(name)
        layouts.write_layout_ais(layout, cluster_env["AIS_ENDPOINT"], raws[name], workers=4, seed=3, **size)
        kube.apply(resource(name, namespace, raws[name], out))
    pets = unique("pets")
    ais.ensure_bucket(pets)
    for rel, data in PETS.items():
        ais.put(pets, f"pets/{rel}", data)
    kube.apply(path_keys(namespace, pets, out))

    ready = {name: wait_ready(kube, namespace, name, timeout=600) for name in [*CASES, "path-keys"]}
    for name, (_, layout, size) in CASES.items():
        st = ready[name]["status"]
        want = layouts.expected(layout, seed=3, **size)
        seed = str(resource(name, namespace, "", "")["spec"]["shuffle"]["seed"])
        assert st["samples"]["written"] == len(want.samples), name
        assert st["samples"]["skippedByReason"] == want.skipped, name
        assert st["samples"].get("rows", {}).get("no-file", 0) == want.no_file_rows, name
        if want.splits:
            for split in sorted(set(want.splits.values())):
                got = samples_of(ais, out, st["splits"][split]["index"], tmp_path / name / split)
                assert_exact(got, {k: v for k, v in want.samples.items() if want.splits[k] == split}, seed)
        else:
            assert_exact(samples_of(ais, out, st["indexObject"], tmp_path / name), want.samples, seed)
        if want.classes:
            assert st["classes"] == {"count": len(want.classes), "mapping": want.classes}
    audio = ready["audio-csv"]["status"]["samples"]
    assert audio["rows"] == {"no-file": 1, "short-row": 1}  # the row that lost its separators

    pk = ready["path-keys"]["status"]
    got = {s["__key__"]: (s["jpg"], s["txt"]) for s in samples_of(ais, out, pk["indexObject"], tmp_path / "pk")}
    assert got == {
        "cat/1": (b"cat one", b"cat"),
        "dog/1": (b"dog one", b"dog"),
        "dog/2": (b"dog two", b"dog"),
        "dog/puppies/1": (b"pup", b"puppies"),
    }

    # A class folder that sorts first arrives; a refresh numbers it after the others and renumbers nobody.
    first = ready["imagefolder"]
    before = dict(first["status"]["classes"]["mapping"])
    for rel, data in layouts.add_class_files("aaa", seed=3, count=3):
        ais.put(raws["imagefolder"], rel, data)
    kube.run("annotate", "sds", "imagefolder", "-n", namespace, "shardeddataset.dev/refresh=aaa")

    def refreshed() -> dict[str, Any] | None:
        obj = kube.get("sds", "imagefolder", namespace) or {}
        published = (((obj.get("status") or {}).get("versions") or {}).get("published") or {}).get("version")
        return obj if published and published != first["status"]["versions"]["published"]["version"] else None

    second = wait_until(refreshed, 600, "the refresh with class aaa published")
    mapping = second["status"]["classes"]["mapping"]
    assert mapping == {**before, "aaa": len(before)}
    train = second["status"]["splits"]["train"]["index"]
    index = json.loads(ais.get(out, train.removeprefix(f"ais://{out}/")) or b"{}")
    assert index["info"]["classes"] == mapping
    new = [s for s in samples_of(ais, out, train, tmp_path / "refreshed") if s["__key__"].startswith("aaa_")]
    assert len(new) == 3 and {s["cls"] for s in new} == {str(len(before)).encode()}
    old = copy.deepcopy(layouts.expected("imagefolder", seed=3, **CASES["imagefolder"][2]).samples)
    kept = {s["__key__"]: s["cls"] for s in samples_of(ais, out, train, tmp_path / "again") if s["__key__"] in old}
    assert kept and all(cls == old[k]["cls"] for k, cls in kept.items())


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ({"key": {"from": "regex", "regex": "(?P<id>.*)"}}, "spec.samples.key.regex: needs a named group"),
        (
            {"tables": [{"path": "m.csv", "header": False, "members": [{"column": "a", "name": "txt"}]}]},
            "a table without a header needs its column names",
        ),
        (
            {
                "tables": [
                    {
                        "path": "m.csv",
                        "header": False,
                        "columns": ["id"],
                        "join": {"column": "id", "by": "key"},
                        "members": [{"column": "text", "name": "txt"}],
                    }
                ]
            },
            "every column used must be among columns",
        ),
        ({"tables": [{"path": "meta.xlsx", "members": [{"column": "a", "name": "txt"}]}]}, "cannot be told"),
        ({"classes": {"indexMember": "jpg"}}, "the class members must differ from every field name"),
        ({"required": ["jpg", "caption"]}, "spec.samples.required: every entry must be a member"),
    ],
)
def test_bad_layouts_are_refused_by_the_api_server_naming_the_field(
    kube: Kube, samples: dict[str, Any], message: str
) -> None:
    obj = path_keys("default", "raw", "out")
    obj["spec"]["samples"] = {"fields": [{"pattern": "*/*.jpg", "name": "jpg"}], **samples}
    p = kube.try_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
    assert p.returncode != 0 and message in p.stderr, p.stderr


def test_splits_by_folder_and_by_a_table_column_are_accepted(kube: Kube) -> None:
    obj = path_keys("default", "raw", "out")
    obj["spec"]["samples"]["tables"] = [{"path": "meta.csv", "members": [{"column": "split", "name": "split"}]}]
    obj["spec"]["splits"] = {"member": "split", "sets": [{"name": "train"}, {"name": "validation", "value": "val"}]}
    p = kube.try_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
    assert p.returncode == 0, p.stderr
    obj["spec"]["splits"]["sets"][1]["folder"] = "val"  # a member split has a value, not a folder
    p = kube.try_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
    assert p.returncode != 0 and "with splits.member, only a name and a value" in p.stderr, p.stderr


def test_stratify_by_a_class_is_accepted_and_a_split_member_must_be_a_value_member(kube: Kube) -> None:
    obj = path_keys("default", "raw", "out")
    obj["spec"]["samples"]["classes"] = {"indexMember": "cls"}
    obj["spec"]["splits"] = {
        "stratifyBy": "cls",
        "sets": [{"name": "a", "fraction": 0.5}, {"name": "b", "fraction": 0.5}],
    }
    p = kube.try_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
    assert p.returncode == 0, p.stderr
    obj["spec"]["splits"] = {"member": "split", "sets": [{"name": "a"}, {"name": "b"}]}
    p = kube.try_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
    assert p.returncode != 0 and "spec.splits.member must be a value member" in p.stderr, p.stderr
