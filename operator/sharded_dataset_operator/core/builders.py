"""Pure builders: the converter Job manifest, the converter's configuration and the dSort request spec."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core import naming
from sharded_dataset_operator.core.failures import STALL_AFTER_SECONDS
from sharded_dataset_operator.core.spec import API_GROUP, API_VERSION, KIND, AisEtl, DatasetSpec

CONVERTER_CONTAINER = "converter"
# Seeded shuffles are carried out by dSort as a sort on this per-sample member (the sample's rank under
# the seed): dSort's own "shuffle" permutes records in arrival order, which differs from run to run.
ORDER_MEMBER = "__order__"
CONFIG_ENV = "SDS_CONVERTER_CONFIG"
EXIT_PERMANENT = 2  # converter exit code for errors a retry cannot fix (FailIndex)
EXIT_UNAVAILABLE = 75  # AIS was unreachable (EX_TEMPFAIL): a fresh pod resumes, not counted against retries
SOURCE_MOUNT = "/data"
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Owner:
    """Identity of the ShardedDataset that owns what is built, and of the version being built: the generation,
    plus the refresh annotation's value when one asked for a rebuild of the same spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    refresh: str = ""

    @property
    def version(self) -> str:
        return naming.version_id(self.generation, self.refresh)


CONTROL_PLANE_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


@dataclass(frozen=True, slots=True)
class ConverterDefaults:
    """Operator-level settings that shape converter pods.

    `resources` applies to datasets whose `spec.conversion.resources` is empty. Placement is the operator's
    first: the pods get `node_selector` with the spec's keys added (the operator's win), and `tolerations` plus
    the spec's, none of which may tolerate every taint or a key of `forbidden_toleration_keys`; with
    `enforce_placement` a spec may not set either (`placement_problem`). User transform images are pulled with
    `user_image_pull_policy` (default Always: a node's cached copy of another tenant's private image is not
    reused without the registry's say). A planner or converter pod that cannot start for `pod_stall_after`
    seconds makes the resource Stalled (`PodsNotStarting`).
    """

    image: str
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    forbidden_toleration_keys: tuple[str, ...] = CONTROL_PLANE_TAINTS
    enforce_placement: bool = False
    user_image_pull_policy: str = "Always"
    etl_images: tuple[str, ...] = ()  # image prefixes spec.transform.aisEtl may name; empty: none
    etl_init_timeout: str = "3m"
    pod_stall_after: float = STALL_AFTER_SECONDS  # a pod that cannot start this long: Stalled (stallAfterSeconds)


def placement_problem(spec: DatasetSpec, defaults: ConverterDefaults) -> str | None:
    """Why the spec's converter placement is not allowed by the operator's settings (None: it is)."""
    conv = spec.conversion
    if defaults.enforce_placement and (conv.node_selector or conv.tolerations):
        return "spec.conversion.nodeSelector and tolerations: this operator places converter pods itself"
    for i, t in enumerate(conv.tolerations):
        key = str(t.get("key") or "")
        if not key:
            return f"spec.conversion.tolerations[{i}]: a toleration without a key tolerates every taint"
        if key in defaults.forbidden_toleration_keys:
            return f"spec.conversion.tolerations[{i}]: tolerating {key} is not allowed by this operator"
    return None


def converted_base(spec: DatasetSpec, owner: Owner) -> str:
    return naming.generation_base(spec.output.prefix, owner.uid, owner.version)


def output_base(spec: DatasetSpec, owner: Owner, split: str | None = None) -> str:
    """Prefix of the version's shuffled shards (of one split: `<outputPrefix><split>-<uid16>-<v>-`)."""
    assert spec.shuffle is not None
    return naming.generation_base(split_prefix(spec.shuffle.output_prefix, split), owner.uid, owner.version)


def split_prefix(prefix: str, split: str | None) -> str:
    """A split's objects are named like the dataset's, with the split after the prefix."""
    return f"{prefix}{split}-" if split else prefix


def unit_pool(spec: DatasetSpec, owner: Owner) -> str:
    """Where the resource's converted shards are (named by unit, shared by its versions)."""
    return naming.unit_pool(spec.output.prefix, owner.uid)


def _split_way(list_file: str | None, fraction: float | None, folder: str | None, value: str | None) -> dict[str, Any]:
    if value is not None:
        return {"value": value}
    if folder is not None:
        return {"folder": folder}
    return {"listFile": list_file} if list_file else {"fraction": fraction}


