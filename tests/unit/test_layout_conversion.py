"""The planner and converter on each example layout (examples 10 to 13, and Hugging Face metadata as CSV and
Parquet), from a directory: every converted sample is exactly what the example-data generator says, skips and
unused rows are counted by reason. The same run as the e2e test, without the cluster, in a second."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from sds_tools import layouts
from sharded_dataset_operator.core.builders import converter_config
from sharded_dataset_operator.core.spec import parse_spec
from sharded_dataset_operator.pods.converter import convert
from sharded_dataset_operator.pods.planner import make_plan
from sharded_dataset_operator.pods.sources import VolumeSource

from ..layout_cases import CASES, point_at_table
from .conftest import REPO
from .test_converter import OWNER, MemoryStore


def example_config(name: str, workers: int = 2) -> dict[str, Any]:
    example, _, size = CASES[name]
    spec: dict[str, Any] = yaml.safe_load((REPO / "examples" / example).read_text())["spec"]
    spec["source"] = {"volume": {"claimName": "raw"}}
    spec["output"].update(maxShardSize="64KiB")
    spec["conversion"] = {"workers": workers}
    point_at_table(spec, size)
    return converter_config(parse_spec(spec, name=name, default_endpoint="http://ais:1"), OWNER)


def converted(store: MemoryStore) -> tuple[dict[str, dict[str, bytes]], dict[str, str]]:
    """Every sample in the converted shards (key -> members) and the split each shard was for."""
    samples: dict[str, dict[str, bytes]] = {}
    splits: dict[str, str] = {}
    for name, data in sorted(store.objects.items()):
        if not name.endswith(".tar"):
            continue
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for m in tf:
                f = tf.extractfile(m)
                assert f is not None
                slash = m.name.rfind("/")
                dot = m.name.index(".", slash + 1)
                key, member = m.name[:dot], m.name[dot + 1 :]
                if not member.startswith("__"):
                    samples.setdefault(key, {})[member] = f.read()
    return samples, splits


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_layout_converts_exactly_what_the_generator_expects(tmp_path: Path, name: str) -> None:
    _, layout, size = CASES[name]
    layouts.write_layout_dir(layout, tmp_path, seed=5, **size)
    want = layouts.expected(layout, seed=5, **size)
    cfg = example_config(name)
    store = MemoryStore()
    manifest = make_plan(cfg, store, VolumeSource(str(tmp_path)), sort_buffer_bytes=4096)  # type: ignore[arg-type]
    reports = [convert(cfg, i, store, VolumeSource(str(tmp_path)), progress_interval=0) for i in range(2)]  # type: ignore[arg-type]
    samples, _ = converted(store)
    assert samples == want.samples
    assert manifest["skipped"] == want.skipped
    assert manifest["rows"].get("no-file", 0) == want.no_file_rows
    assert sum(r.written for r in reports) == len(want.samples)
    if want.classes:
        assert manifest["classes"] == want.classes
    if want.splits:
        split_of = {}
        for r in reports:
            for shard in r.shards:
                for key in members_of_shard(store, shard["name"]):
                    split_of[key] = shard["split"]
        assert split_of == want.splits
    if name == "audio-csv":
        assert manifest["rows"] == {"no-file": 1, "short-row": 1}


def members_of_shard(store: MemoryStore, name: str) -> set[str]:
    data = next(v for k, v in store.objects.items() if k.endswith("/" + name))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name[: m.name.index(".", m.name.rfind("/") + 1)] for m in tf}


def test_a_malformed_table_fails_the_plan_naming_it(tmp_path: Path) -> None:
    layouts.write_layout_dir("hf-metadata", tmp_path, seed=5, images=4, table="csv")
    cfg = example_config("hf-csv")  # expects a column score
    (tmp_path / "images" / "metadata.csv").write_text("file_name,text\n0000.jpg,hello\n")
    from sharded_dataset_operator.pods.common import PermanentError

    with pytest.raises(PermanentError, match=r"images/metadata.csv: no column 'score'"):
        make_plan(cfg, MemoryStore(), VolumeSource(str(tmp_path)))  # type: ignore[arg-type]
