"""Typed view of a ShardedDataset spec, with the defaults the CRD does not express.

The API server already rejects invalid objects (OpenAPI schema + CEL rules in the CRD); `parse_spec` applies
defaults and raises `SpecError` for anything that slipped through (for example a CRD installed without
validation), naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core.layout import Layout, LayoutError, parse_layout
from sharded_dataset_operator.core.samples import FieldRule, LabelRule, default_required
from sharded_dataset_operator.core.schedule import RefreshSchedule, ScheduleError, parse_refresh
from sharded_dataset_operator.core.splitspec import Splits as Splits
from sharded_dataset_operator.core.splitspec import SplitSet as SplitSet
from sharded_dataset_operator.core.splitspec import SplitSpecError, parse_splits
from sharded_dataset_operator.core.versions import DEFAULT_RETAIN_SECONDS, parse_duration

API_GROUP = "shardeddataset.dev"
API_VERSION = "v1alpha1"
KIND = "ShardedDataset"
PLURAL = "shardeddatasets"

DEFAULT_WORKERS = 4
DEFAULT_RETRIES = 2

_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([KMGT]i?B?|B)?\s*$")
_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "M": 1000**2,
    "MB": 1000**2,
    "G": 1000**3,
    "GB": 1000**3,
    "T": 1000**4,
    "TB": 1000**4,
    "Ki": 1024,
    "KiB": 1024,
    "Mi": 1024**2,
    "MiB": 1024**2,
    "Gi": 1024**3,
    "GiB": 1024**3,
    "Ti": 1024**4,
    "TiB": 1024**4,
}


class SpecError(ValueError):
    """An invalid spec; the message starts with the offending field path."""


def parse_size(value: str | int, field_path: str) -> int:
    """Parse `100MiB`, `100Mi`, `512KiB` (IEC, powers of 1024) or `100MB`, `1G` (SI) or plain bytes."""
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE_RE.match(value)
        if not m or (m.group(2) or "") not in _UNITS:
            raise SpecError(f"{field_path}: {value!r} is not a size such as 100MiB, 64Mi, 500MB or 1048576")
        size = int(m.group(1)) * _UNITS[m.group(2) or ""]
    if size <= 0:
        raise SpecError(f"{field_path}: must be positive")
    return size


@dataclass(frozen=True, slots=True)
class AisTarget:
    endpoint: str
    token_secret: tuple[str, str] | None  # (secret name, key)


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    provider: str = "ais"


@dataclass(frozen=True, slots=True)
class Source:
    bucket: Bucket | None  # kind ais
    prefix: str
    claim_name: str | None  # kind volume
    path: str
    revision: str = ""  # free-form marker; changing it only changes the generation (a GitOps refresh)
    prefetch: bool = False  # a remote bucket: warm the source into AIS (one AIS prefetch job) before converting

    @property
    def kind(self) -> str:
        return "ais" if self.bucket is not None else "volume"


DEFAULT_MAX_REMOVED = "10%"


def _max_removed(value: Any) -> int | str:
    """spec.output.publishGuard.maxRemoved: a non-negative count or a percentage from 0% to 100%."""
    if value is None:
        return DEFAULT_MAX_REMOVED
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value)
    if text.endswith("%") and text[:-1].isdigit() and 0 <= int(text[:-1]) <= 100:
        return text
    raise SpecError("spec.output.publishGuard.maxRemoved: must be a non-negative count or a percentage from 0% to 100%")


@dataclass(frozen=True, slots=True)
class Output:
    bucket: Bucket
    prefix: str
    max_samples: int | None
    max_bytes: int | None
    retain_seconds: float = DEFAULT_RETAIN_SECONDS  # how long a replaced version stays readable
    max_removed: int | str = DEFAULT_MAX_REMOVED  # publishGuard.maxRemoved: a count, or a percentage "N%"


@dataclass(frozen=True, slots=True)
class Reads:
    """How converters read raw files from AIS: Get-Batch requests (`batch`) or one GET per file (`object`)."""

    mode: str = "batch"
    batch_objects: int = 2048
    batch_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Conversion:
    workers: int
    retries: int
    resources: dict[str, Any]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    reads: Reads = field(default_factory=lambda: Reads())


REFRESH_RESHUFFLE, REFRESH_APPEND = "Reshuffle", "Append"  # spec.shuffle.refreshMode


@dataclass(frozen=True, slots=True)
class Shuffle:
    algorithm: str
    seed: str
    output_prefix: str
    output_shard_size: int
    output_bucket: Bucket
    delete_input: bool
    max_attempts: int = 3
    refresh_mode: str = "Reshuffle"  # Reshuffle | Append: how a refresh that only added samples is shuffled


IMAGE_FORMATS = {"jpeg": "jpg", "png": "png", "webp": "webp"}  # format -> member extension
_FUNCTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Resize:
    """Built-in transform: fit one image member within `max_side` pixels (aspect kept, never upscaled) and
    encode it as `format`; the member's extension follows the format (`image.jpg` -> `image.webp`)."""

    member: str
    max_side: int
    format: str = "jpeg"
    quality: int = 90

    @property
    def output_member(self) -> str:
        stem = self.member.rsplit(".", 1)[0] if "." in self.member else self.member
        return f"{stem}.{IMAGE_FORMATS[self.format]}"


