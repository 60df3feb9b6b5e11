"""Operator settings, read once from the environment (the Helm chart and manifests set them)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import failures


@dataclass(frozen=True)
class Settings:
    ais_endpoint: str = ""
    converter_image: str = "localhost/sharded-dataset-operator:dev"
    converter_pull_policy: str = "IfNotPresent"
    # Cluster-wide converter pod defaults (JSON in the environment); a dataset's spec.conversion wins.
    converter_resources: dict[str, Any] = field(default_factory=dict)
    converter_node_selector: dict[str, str] = field(default_factory=dict)
    converter_tolerations: list[dict[str, Any]] = field(default_factory=list)
    watch_namespaces: tuple[str, ...] = field(default_factory=tuple)  # empty: all namespaces
    log_level: str = "INFO"
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    active_interval: float = 1.0
    idle_interval: float = 60.0
    metrics_port: int = 8000  # 0: no metrics endpoint
    stall_after: float = failures.STALL_AFTER_SECONDS  # AIS unreachable this long: the resource is Stalled
    failpoints: bool = False  # honour the test-only failpoint annotation (never in production)


def _json_env(e: Mapping[str, str], name: str, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
    """`name` parsed as JSON of type `kind`; unset or blank gives an empty `kind`."""
    raw = e.get(name, "").strip()
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not valid JSON: {err}") from err
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ValueError(f"{name}: expected a JSON {'object' if kind is dict else 'array'}, got {raw!r}")
    return value


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    e = os.environ if env is None else env
    namespaces = tuple(n.strip() for n in e.get("SDS_WATCH_NAMESPACES", "").split(",") if n.strip())
    return Settings(
        ais_endpoint=e.get("SDS_AIS_ENDPOINT", ""),
        converter_image=e.get("SDS_CONVERTER_IMAGE", Settings.converter_image),
        converter_pull_policy=e.get("SDS_CONVERTER_PULL_POLICY", Settings.converter_pull_policy),
        converter_resources=_json_env(e, "SDS_CONVERTER_RESOURCES", dict),
        converter_node_selector={str(k): str(v) for k, v in _json_env(e, "SDS_CONVERTER_NODE_SELECTOR", dict).items()},
        converter_tolerations=_json_env(e, "SDS_CONVERTER_TOLERATIONS", list),
        watch_namespaces=namespaces,
        log_level=e.get("SDS_LOG_LEVEL", "INFO").upper(),
        liveness_endpoint=e.get("SDS_LIVENESS_ENDPOINT", Settings.liveness_endpoint),
        active_interval=float(e.get("SDS_ACTIVE_INTERVAL", Settings.active_interval)),
        idle_interval=float(e.get("SDS_IDLE_INTERVAL", Settings.idle_interval)),
        metrics_port=int(e.get("SDS_METRICS_PORT", Settings.metrics_port)),
        stall_after=float(e.get("SDS_STALL_AFTER_SECONDS", Settings.stall_after)),
        failpoints=e.get("SDS_FAILPOINTS", "") == "1",
    )


SETTINGS = from_env()
