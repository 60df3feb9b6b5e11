"""spec.transform.aisEtl: the spec, the ETL init request, the decisions around the ETL's life, and the
converter's reads through it."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest

from sharded_dataset_operator.core import builders, naming
from sharded_dataset_operator.core.actions import CreateJob, DeleteEtls, InitEtl
from sharded_dataset_operator.core.builders import ConverterDefaults
from sharded_dataset_operator.core.decision import decide
from sharded_dataset_operator.core.model import JobState
from sharded_dataset_operator.core.observed import Observed
from sharded_dataset_operator.core.samples import RawFile, Sample
from sharded_dataset_operator.core.spec import SpecError
from sharded_dataset_operator.core.status import Phase
from sharded_dataset_operator.pods.reads import Failed, FetchFailed, ReadPlan, Through, read_samples

from .test_reconcile import NOW, OWNER, UID, converted, kinds, plan, spec

ETL = {
    "image": "localhost/sdo-etl:dev",
    "class": "sdo_etl.examples:ResizeImage",
    "member": "image.jpg",
    "env": {"MAX_SIDE": "64", "FORMAT": "jpeg"},
}
ALLOWED = ConverterDefaults(image="img:dev", etl_images=("localhost/sdo-etl:",), user_image_pull_policy="Never")
NAME = naming.etl_name(UID, OWNER.version)


def etl_spec(**over: Any) -> Any:
    return spec(transform={"aisEtl": {**ETL, **over}})


def planned(**over: Any) -> Observed:
    fields: dict[str, Any] = dict(
        previous={}, plan=plan(9), planner=JobState("pets-plan-g3", 3, succeeded=1, complete=True)
    )
    fields.update(over)
    return Observed(**fields)


# ------------------------------------------------------------------------------------------ spec


def test_ais_etl_spec_is_parsed_with_defaults() -> None:
    etl = etl_spec().transform.ais_etl
    assert (etl.image, etl.member, etl.class_name) == (ETL["image"], "image.jpg", ETL["class"])
    assert etl.env == (("FORMAT", "jpeg"), ("MAX_SIDE", "64")) and etl.comm_type == "hpush"
    assert etl.obj_timeout == "45s"


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"image": ""}, "spec.transform.aisEtl.image"),
        ({"member": "nope.jpg"}, "spec.transform.aisEtl.member"),
        ({"class": "no-colon"}, "spec.transform.aisEtl.class"),
        ({"env": {"1BAD": "x"}}, "spec.transform.aisEtl.env"),
        ({"commType": "ws"}, "spec.transform.aisEtl.commType"),
        ({"objectTimeout": "soon"}, "spec.transform.aisEtl.objectTimeout"),
    ],
)
def test_invalid_ais_etl_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises((SpecError, ValueError), match=field.replace(".", r"\.")):
        etl_spec(**over)


def test_ais_etl_needs_an_ais_source() -> None:
    with pytest.raises(SpecError, match="aisEtl: needs an AIS source"):
        spec(source={"volume": {"claimName": "pvc"}}, transform={"aisEtl": ETL})


# ------------------------------------------------------------------------------------------ builders


def test_init_message_is_a_pod_spec_with_the_operators_pull_policy_and_the_class() -> None:
    msg = builders.etl_init_message(etl_spec().transform.ais_etl, NAME, OWNER, ALLOWED)
    assert msg["name"] == NAME and msg["communication"] == "hpush://" and msg["obj_timeout"] == "45s"
    pod = json.loads(base64.b64decode(msg["spec"]))
    (c,) = pod["spec"]["containers"]
    assert c["image"] == ETL["image"] and c["imagePullPolicy"] == "Never"
    assert c["ports"] == [{"name": "default", "containerPort": 8000}]
    assert c["readinessProbe"]["httpGet"]["port"] == "default"
    assert c["env"][0] == {"name": "SDO_ETL_CLASS", "value": ETL["class"]}
    assert {"name": "MAX_SIDE", "value": "64"} in c["env"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert 6 <= len(NAME) <= 32 and NAME.startswith(naming.etl_prefix(UID))


def test_converter_config_names_the_etl_and_its_member() -> None:
    cfg = builders.converter_config(etl_spec(), OWNER)
    assert cfg["aisEtl"] == {"name": NAME, "member": "image.jpg"}
    assert builders.converter_config(spec(), OWNER)["aisEtl"] is None


# ------------------------------------------------------------------------------------------ decisions


def test_the_etl_is_started_before_the_converters_and_they_start_once_it_runs() -> None:
    s = etl_spec()
    d = decide(s, OWNER, planned(), ALLOWED, NOW)
    assert kinds(d) == [InitEtl] and d.status.reason == "EtlStarting"
    assert d.actions[0].name == NAME and d.status.etl == {"name": NAME, "stage": "Initializing", "image": ETL["image"]}
    d = decide(s, OWNER, planned(etls={NAME: "Initializing"}), ALLOWED, NOW)
    assert d.actions == [] and d.status.reason == "EtlStarting"
    d = decide(s, OWNER, planned(etls={NAME: "Running"}), ALLOWED, NOW)
    assert kinds(d) == [CreateJob] and d.status.reason == "Converting"
    assert d.status.to_dict([], NOW)["etl"]["stage"] == "Running"


def test_an_image_the_operator_does_not_allow_fails_without_starting_anything() -> None:
    d = decide(etl_spec(image="registry.example.com/x:1"), OWNER, planned(), ALLOWED, NOW)
    assert d.actions == [] and d.status.phase == Phase.FAILED and d.status.reason == "EtlNotAllowed"
    assert "etl.allowedImages" in d.status.message


def test_an_aborted_etl_fails_the_run_and_is_removed() -> None:
    d = decide(etl_spec(), OWNER, planned(etls={NAME: "Aborted"}), ALLOWED, NOW)
    assert d.status.phase == Phase.FAILED and d.status.reason == "EtlFailed"
    assert DeleteEtls((NAME,)) in d.actions


def test_the_etl_is_removed_once_the_conversion_is_over() -> None:
    d = decide(etl_spec(), OWNER, converted(etls={NAME: "Running"}), ALLOWED, NOW)
    assert DeleteEtls((NAME,)) in d.actions and d.status.etl is None
    d = decide(etl_spec(), OWNER, converted(), ALLOWED, NOW)
    assert not [a for a in d.actions if isinstance(a, DeleteEtls)]


def test_an_etl_of_another_version_is_removed_while_this_one_is_started() -> None:
    old = naming.etl_name(UID, "g2")
    d = decide(etl_spec(), OWNER, planned(etls={old: "Running"}), ALLOWED, NOW)
    assert kinds(d) == [InitEtl, DeleteEtls] and d.actions[1] == DeleteEtls((old,))


# ------------------------------------------------------------------------------------------ converter reads


def sample(key: str) -> Sample:
    files = (("image.jpg", RawFile(f"{key}.jpg", 3)), ("cls", RawFile(f"{key}.cls", 1)))
    return Sample(key=key, files=files)


def test_the_etl_member_is_read_through_fetch_and_the_rest_by_the_batch_read() -> None:
    batch_paths: list[str] = []
    threads: set[str] = set()

    def read_many(paths: Any) -> list[bytes]:
        batch_paths.extend(paths)
        return [b"1" for _ in paths]

    def fetch(path: str) -> bytes:
        threads.add(threading.current_thread().name)
        if path == "k2.jpg":
            raise FetchFailed("HTTP 500: transform error")
        return b"etl:" + path.encode()

    through = Through(member="image.jpg", fetch=fetch, concurrency=4)
    out = list(read_samples([sample(f"k{i}") for i in range(5)], read_many, ReadPlan(batch_objects=4), through))
    assert batch_paths == [f"k{i}.cls" for i in range(5)]  # the images were never read raw
    assert [s.key for s, _ in out] == [f"k{i}" for i in range(5)]
    members = {s.key: dict(m) for s, m in out}
    assert members["k0"] == {"image.jpg": b"etl:k0.jpg", "cls": b"1"}
    failed = members["k2"]["image.jpg"]
    assert isinstance(failed, Failed) and failed == b"" and "transform error" in failed.reason


# ------------------------------------------------------------------------------------------ serving ETL

SERVE = {"image": "localhost/sdo-etl:dev", "class": "sdo_etl.examples:CenterCropShard", "env": {"SIZE": "96"}}
SERVE_NAME = naming.serve_etl_name(UID)


def test_serve_etl_is_parsed_and_takes_no_member() -> None:
    etl = spec(serve={"etl": SERVE}).serve_etl
    assert etl is not None and etl.image == SERVE["image"] and etl.member == "" and etl.env == (("SIZE", "96"),)
    with pytest.raises(SpecError, match=r"spec\.serve\.etl\.member"):
        spec(serve={"etl": {**SERVE, "member": "image.jpg"}})


def test_the_serving_etl_is_started_on_any_pass_and_kept_while_the_resource_exists() -> None:
    s = spec(serve={"etl": SERVE})
    d = decide(s, OWNER, Observed(previous={}), ALLOWED, NOW)  # the very first pass: planning
    init = [a for a in d.actions if isinstance(a, InitEtl)]
    assert [(a.name, a.serving) for a in init] == [(SERVE_NAME, True)]
    assert d.status.serve == {"etl": SERVE_NAME, "stage": "Initializing", "image": SERVE["image"]}
    d = decide(s, OWNER, converted(etls={SERVE_NAME: "Running"}), ALLOWED, NOW)
    assert not [a for a in d.actions if isinstance(a, InitEtl | DeleteEtls)]
    assert d.status.to_dict([], NOW)["serve"]["stage"] == "Running"


def test_a_serving_etl_the_operator_does_not_allow_is_reported_not_started_and_the_build_goes_on() -> None:
    d = decide(spec(serve={"etl": {**SERVE, "image": "evil.example.com/x:1"}}), OWNER, planned(), ALLOWED, NOW)
    assert kinds(d) == [CreateJob] and d.status.reason == "Converting"
    assert (
        d.status.serve is not None
        and d.status.serve["etl"] is None
        and "etl.allowedImages" in d.status.serve["message"]
    )
    assert [e.reason for e in d.events if e.type == "Warning"] == ["EtlNotAllowed"]


def test_a_serving_etl_that_failed_to_start_is_tried_again_after_a_while_not_every_pass() -> None:
    s = spec(serve={"etl": SERVE})
    prev = {"serve": {"etl": SERVE_NAME, "stage": None, "message": "pull failed", "failedAt": "2026-11-23T09:58:00Z"}}
    d = decide(s, OWNER, planned(previous=prev), ALLOWED, NOW)  # 2 minutes later
    assert not [a for a in d.actions if isinstance(a, InitEtl)] and d.status.serve["message"] == "pull failed"
    prev["serve"]["failedAt"] = "2026-11-23T09:50:00Z"  # 10 minutes later
    d = decide(s, OWNER, planned(previous=prev), ALLOWED, NOW)
    assert [a.name for a in d.actions if isinstance(a, InitEtl)] == [SERVE_NAME]


def test_removing_serve_from_the_spec_removes_its_etl() -> None:
    d = decide(spec(), OWNER, converted(etls={SERVE_NAME: "Running"}), ALLOWED, NOW)
    assert DeleteEtls((SERVE_NAME,)) in d.actions and d.status.serve is None