@dataclass(frozen=True, slots=True)
class Function:
    """A user function `module:function` (members in, members out; None drops the sample), imported in the
    converter from its image (`image`, or the converter image)."""

    name: str
    image: str | None = None


@dataclass(frozen=True, slots=True)
class AisEtl:
    """An AIS ETL the operator runs next to the data: the webserver class `class_name` ("module:Class", in
    `image`) transforms each raw object of member `member` as the converter reads it through the ETL."""

    image: str
    member: str
    class_name: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    comm_type: str = "hpush"
    obj_timeout: str = "45s"


@dataclass(frozen=True, slots=True)
class Transform:
    """Per-sample work: the AIS ETL as the member is read, then the user function, then the resize."""

    resize: Resize | None = None
    function: Function | None = None
    ais_etl: AisEtl | None = None

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.function is not None:
            out["function"] = {"name": self.function.name}
        if self.resize is not None:
            r = self.resize
            out["resize"] = {"member": r.member, "maxSide": r.max_side, "format": r.format, "quality": r.quality}
        return out


ETL_COMM_TYPES = ("hpush", "hpull")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CLASS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


def _ais_etl(raw: dict[str, Any], members: list[str], path: str) -> AisEtl:
    etl = AisEtl(
        image=str(raw.get("image") or ""),
        member=str(raw.get("member") or ""),
        class_name=str(raw["class"]) if raw.get("class") else None,
        env=tuple(sorted((str(k), str(v)) for k, v in (raw.get("env") or {}).items())),
        comm_type=str(raw.get("commType") or "hpush"),
        obj_timeout=str(raw.get("objectTimeout") or "45s"),
    )
    if not etl.image:
        raise SpecError(f"{path}.image: required")
    if members and etl.member not in members:
        raise SpecError(f"{path}.member: {etl.member!r} is not a member of the samples")
    if not members and etl.member:
        raise SpecError(f"{path}.member: not a field here (the ETL applies to whole shards)")
    if etl.class_name is not None and not _CLASS_RE.match(etl.class_name):
        raise SpecError(f"{path}.class: must be module:Class, e.g. sdo_etl.examples:ResizeImage")
    bad = [k for k, _ in etl.env if not _ENV_RE.match(k)]
    if bad:
        raise SpecError(f"{path}.env: {bad[0]!r} is not an environment variable name")
    if etl.comm_type not in ETL_COMM_TYPES:
        raise SpecError(f"{path}.commType: must be hpush or hpull")
    parse_duration(etl.obj_timeout, f"{path}.objectTimeout")
    return etl


def _transform(raw: dict[str, Any], members: list[str]) -> Transform | None:
    if not raw:
        return None
    resize = function = ais_etl = None
    if raw.get("aisEtl"):
        ais_etl = _ais_etl(raw["aisEtl"], members, "spec.transform.aisEtl")
    if raw.get("resize"):
        r = raw["resize"]
        resize = Resize(
            member=str(r.get("member") or ""),
            max_side=int(r.get("maxSide") or 0),
            format=str(r.get("format") or "jpeg").lower(),
            quality=int(r.get("quality") or 90),
        )
        if resize.member not in members:
            raise SpecError(f"spec.transform.resize.member: {resize.member!r} is not a member of the samples")
        if not 1 <= resize.max_side <= 65535:
            raise SpecError("spec.transform.resize.maxSide: must be within 1..65535")
        if resize.format not in IMAGE_FORMATS:
            raise SpecError("spec.transform.resize.format: must be jpeg, png or webp")
        if not 1 <= resize.quality <= 100:
            raise SpecError("spec.transform.resize.quality: must be within 1..100")
    if raw.get("function"):
        f = raw["function"]
        function = Function(name=str(f.get("name") or ""), image=str(f["image"]) if f.get("image") else None)
        if not _FUNCTION_RE.match(function.name):
            raise SpecError("spec.transform.function.name: must be module:function, e.g. my_transforms:crop")
    if resize is None and function is None and ais_etl is None:
        return None
    return Transform(resize=resize, function=function, ais_etl=ais_etl)


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    ais: AisTarget
    source: Source
    fields: tuple[FieldRule, ...]
    label: LabelRule | None
    required: tuple[str, ...]
    output: Output
    conversion: Conversion
    shuffle: Shuffle | None
    deletion_policy: str
    extra: dict[str, Any] = field(default_factory=dict)
    transform: Transform | None = None
    splits: Splits | None = None
    serve_etl: AisEtl | None = None  # spec.serve.etl: an AIS ETL kept running for readers (inline GET)
    layout: Layout = field(default_factory=Layout)  # spec.samples.key, classes, tables
    refresh: RefreshSchedule | None = None  # spec.refresh.schedule: checks of the source at each tick


