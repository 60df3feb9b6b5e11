"""Operator-wide converter defaults: parsed from the environment, applied when a dataset leaves them empty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharded_dataset_operator.core import builders
from sharded_dataset_operator.core.spec import parse_spec
from sharded_dataset_operator.runner import settings

REPO = Path(__file__).resolve().parents[2]
OWNER = builders.Owner(name="oxford-pets", namespace="ml", uid="3f1c2a9e-5b7d-4e21-9a0c-6d8e1f2b4c55", generation=1)
RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
NODE_SELECTOR = {"pool": "batch"}
TOLERATIONS = [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]


def _spec(**conversion: Any) -> Any:
    raw = yaml.safe_load((REPO / "examples" / "01-oxford-pets.yaml").read_text())["spec"]
    raw["conversion"] = {"workers": 2, **conversion}
    return parse_spec(raw, name=OWNER.name, default_endpoint="http://ais:51080")


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_env_defaults_are_empty() -> None:
    s = settings.from_env({})
    assert (s.converter_resources, s.converter_node_selector, s.converter_tolerations) == ({}, {}, [])


def test_env_json_is_parsed() -> None:
    s = settings.from_env(
        {
            "SDS_CONVERTER_RESOURCES": json.dumps(RESOURCES),
            "SDS_CONVERTER_NODE_SELECTOR": json.dumps(NODE_SELECTOR),
            "SDS_CONVERTER_TOLERATIONS": json.dumps(TOLERATIONS),
        }
    )
    assert s.converter_resources == RESOURCES
    assert s.converter_node_selector == NODE_SELECTOR
    assert s.converter_tolerations == TOLERATIONS


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("SDS_CONVERTER_RESOURCES", "{not json"),
        ("SDS_CONVERTER_RESOURCES", "[]"),
        ("SDS_CONVERTER_NODE_SELECTOR", '"x"'),
        ("SDS_CONVERTER_TOLERATIONS", "{}"),
    ],
)
def test_env_bad_json_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        settings.from_env({name: raw})


def test_defaults_apply_when_spec_is_empty() -> None:
    defaults = builders.ConverterDefaults(
        image="img:1", resources=RESOURCES, node_selector=NODE_SELECTOR, tolerations=TOLERATIONS
    )
    pod = _pod(builders.build_converter_job(_spec(), OWNER, defaults))
    assert pod["containers"][0]["resources"] == RESOURCES
    assert pod["nodeSelector"] == NODE_SELECTOR
    assert pod["tolerations"] == TOLERATIONS


def test_spec_resources_win_and_placement_is_the_operators_with_the_specs_added() -> None:
    defaults = builders.ConverterDefaults(
        image="img:1", resources=RESOURCES, node_selector=NODE_SELECTOR, tolerations=TOLERATIONS
    )
    own_resources = {"limits": {"memory": "4Gi"}}
    own_tolerations = [{"key": "gpu", "operator": "Exists"}]
    spec = _spec(resources=own_resources, nodeSelector={"zone": "a", "pool": "mine"}, tolerations=own_tolerations)
    assert builders.placement_problem(spec, defaults) is None
    pod = _pod(builders.build_converter_job(spec, OWNER, defaults))
    assert pod["containers"][0]["resources"] == own_resources
    assert pod["nodeSelector"] == {"zone": "a", "pool": "batch"}  # the operator's keys win
    assert pod["tolerations"] == [*TOLERATIONS, *own_tolerations]


@pytest.mark.parametrize(
    "tolerations, enforce, problem",
    [
        ([{"operator": "Exists"}], False, "tolerations[0]: a toleration without a key tolerates every taint"),
        ([{"key": "gpu", "operator": "Exists"}, {"key": "node-role.kubernetes.io/control-plane",
          "operator": "Exists"}], False, "tolerations[1]: tolerating node-role.kubernetes.io/control-plane"),
        ([{"key": "gpu", "operator": "Exists"}], True, "this operator places converter pods itself"),
    ],
)  # fmt: skip
def test_placement_the_operator_does_not_allow_is_refused_naming_the_field(
    tolerations: list[dict[str, str]], enforce: bool, problem: str
) -> None:
    defaults = builders.ConverterDefaults(image="img:1", enforce_placement=enforce)
    assert problem in (builders.placement_problem(_spec(tolerations=tolerations), defaults) or "")


def test_user_images_are_pulled_always_and_the_operators_own_image_as_configured() -> None:
    defaults = builders.ConverterDefaults(image="img:1", image_pull_policy="IfNotPresent")
    plain = _pod(builders.build_converter_job(_spec(), OWNER, defaults))
    assert plain["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    raw = yaml.safe_load((REPO / "examples" / "01-oxford-pets.yaml").read_text())["spec"]
    raw["transform"] = {"function": {"name": "m:f", "image": "registry.example/team/fn:1"}}
    spec = parse_spec(raw, name=OWNER.name, default_endpoint="http://ais:51080")
    user = _pod(builders.build_converter_job(spec, OWNER, defaults))["containers"][0]
    assert user["image"] == "registry.example/team/fn:1" and user["imagePullPolicy"] == "Always"
    planner = _pod(builders.build_planner_job(spec, OWNER, defaults))["containers"][0]
    assert planner["image"] == "img:1" and planner["imagePullPolicy"] == "IfNotPresent"
    assert settings.from_env({"SDS_USER_IMAGE_PULL_POLICY": "IfNotPresent"}).user_image_pull_policy == "IfNotPresent"


def test_no_defaults_keeps_the_computed_resources() -> None:
    spec = _spec()
    pod = _pod(builders.build_converter_job(spec, OWNER, builders.ConverterDefaults(image="img:1")))
    assert pod["containers"][0]["resources"] == builders.default_resources(spec)
    assert "nodeSelector" not in pod and "tolerations" not in pod