def converter_config(spec: DatasetSpec, owner: Owner, workers: int | None = None) -> dict[str, Any]:
    """What every converter worker needs; serialised into the pod's environment.

    `workers`: how many converter pods share the units to convert (at most `spec.conversion.workers`).
    """
    source: dict[str, Any]
    if spec.source.bucket is not None:
        source = {
            "kind": "ais",
            "bucket": spec.source.bucket.name,
            "provider": spec.source.bucket.provider,
            "prefix": spec.source.prefix,
        }
    else:
        source = {"kind": "volume", "root": SOURCE_MOUNT}
    return {
        "source": source,
        "fields": [{"pattern": f.pattern, "name": f.name} for f in spec.fields],
        "labels": (
            {
                "path": spec.label.path,
                "keyColumn": spec.label.key_column,
                "valueColumn": spec.label.value_column,
                "name": spec.label.name,
            }
            if spec.label
            else None
        ),
        "required": list(spec.required),
        "layout": spec.layout.to_config(),
        "output": {
            "bucket": spec.output.bucket.name,
            "provider": spec.output.bucket.provider,
            "base": converted_base(spec, owner),
            "pool": unit_pool(spec, owner),
            "versions": naming.uid_base(spec.output.prefix, owner.uid),
            "maxSamples": spec.output.max_samples,
            "maxBytes": spec.output.max_bytes,
        },
        "workers": workers or spec.conversion.workers,
        "reads": {
            "mode": spec.conversion.reads.mode,
            "batchObjects": spec.conversion.reads.batch_objects,
            "batchBytes": spec.conversion.reads.batch_bytes,
        },
        "generation": owner.generation,
        "version": owner.version,
        "orderSeed": spec.shuffle.seed if spec.shuffle and spec.shuffle.algorithm == "shuffle" else None,
        "splits": (
            {
                "sets": [
                    {"name": s.name, **_split_way(s.list_file, s.fraction, s.folder, s.value)} for s in spec.splits.sets
                ],
                "rest": spec.splits.rest,
                "keyColumn": spec.label.key_column if spec.label else 0,
                "seed": spec.splits.seed,
                "stratifyBy": spec.splits.stratify_by,
                "member": spec.splits.member,
            }
            if spec.splits
            else None
        ),
        "transform": spec.transform.to_config() if spec.transform else None,
        "aisEtl": (
            {"name": naming.etl_name(owner.uid, owner.version), "member": spec.transform.ais_etl.member}
            if spec.transform and spec.transform.ais_etl
            else None
        ),
        "transformImage": spec.transform.function.image if spec.transform and spec.transform.function else None,
    }


ETL_PORT = 8000  # the port AIS expects an ETL webserver on (named "default")
ETL_CLASS_ENV = "SDO_ETL_CLASS"  # etl/sdo_etl/serve.py: the "module:Class" to run


def etl_image_problem(etl: AisEtl, defaults: ConverterDefaults) -> str | None:
    """Why the operator may not start this ETL image (None: it may). An ETL pod runs in the AIS cluster's
    namespace with the target's volumes mounted (read-only): the operator's setting names what may run there."""
    if any(etl.image.startswith(prefix) for prefix in defaults.etl_images):
        return None
    allowed = ", ".join(defaults.etl_images) or "none configured"
    return (
        f"spec.transform.aisEtl.image {etl.image} is not an image this operator may start as an AIS ETL "
        f"(operator setting etl.allowedImages: {allowed})"
    )


def etl_init_message(etl: AisEtl, name: str, owner: Owner, defaults: ConverterDefaults) -> dict[str, Any]:
    """The AIS ETL init request (`PUT /v1/etl`): a pod spec for the ETL webserver, which AIS starts next to
    every target. A full pod spec (not AIS's image-only form, which always pulls) so that the pull policy is the
    operator's, as for every user image."""
    env = [{"name": k, "value": v} for k, v in etl.env]
    if etl.class_name:
        env.insert(0, {"name": ETL_CLASS_ENV, "value": etl.class_name})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {naming.LABEL_NAME: owner.name, "shardeddataset.dev/namespace": owner.namespace},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "server",
                    "image": etl.image,
                    "imagePullPolicy": defaults.user_image_pull_policy,
                    "ports": [{"name": "default", "containerPort": ETL_PORT}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": "default"}, "periodSeconds": 2},
                    "env": env,
                    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
                }
            ],
        },
    }
    spec_yaml = json.dumps(pod, sort_keys=True)  # JSON is YAML: what AIS decodes
    return {
        "name": name,
        "communication": f"{etl.comm_type}://",
        "init_timeout": defaults.etl_init_timeout,
        "obj_timeout": etl.obj_timeout,
        "spec": base64.b64encode(spec_yaml.encode()).decode(),
    }


