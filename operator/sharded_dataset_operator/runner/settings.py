"""Operator settings, read once from the environment (the Helm chart and manifests set them)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core import failures


@dataclass(frozen=True)
class Settings:
    ais_endpoint: str = ""
    converter_image: str = "localhost/sharded-dataset-operator:dev"
    converter_pull_policy: str = "IfNotPresent"
    # Cluster-wide converter pod defaults (JSON in the environment); a dataset's spec.conversion wins.
    converter_resources: dict[str, Any] = field(default_factory=dict)
    converter_node_selector: dict[str, str] = field(default_factory=dict)
    converter_tolerations: list[dict[str, Any]] = field(default_factory=list)
    converter_forbidden_toleration_keys: tuple[str, ...] = (
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
    )
    converter_enforce_placement: bool = False  # spec.conversion.nodeSelector/tolerations refused
    user_image_pull_policy: str = "Always"  # for spec.transform.function.image and AIS ETL images
    # image prefixes spec.transform.aisEtl.image may start with (an ETL pod runs in the AIS namespace, with the
    # targets' volumes mounted read-only); empty: no dataset may start an AIS ETL
    etl_images: tuple[str, ...] = field(default_factory=tuple)
    etl_init_timeout: str = "3m"  # how long AIS may take to start an ETL's pods
    watch_namespaces: tuple[str, ...] = field(default_factory=tuple)  # empty: all namespaces
    log_level: str = "INFO"
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    active_interval: float = 1.0
    idle_interval: float = 60.0
    metrics_port: int = 8000  # 0: no metrics endpoint
    stall_after: float = failures.STALL_AFTER_SECONDS  # AIS unreachable this long: the resource is Stalled
    failpoints: bool = False  # honour the test-only failpoint annotation (never in production)
    # The operator's own AIS identity (a file of a mounted Secret, read on every use so that a rotated token is
    # picked up): used only for dSort, which AIS allows to cluster admins only. Empty: dSort with the dataset's
    # token (AIS without AuthN).
    ais_admin_token_file: str = ""
    # the largest JSON object (plan manifest, report, progress, reused.json, index) the operator reads from AIS
    max_object_bytes: int = 64 * 1024 * 1024
    # the JSON objects the operator keeps cached (by their size in AIS): in all, and of the datasets of one
    # namespace, which is also the most one read of a dataset may need at once (LimitExceeded beyond)
    cache_bytes: int = 96 * 1024 * 1024
    cache_namespace_bytes: int = 32 * 1024 * 1024
    # operator passes at once: in all, and of the datasets of one namespace (so one tenant cannot take them all)
    workers: int = 8
    workers_per_namespace: int = 2
    # seconds an AIS request of the operator may take (connect, then read)
    ais_timeout_seconds: float = 30.0
    # deletionPolicy Delete: tries before the finalizer gives up (leaving the objects), and the wait between them
    cleanup_attempts: int = 20
    cleanup_retry_seconds: float = 30.0
    # AIS endpoints a dataset may name in spec.ais.endpoint; empty: only `ais_endpoint`.
    allowed_endpoints: tuple[str, ...] = field(default_factory=tuple)

    def endpoint_allowed(self, endpoint: str) -> bool:
        allowed = self.allowed_endpoints or (self.ais_endpoint,)
        return endpoint.rstrip("/") in {a.rstrip("/") for a in allowed if a}

    def admin_token(self) -> str | None:
        """The operator's AIS token, or None when none is configured (or its Secret is not mounted yet)."""
        if not self.ais_admin_token_file:
            return None
        try:
            with open(self.ais_admin_token_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None


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
        converter_forbidden_toleration_keys=tuple(
            str(k) for k in _json_env(e, "SDS_CONVERTER_FORBIDDEN_TOLERATIONS", list)
        )
        if e.get("SDS_CONVERTER_FORBIDDEN_TOLERATIONS", "").strip()
        else Settings.converter_forbidden_toleration_keys,
        converter_enforce_placement=e.get("SDS_CONVERTER_ENFORCE_PLACEMENT", "") == "1",
        user_image_pull_policy=e.get("SDS_USER_IMAGE_PULL_POLICY", "") or Settings.user_image_pull_policy,
        etl_images=tuple(x.strip() for x in e.get("SDS_ETL_IMAGES", "").split(",") if x.strip()),
        etl_init_timeout=e.get("SDS_ETL_INIT_TIMEOUT", "") or Settings.etl_init_timeout,
        watch_namespaces=namespaces,
        log_level=e.get("SDS_LOG_LEVEL", "INFO").upper(),
        liveness_endpoint=e.get("SDS_LIVENESS_ENDPOINT", Settings.liveness_endpoint),
        active_interval=float(e.get("SDS_ACTIVE_INTERVAL", Settings.active_interval)),
        idle_interval=float(e.get("SDS_IDLE_INTERVAL", Settings.idle_interval)),
        metrics_port=int(e.get("SDS_METRICS_PORT", Settings.metrics_port)),
        stall_after=float(e.get("SDS_STALL_AFTER_SECONDS", Settings.stall_after)),
        failpoints=e.get("SDS_FAILPOINTS", "") == "1",
        ais_admin_token_file=e.get("SDS_AIS_ADMIN_TOKEN_FILE", ""),
        max_object_bytes=int(e.get("SDS_MAX_OBJECT_BYTES", Settings.max_object_bytes)),
        cache_bytes=int(e.get("SDS_CACHE_BYTES", Settings.cache_bytes)),
        cache_namespace_bytes=int(e.get("SDS_CACHE_NAMESPACE_BYTES", Settings.cache_namespace_bytes)),
        workers=max(1, int(e.get("SDS_WORKERS", Settings.workers))),
        workers_per_namespace=max(1, int(e.get("SDS_WORKERS_PER_NAMESPACE", Settings.workers_per_namespace))),
        ais_timeout_seconds=float(e.get("SDS_AIS_TIMEOUT_SECONDS", Settings.ais_timeout_seconds)),
        cleanup_attempts=max(1, int(e.get("SDS_CLEANUP_ATTEMPTS", Settings.cleanup_attempts))),
        cleanup_retry_seconds=float(e.get("SDS_CLEANUP_RETRY_SECONDS", Settings.cleanup_retry_seconds)),
        allowed_endpoints=tuple(x.strip() for x in e.get("SDS_ALLOWED_ENDPOINTS", "").split(",") if x.strip()),
    )


SETTINGS = from_env()
