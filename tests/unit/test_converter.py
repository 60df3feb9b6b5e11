"""The converter worker over a directory source, writing into an in-memory object store."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sharded_dataset_operator import exampledata
from sharded_dataset_operator.builders import Owner, converter_config
from sharded_dataset_operator.converter.main import PermanentError, Tuning, convert
from sharded_dataset_operator.converter.sources import VolumeSource
from sharded_dataset_operator.spec import parse_spec

OWNER = Owner(name="pets", namespace="ml", uid="00000000-1111-4222-8333-444444444444", generation=1)


class MemoryStore:
    """Stands in for the AIS client's put (the only call convert() makes on the output side)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, bucket: str, name: str, data: bytes, provider: str = "ais") -> None:
        self.objects[f"{bucket}/{name}"] = data


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


def run_all(root: Path, cfg: dict[str, Any]) -> tuple[MemoryStore, list[Any]]:
    store = MemoryStore()
    reports = [
        convert(cfg, i, store, VolumeSource(str(root)), Tuning(fetch_threads=4))  # type: ignore[arg-type]
        for i in range(cfg["workers"])
    ]
    return store, reports


def members(data: bytes) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            f = tf.extractfile(m)
            assert f is not None and m.mtime == 0 and m.mode == 0o444
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = f.read()
    return out


def test_workers_write_every_complete_sample_once_and_count_the_rest(
    dataset: tuple[Path, exampledata.Manifest],
) -> None:
    root, manifest = dataset
    store, reports = run_all(root, config())
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
    assert sum(r.written for r in reports) == len(manifest["complete"])
    expected_skips = {reason: len(keys) for reason, keys in manifest["incomplete"].items() if keys}
    assert all(r.skipped == expected_skips for r in reports)
    assert reports[0].rejected_files == {"invalid-key": len(manifest["junk_files"])}
    assert len({r.listing_digest for r in reports}) == 1
    report0 = json.loads(store.objects["out/s-00000000-g1-report-w0000.json"])
    assert report0["written"] == reports[0].written and report0["shards"] == reports[0].shards


def test_reruns_write_byte_identical_shards(dataset: tuple[Path, exampledata.Manifest]) -> None:
    root, _ = dataset
    first, _ = run_all(root, config())
    second, _ = run_all(root, config())
    tars = {k: v for k, v in first.objects.items() if k.endswith(".tar")}
    assert tars == {k: v for k, v in second.objects.items() if k.endswith(".tar")}


def test_shards_are_cut_by_size(dataset: tuple[Path, exampledata.Manifest]) -> None:
    root, _ = dataset
    _, reports = run_all(root, config(workers=1, maxSamplesPerShard=None, maxShardSize="200KiB"))
    sizes = [s["bytes"] for s in reports[0].shards]
    assert len(sizes) > 2 and all(s <= 200 * 1024 for s in sizes)


def test_missing_labels_file_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images/a.jpg").write_bytes(b"x")
    with pytest.raises(PermanentError, match=r"labels file annotations/list\.txt not found"):
        convert(config(workers=1), 0, MemoryStore(), VolumeSource(str(tmp_path)))  # type: ignore[arg-type]


def test_missing_source_directory_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        convert(config(workers=1), 0, MemoryStore(), VolumeSource(str(tmp_path / "nope")))  # type: ignore[arg-type]