def worker_image(spec: DatasetSpec, defaults: ConverterDefaults, component: str) -> str:
    """Converters run the user's transform image when the spec names one (built FROM the project image);
    the planner never runs user code."""
    fn = spec.transform.function if spec.transform else None
    if component == CONVERTER and fn is not None and fn.image:
        return fn.image
    return defaults.image


def default_resources(spec: DatasetSpec) -> dict[str, Any]:
    """Memory sized to two in-flight shards (one being built, one uploading) plus the runtime."""
    shard = spec.output.max_bytes or 64 * MiB
    limit_mib = max(512, (3 * shard) // MiB + 256)
    return {
        "requests": {"cpu": "250m", "memory": f"{min(limit_mib, 256 + (2 * shard) // MiB)}Mi"},
        "limits": {"memory": f"{limit_mib}Mi"},
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "sharded-dataset-operator",
        "app.kubernetes.io/managed-by": "sharded-dataset-operator",
        naming.LABEL_COMPONENT: component,
        naming.LABEL_NAME: owner.name,
        naming.LABEL_GENERATION: str(owner.generation),
        naming.LABEL_VERSION: owner.version,
    }


PLANNER = "planner"
CONVERTER = "converter"
_STEPS = {  # component -> (job-name step, module the pod runs)
    PLANNER: ("plan", "sharded_dataset_operator.pods.planner"),
    CONVERTER: ("convert", "sharded_dataset_operator.pods.converter"),
}


def build_planner_job(
    spec: DatasetSpec, owner: Owner, defaults: ConverterDefaults, previous_plan: str | None = None
) -> dict[str, Any]:
    """The one-pod Job that lists the source once and writes the conversion plan; `previous_plan`: the plan
    manifest of the version this one replaces (in the output bucket), whose intact units it takes over."""
    return build_converter_job(spec, owner, defaults, component=PLANNER, previous_plan=previous_plan)


def build_converter_job(
    spec: DatasetSpec,
    owner: Owner,
    defaults: ConverterDefaults,
    component: str = CONVERTER,
    workers: int | None = None,
    previous_plan: str | None = None,
    warm: bool = False,
) -> dict[str, Any]:
    """The Indexed Job whose pod N converts its share of the plan's units to convert (or, as `PLANNER`, writes
    the plan); `workers` pods (default `spec.conversion.workers`); `warm`: the source was prefetched into AIS."""
    step, module = _STEPS[component]
    labels = child_labels(owner, component)
    workers = workers or spec.conversion.workers
    config = converter_config(spec, owner, workers)
    if previous_plan:
        config["output"]["previous"] = previous_plan
    if warm:
        config["source"]["warm"] = True
    env: list[dict[str, Any]] = [
        {"name": CONFIG_ENV, "value": json.dumps(config, sort_keys=True)},
        {"name": "AIS_ENDPOINT", "value": spec.ais.endpoint},
    ]
    if spec.ais.token_secret:
        secret, key = spec.ais.token_secret
        env.append({"name": "AIS_AUTHN_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if spec.source.claim_name:
        sub = spec.source.path.strip("/")
        mount: dict[str, Any] = {"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True}
        if sub:
            mount["subPath"] = sub
        mounts.append(mount)
        volumes.append(
            {
                "name": "source",
                "persistentVolumeClaim": {"claimName": spec.source.claim_name, "readOnly": True},
            }
        )
    container: dict[str, Any] = {
        "name": CONVERTER_CONTAINER,
        "image": worker_image(spec, defaults, component),
        "imagePullPolicy": (
            defaults.user_image_pull_policy
            if worker_image(spec, defaults, component) != defaults.image
            else defaults.image_pull_policy
        ),
        "args": [module],
        "env": env,
        "resources": spec.conversion.resources or defaults.resources or default_resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if defaults.service_account:
        pod_spec["serviceAccountName"] = defaults.service_account
    node_selector = {**spec.conversion.node_selector, **defaults.node_selector}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = [*defaults.tolerations, *(t for t in spec.conversion.tolerations if t not in defaults.tolerations)]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    completions = workers if component == CONVERTER else 1
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": naming.job_name(owner.name, owner.version, step),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": completions,
            "backoffLimitPerIndex": spec.conversion.retries,
            "maxFailedIndexes": 0,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailIndex",
                        "onExitCodes": {
                            "containerName": CONVERTER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_PERMANENT],
                        },
                    },
                    {
                        "action": "Ignore",
                        "onExitCodes": {
                            "containerName": CONVERTER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_UNAVAILABLE],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def dsort_shard_size(target: int, member_bytes: int, tar_bytes: int) -> int:
    """What to ask dSort for so that output shards are `target` tar bytes.

    dSort fills an output shard until its records' member bytes reach the size asked for; tar headers and
    padding come on top (on 4 KiB samples about +40 %). The converters measured both sides over the whole
    dataset, so the ratio is exact on average.
    """
    if member_bytes <= 0 or tar_bytes <= 0:
        return target
    return max(1, target * member_bytes // tar_bytes)


def build_dsort_spec(
    spec: DatasetSpec,
    owner: Owner,
    input_shards: list[str],
    member_bytes: int = 0,
    tar_bytes: int = 0,
    attempt: int = 1,
    split: str | None = None,
) -> dict[str, Any]:
    """AIS dSort request: shuffle/sort the converted shards (of one split) into `outputShardSize` shards.

    Input is the exact list of shards the converters reported (never a prefix listing), records are keyed by
    the WebDataset key, and any missing input shard or duplicate record aborts the job instead of silently
    losing or merging samples. The size asked for is corrected by the measured header overhead
    (`dsort_shard_size`). Each attempt has its own description and output names.
    """
    assert spec.shuffle is not None
    algorithm: dict[str, Any] = {"kind": spec.shuffle.algorithm}
    if spec.shuffle.algorithm == "shuffle":
        algorithm = {"kind": "content", "extension": f".{ORDER_MEMBER}", "content_key_type": "int"}
    return {
        "input_bck": {"name": spec.output.bucket.name, "provider": spec.output.bucket.provider},
        "input_format": {"objnames": sorted(input_shards)},
        "input_extension": ".tar",
        "output_bck": {
            "name": spec.shuffle.output_bucket.name,
            "provider": spec.shuffle.output_bucket.provider,
        },
        "output_format": naming.output_template(naming.attempt_base(output_base(spec, owner, split), attempt)),
        "output_extension": ".tar",
        "output_shard_size": str(dsort_shard_size(spec.shuffle.output_shard_size, member_bytes, tar_bytes)),
        "algorithm": algorithm,
        "description": naming.dsort_description(owner.namespace, owner.name, owner.uid, owner.version, attempt, split),
        "Config": {"duplicated_records": "abort", "missing_shards": "abort"},
        # Explicit, so the proxy skips probing targets' memory (that probe is refused by AIS 5.0 targets).
        "dsorter_type": "dsort_general",
    }


def order_rank(seed: str, key: str) -> int:
    """A sample's position key under `seed`: a 63-bit hash, so sorting by it is a seeded shuffle."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def build_shard_index(
    name: str, shards: list[tuple[Any, ...]], index_object: str, info: dict[str, Any], keep_order: bool = False
) -> dict[str, Any]:
    """wids shard index (`wids-shard-index-v1`); shard URLs are relative to the index object's location.

    Shards are listed by name, or in the given order with `keep_order` (converted shards in key order)."""
    directory = index_object.rsplit("/", 1)[0] + "/" if "/" in index_object else ""
    shardlist = []
    for obj, n, size, *rest in shards if keep_order else sorted(shards):
        entry: dict[str, Any] = {
            "url": obj[len(directory) :] if obj.startswith(directory) else obj,
            "nsamples": n,
            "filesize": size,
        }
        checksum = rest[0] if rest else None
        if checksum:
            # AIS's own checksum of the whole shard object (type per bucket: xxhash2 by default); wids' md5sum
            # field is filled only when the bucket checksums with MD5.
            entry["checksum"] = dict(checksum)
            if checksum.get("type") == "md5":
                entry["md5sum"] = checksum["value"]
        shardlist.append(entry)
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": name,
        "info": info,
        "shardlist": shardlist,
    }
