"""Pure builders and helpers: spec parsing, names, the converter Job, the dSort spec, the shard index, status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharded_dataset_operator.core import naming
from sharded_dataset_operator.core.builders import (
    ConverterDefaults,
    Owner,
    build_converter_job,
    build_dsort_spec,
    build_shard_index,
    converter_config,
    order_rank,
)
from sharded_dataset_operator.core.spec import SpecError, parse_size, parse_spec
from sharded_dataset_operator.core.status import DatasetStatus, Phase, set_condition

REPO = Path(__file__).resolve().parents[2]
OWNER = Owner(name="oxford-pets", namespace="ml", uid="5f3a9c1e-aaaa-4bbb-8ccc-000000000000", generation=2)


def example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples/01-oxford-pets.yaml").read_text())
    return doc


@pytest.mark.parametrize(
    ("text", "size"),
    [("100MiB", 100 * 2**20), ("100Mi", 100 * 2**20), ("100MB", 100 * 10**6), ("1G", 10**9), ("4096", 4096),
     ("1KiB", 1024), ("2TiB", 2 * 2**40)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text, "f") == size


@pytest.mark.parametrize("text", ["100 megs", "", "1.5GiB", "-1", "0", "10XB"])
def test_parse_size_rejects_with_the_field_name(text: str) -> None:
    with pytest.raises(SpecError, match=r"^spec\.output\.maxShardSize"):
        parse_size(text, "spec.output.maxShardSize")


def test_parse_example_spec_with_defaults() -> None:
    obj = example()
    s = parse_spec(obj["spec"], name="oxford-pets", default_endpoint="http://ais-proxy.ais:51080")
    assert s.ais.endpoint == "http://ais-proxy.ais:51080" and s.ais.token_secret is None
    assert s.source.kind == "ais" and s.source.bucket is not None and s.source.bucket.name == "pets-raw"
    assert [f.name for f in s.fields] == ["image.jpg", "trimap.png"]
    assert s.label is not None and (s.label.key_column, s.label.value_column, s.label.name) == (0, 1, "cls")
    assert s.required == ("image.jpg", "trimap.png", "cls")
    assert (s.output.max_samples, s.output.max_bytes) == (400, 100 * 2**20)
    assert s.shuffle is not None and s.shuffle.output_bucket.name == "pets" and s.shuffle.seed == "2023"
    assert s.deletion_policy == "Retain" and s.conversion.workers == 4


def test_parse_spec_defaults_for_a_minimal_object() -> None:
    s = parse_spec(
        {
            "source": {"volume": {"claimName": "raw"}},
            "samples": {"fields": [{"pattern": "*.txt", "name": "txt"}]},
            "output": {"bucket": "b", "maxShardSize": "1MiB"},
            "shuffle": {},
        },
        name="mini",
        default_endpoint="http://ais:1",
    )
    assert s.source.kind == "volume" and s.source.path == "/"
    assert s.output.prefix == "mini-" and s.required == ("txt",)
    assert s.shuffle is not None and s.shuffle.output_prefix == "mini-shuffled-"
    assert s.shuffle.output_shard_size == 100 * 2**20 and s.shuffle.algorithm == "shuffle"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"source": {}}, "spec.source"),
        ({"output": {"bucket": "b"}}, "spec.output"),
        ({"samples": {"fields": []}}, "spec.samples.fields"),
        ({"samples": {"fields": [{"pattern": "a", "name": "x"}], "required": ["y"]}}, "spec.samples.required"),
        ({"shuffle": {"algorithm": "random"}}, "spec.shuffle.algorithm"),
        ({"shuffle": {"refreshMode": "Merge"}}, "spec.shuffle.refreshMode"),
        ({"shuffle": {"algorithm": "alphanumeric", "refreshMode": "Append"}}, "spec.shuffle.refreshMode"),
        ({"deletionPolicy": "Maybe"}, "spec.deletionPolicy"),
    ],
)
def test_parse_spec_errors_name_the_field(patch: dict[str, Any], field: str) -> None:
    raw = {**example()["spec"], **patch}
    with pytest.raises(SpecError, match=f"^{field.replace('.', '[.]')}"):
        parse_spec(raw, name="x", default_endpoint="http://ais:1")


def test_names_derive_from_name_uid_generation() -> None:
    base = naming.generation_base("samples-", OWNER.uid, 2)
    assert base == "samples-5f3a9c1eaaaa4bbb-g2-"
    pool = naming.unit_pool("samples-", OWNER.uid)
    assert naming.unit_shard_name(pool, "00ff", 1) == "samples-5f3a9c1eaaaa4bbb-u00ff-01.tar"
    assert naming.unit_of(pool, "samples-5f3a9c1eaaaa4bbb-u00ff-01.tar") == "00ff"
    assert naming.unit_of(pool, "samples-5f3a9c1eaaaa4bbb-g2-plan.json") is None
    assert naming.report_name(base, 3) == "samples-5f3a9c1eaaaa4bbb-g2-report-w0003.json"
    assert naming.output_template("shuffled-5f3a9c1eaaaa4bbb-g2-") == "shuffled-5f3a9c1eaaaa4bbb-g2-%06d"
    assert naming.job_name("oxford-pets", 2) == "oxford-pets-convert-g2"
    long = naming.job_name("a" * 80, 12)
    assert len(long) <= naming.MAX_JOB_NAME and long.endswith("-convert-g12")
    assert long != naming.job_name("a" * 79 + "b", 12)


def test_dsort_regex_matches_only_its_description() -> None:
    import re

    desc = naming.dsort_description("ml", "my.data", OWNER.uid, 2)
    rx = re.compile(naming.dsort_regex(desc))
    assert rx.match(desc)
    assert not rx.match(desc.replace("my.data", "myXdata"))
    assert not rx.match(desc + "0")


def test_converter_job_is_an_indexed_restricted_job_owned_by_the_resource() -> None:
    s = parse_spec(example()["spec"], name="oxford-pets", default_endpoint="http://ais-proxy.ais:51080")
    job = build_converter_job(s, OWNER, ConverterDefaults(image="localhost/sds:dev"))
    assert job["metadata"]["name"] == "oxford-pets-convert-g2"
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "shardeddataset.dev/v1alpha1", "kind": "ShardedDataset", "name": "oxford-pets",
         "uid": OWNER.uid, "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"]) == ("Indexed", 4, 4)
    assert (js["backoffLimitPerIndex"], js["maxFailedIndexes"]) == (2, 0)
    rules = [(r["action"], (r.get("onExitCodes") or {}).get("values")) for r in js["podFailurePolicy"]["rules"]]
    assert rules == [("FailIndex", [2]), ("Ignore", [75]), ("Ignore", None)]  # permanent; AIS unreachable; disruption
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    c = pod["containers"][0]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert c["image"] == "localhost/sds:dev" and c["args"] == ["sharded_dataset_operator.pods.converter"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AIS_ENDPOINT"] == "http://ais-proxy.ais:51080"
    config = json.loads(env["SDS_CONVERTER_CONFIG"] or "{}")
    assert config == converter_config(s, OWNER)
    assert config["output"]["base"] == "samples-5f3a9c1eaaaa4bbb-g2-" and config["orderSeed"] == "2023"
    assert c["resources"]["limits"]["memory"] == "556Mi"  # 3 x 100 MiB shard + 256 MiB
    assert job["metadata"]["labels"]["shardeddataset.dev/generation"] == "2"


def test_converter_job_mounts_a_volume_source_read_only_and_passes_the_token_secret() -> None:
    raw = {**example()["spec"], "source": {"volume": {"claimName": "pets-raw", "path": "/oxford"}}}
    raw["ais"] = {"tokenSecretRef": {"name": "ais-token", "key": "token"}}
    s = parse_spec(raw, name="oxford-pets", default_endpoint="http://ais:1")
    pod = build_converter_job(s, OWNER, ConverterDefaults(image="i"))["spec"]["template"]["spec"]
    assert {"name": "source", "persistentVolumeClaim": {"claimName": "pets-raw", "readOnly": True}} in pod["volumes"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "source")
    assert mount == {"name": "source", "mountPath": "/data", "readOnly": True, "subPath": "oxford"}
    token = next(e for e in pod["containers"][0]["env"] if e["name"] == "AIS_AUTHN_TOKEN")
    assert token["valueFrom"] == {"secretKeyRef": {"name": "ais-token", "key": "token"}}


def test_dsort_spec_uses_current_field_names_and_a_seeded_order() -> None:
    s = parse_spec(example()["spec"], name="oxford-pets", default_endpoint="http://ais:1")
    d = build_dsort_spec(s, OWNER, ["b.tar", "a.tar"])
    assert d["input_bck"] == {"name": "pets", "provider": "ais"}
    assert d["input_format"] == {"objnames": ["a.tar", "b.tar"]}
    assert (d["input_extension"], d["output_extension"]) == (".tar", ".tar")
    assert d["output_format"] == "shuffled-shard-5f3a9c1eaaaa4bbb-g2-a1-%06d"
    assert d["description"] == "sds:ml/oxford-pets:5f3a9c1eaaaa4bbb:g2:a1"
    assert build_dsort_spec(s, OWNER, ["a"], attempt=3)["output_format"] == "shuffled-shard-5f3a9c1eaaaa4bbb-g2-a3-%06d"
    assert d["output_shard_size"] == str(100 * 2**20)
    assert d["algorithm"] == {"kind": "content", "extension": ".__order__", "content_key_type": "int"}
    assert d["Config"] == {"duplicated_records": "abort", "missing_shards": "abort"}
    alpha = parse_spec({**example()["spec"], "shuffle": {"algorithm": "alphanumeric"}}, name="x", default_endpoint="h")
    assert build_dsort_spec(alpha, OWNER, ["a"])["algorithm"] == {"kind": "alphanumeric"}


def test_order_rank_depends_on_seed_and_key_only() -> None:
    assert order_rank("2023", "a") == order_rank("2023", "a")
    assert order_rank("2023", "a") != order_rank("2024", "a")
    keys = [f"k{i}" for i in range(200)]
    order = sorted(keys, key=lambda k: order_rank("1", k))
    assert order != keys and sorted(order) == sorted(keys)
    assert all(0 <= order_rank("1", k) < 2**63 for k in keys)


def test_shard_index_urls_are_relative_to_the_index() -> None:
    idx = build_shard_index("x", [("data/s-1.tar", 2, 20), ("data/s-0.tar", 3, 30)], "data/s-index.json", {"a": 1})
    assert idx["__kind__"] == "wids-shard-index-v1" and idx["wids_version"] == 1
    assert idx["shardlist"] == [{"url": "s-0.tar", "nsamples": 3, "filesize": 30},
                                {"url": "s-1.tar", "nsamples": 2, "filesize": 20}]  # fmt: skip


def test_set_condition_keeps_transition_time_unless_status_flips() -> None:
    conds = set_condition([], "Ready", False, "Converting", "", 1, "t1")
    conds = set_condition(conds, "Ready", False, "Shuffling", "m", 2, "t2")
    assert conds[0]["lastTransitionTime"] == "t1" and conds[0]["reason"] == "Shuffling"
    assert conds[0]["observedGeneration"] == 2
    conds = set_condition(conds, "Ready", True, "Succeeded", "", 2, "t3")
    assert conds[0]["lastTransitionTime"] == "t3" and conds[0]["status"] == "True"
    conds = set_condition(conds, "Stalled", False, "Healthy", "", 2, "t3")
    assert [c["type"] for c in conds] == ["Ready", "Stalled"]


def test_status_kstatus_shapes() -> None:
    failed = DatasetStatus(phase=Phase.FAILED, observed_generation=4, reason="ShuffleFailed", message="m", stalled=True)
    st = failed.to_dict([], "t")
    by = {c["type"]: c for c in st["conditions"]}
    assert (by["Ready"]["status"], by["Reconciling"]["status"], by["Stalled"]["status"]) == ("False", "False", "True")
    assert by["Stalled"]["reason"] == "ShuffleFailed" and st["phase"] == "Failed"
    assert all(c["observedGeneration"] == 4 for c in st["conditions"])