def _reads(raw: dict[str, Any]) -> Reads:
    mode = str(raw.get("mode") or "batch")
    if mode not in ("batch", "object"):
        raise SpecError("spec.conversion.reads.mode: must be batch or object")
    objects = int(raw.get("batchObjects") or 2048)
    if not 1 <= objects <= 10_000:
        raise SpecError("spec.conversion.reads.batchObjects: must be within 1..10000")
    size = parse_size(raw["batchSize"], "spec.conversion.reads.batchSize") if raw.get("batchSize") else 8 * 1024 * 1024
    return Reads(mode=mode, batch_objects=objects, batch_bytes=size)


def _bucket(raw: dict[str, Any], path: str) -> Bucket:
    name = raw.get("bucket")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{path}.bucket: required")
    return Bucket(name=name, provider=str(raw.get("provider") or "ais"))


def parse_spec(spec: dict[str, Any], *, name: str, default_endpoint: str) -> DatasetSpec:
    """Turn the raw `spec` dict into a `DatasetSpec`, applying defaults."""
    ais_raw = spec.get("ais") or {}
    endpoint = str(ais_raw.get("endpoint") or default_endpoint or "")
    if not endpoint:
        raise SpecError("spec.ais.endpoint: not set and the operator has no default AIS endpoint")
    token_ref = ais_raw.get("tokenSecretRef")
    token = (str(token_ref["name"]), str(token_ref.get("key") or "token")) if token_ref else None

    src = spec.get("source") or {}
    revision = str(src.get("revision") or "")
    if ("ais" in src) == ("volume" in src):
        raise SpecError("spec.source: exactly one of ais or volume must be set")
    if "ais" in src:
        source = Source(
            bucket=_bucket(src["ais"], "spec.source.ais"),
            prefix=str(src["ais"].get("prefix") or ""),
            claim_name=None,
            path="",
            revision=revision,
            prefetch=bool(src["ais"].get("prefetch", False)),
        )
        if source.prefetch and source.bucket is not None and source.bucket.provider == "ais":
            raise SpecError("spec.source.ais.prefetch: only a remote bucket (provider aws, gcp, ...) is prefetched")
    else:
        claim = src["volume"].get("claimName")
        if not claim:
            raise SpecError("spec.source.volume.claimName: required")
        source = Source(
            bucket=None,
            prefix="",
            claim_name=str(claim),
            path=str(src["volume"].get("path") or "/"),
            revision=revision,
        )

    samples = spec.get("samples") or {}
    fields = tuple(FieldRule(pattern=str(f["pattern"]), name=str(f["name"])) for f in samples.get("fields") or [])
    if not fields:
        raise SpecError("spec.samples.fields: at least one field is required")
    labels_raw = samples.get("labels")
    label = None
    if labels_raw:
        label = LabelRule(
            path=str(labels_raw["path"]),
            key_column=int(labels_raw.get("keyColumn", 0)),
            value_column=int(labels_raw.get("valueColumn", 1)),
            name=str(labels_raw.get("name") or "cls"),
        )
    try:
        layout = parse_layout(samples)
    except LayoutError as e:
        raise SpecError(str(e)) from e
    names = list(dict.fromkeys(f.name for f in fields)) + ([label.name] if label else []) + layout.value_members()
    if len(set(names)) != len(names):
        raise SpecError("spec.samples: member names must be unique (fields, the label, classes and tables)")
    required = tuple(samples.get("required") or default_required(fields, label, layout))
    for r in required:
        if r not in names:
            raise SpecError(f"spec.samples.required: {r!r} is not a member (a field, the label, a class or a column)")

    out = spec.get("output") or {}
    max_samples = out.get("maxSamplesPerShard")
    max_bytes = parse_size(out["maxShardSize"], "spec.output.maxShardSize") if out.get("maxShardSize") else None
    if max_samples is None and max_bytes is None:
        raise SpecError("spec.output: set maxSamplesPerShard, maxShardSize or both")
    if max_samples is not None and int(max_samples) < 1:
        raise SpecError("spec.output.maxSamplesPerShard: must be at least 1")
    out_bucket = _bucket(out, "spec.output")
    try:
        retain = parse_duration(out.get("retainPrevious"))
    except ValueError as e:
        raise SpecError(str(e)) from e
    max_removed = _max_removed((out.get("publishGuard") or {}).get("maxRemoved"))
    output = Output(
        bucket=out_bucket,
        prefix=str(out.get("prefix") if out.get("prefix") is not None else f"{name}-"),
        max_samples=int(max_samples) if max_samples is not None else None,
        max_bytes=max_bytes,
        retain_seconds=retain,
        max_removed=max_removed,
    )

    conv = spec.get("conversion") or {}
    conversion = Conversion(
        workers=int(conv.get("workers") or DEFAULT_WORKERS),
        retries=int(conv["retries"]) if conv.get("retries") is not None else DEFAULT_RETRIES,
        resources=dict(conv.get("resources") or {}),
        node_selector={str(k): str(v) for k, v in (conv.get("nodeSelector") or {}).items()},
        tolerations=list(conv.get("tolerations") or []),
        reads=_reads(conv.get("reads") or {}),
    )
    if conversion.workers < 1:
        raise SpecError("spec.conversion.workers: must be at least 1")

    shuffle = None
    sh = spec.get("shuffle")
    if sh is not None:
        shuffle = Shuffle(
            algorithm=str(sh.get("algorithm") or "shuffle"),
            seed=str(sh.get("seed") or "0"),
            output_prefix=str(sh.get("outputPrefix") or f"{output.prefix}shuffled-"),
            output_shard_size=parse_size(sh.get("outputShardSize") or "100MiB", "spec.shuffle.outputShardSize"),
            output_bucket=Bucket(
                name=str(sh.get("outputBucket") or out_bucket.name),
                provider=str(sh.get("outputProvider") or out_bucket.provider),
            ),
            delete_input=bool(sh.get("deleteInput", False)),
            max_attempts=int(sh.get("maxAttempts") or 3),
            refresh_mode=str(sh.get("refreshMode") or REFRESH_RESHUFFLE),
        )
        if shuffle.algorithm not in ("shuffle", "alphanumeric", "none"):
            raise SpecError("spec.shuffle.algorithm: must be shuffle, alphanumeric or none")
        if not shuffle.seed.isdigit():
            raise SpecError("spec.shuffle.seed: must be a decimal number")
        if not 1 <= shuffle.max_attempts <= 10:
            raise SpecError("spec.shuffle.maxAttempts: must be within 1..10")
        if shuffle.refresh_mode not in (REFRESH_RESHUFFLE, REFRESH_APPEND):
            raise SpecError("spec.shuffle.refreshMode: must be Reshuffle or Append")
        if shuffle.refresh_mode == REFRESH_APPEND and shuffle.algorithm != "shuffle":
            raise SpecError("spec.shuffle.refreshMode: Append needs algorithm shuffle (a sorted order is not global)")

    transform = _transform(spec.get("transform") or {}, names)
    if transform is not None and transform.ais_etl is not None and source.bucket is None:
        raise SpecError("spec.transform.aisEtl: needs an AIS source (spec.source.ais): AIS ETL reads AIS objects")
    try:
        refresh = parse_refresh(spec.get("refresh"))
    except ScheduleError as e:
        raise SpecError(str(e)) from e
    if refresh is not None and source.bucket is None:
        raise SpecError("spec.refresh.schedule: needs an AIS source (spec.source.ais); a volume is not listed")
    policy = str(spec.get("deletionPolicy") or "Retain")
    if policy not in ("Retain", "Delete"):
        raise SpecError("spec.deletionPolicy: must be Retain or Delete")
    return DatasetSpec(
        ais=AisTarget(endpoint=endpoint.rstrip("/"), token_secret=token),
        source=source,
        fields=fields,
        label=label,
        required=required,
        output=output,
        conversion=conversion,
        shuffle=shuffle,
        deletion_policy=policy,
        transform=transform,
        serve_etl=_ais_etl((spec.get("serve") or {})["etl"], [], "spec.serve.etl")
        if (spec.get("serve") or {}).get("etl")
        else None,
        splits=_splits(spec.get("splits"), ([label.name] if label else []) + layout.value_members()),
        layout=layout,
        refresh=refresh,
    )


def _splits(raw: dict[str, Any] | None, values: list[str]) -> Splits | None:
    try:
        return parse_splits(raw, values)
    except SplitSpecError as e:
        raise SpecError(str(e)) from e
