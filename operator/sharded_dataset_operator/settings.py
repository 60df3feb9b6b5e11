"""Operator settings, read once from the environment (the Helm chart and manifests set them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    ais_endpoint: str = ""
    converter_image: str = "localhost/sharded-dataset-operator:dev"
    converter_pull_policy: str = "IfNotPresent"
    watch_namespaces: tuple[str, ...] = field(default_factory=tuple)  # empty: all namespaces
    log_level: str = "INFO"
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    active_interval: float = 2.0
    idle_interval: float = 60.0


def from_env(env: dict[str, str] | None = None) -> Settings:
    e = os.environ if env is None else env
    namespaces = tuple(n.strip() for n in e.get("SDS_WATCH_NAMESPACES", "").split(",") if n.strip())
    return Settings(
        ais_endpoint=e.get("SDS_AIS_ENDPOINT", ""),
        converter_image=e.get("SDS_CONVERTER_IMAGE", Settings.converter_image),
        converter_pull_policy=e.get("SDS_CONVERTER_PULL_POLICY", Settings.converter_pull_policy),
        watch_namespaces=namespaces,
        log_level=e.get("SDS_LOG_LEVEL", "INFO").upper(),
        liveness_endpoint=e.get("SDS_LIVENESS_ENDPOINT", Settings.liveness_endpoint),
        active_interval=float(e.get("SDS_ACTIVE_INTERVAL", Settings.active_interval)),
        idle_interval=float(e.get("SDS_IDLE_INTERVAL", Settings.idle_interval)),
    )


SETTINGS = from_env()
