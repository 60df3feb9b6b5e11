"""In-memory AIS and Kubernetes for the simulation, with the pods (planner, converters) and dSort jobs.

`FakeAis` has the method names and signatures of `clients.ais.Ais` that the operator calls and raises the same
exceptions when a fault is injected; `FakeKube` stands in for the `clients.kube` module. Shards are lists of
(member, size) entries, never tar bytes. Everything is driven by one seeded `random.Random`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import sys
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sharded_dataset_operator.clients.ais import (
    AccessDenied,
    AisUnavailable,
    BucketNotFound,
    DsortRejected,
    ListingError,
    MissingObject,
)
from sharded_dataset_operator.clients.kube import TOKEN_SECRET_LABEL, SecretNotAllowed
from sharded_dataset_operator.core import naming, units
from sharded_dataset_operator.core.model import DsortJob, Entry, JobState, PodWait
from sharded_dataset_operator.core.verify import Totals

EPOCH = 1_790_000_000.0
ENDPOINT = "http://ais:51080"


class Crash(BaseException):
    """The operator restarts at this point of a pass (nothing after it happens)."""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Clock:
    t: float = EPOCH

    def now_iso(self) -> str:
        return iso(self.t)


@dataclass(slots=True)
class Faults:
    """Seeded fault switches; `rate` is the chance that any one call misbehaves while `on`."""

    rng: random.Random
    rate: float = 0.0
    crash_rate: float = 0.0
    on: bool = False
    refusing: bool = False  # AIS refuses every new dSort (a target above its capacity watermark)
    denying: bool = False  # the dataset's token may not write the dSort output (revoked right)
    rebalancing: bool = False
    blocking: bool = False  # the planner and converter pods cannot start (unschedulable): running Jobs stand still
    blocked_since: float = 0.0  # when `blocking` last went on

    def hit(self, scale: float = 1.0) -> bool:
        return self.on and self.rng.random() < self.rate * scale

    def crash(self) -> None:
        if self.on and self.rng.random() < self.crash_rate:
            raise Crash()


@dataclass(slots=True)
class Obj:
    data: bytes
    size: int
    checksum: str
    members: tuple[tuple[str, int], ...] | None = None  # a tar shard: its members, sorted by name


@dataclass(frozen=True, slots=True)
class Listed:
    """A listing entry as the SDK gives it (name, size, checksum)."""

    name: str
    size: int
    checksum: str


def _deleter() -> str:
    """The operator function that deletes (for the report): sweep_units, or cleanup_record and why."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_name
        if name == "sweep_units":
            return name
        if name == "cleanup_record":
            action = (frame.f_back.f_locals if frame.f_back else {}).get("action")
            return f"cleanup_record({'retired' if getattr(action, 'retired', False) else 'abandoned'})"
        if name in ("execute", "step"):
            return name
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def tar_size(members: tuple[tuple[str, int], ...]) -> int:
    return 1024 + sum(512 + -(-s // 512) * 512 for _, s in members)


@lru_cache(maxsize=256)
def tar_bytes(members: tuple[tuple[str, int], ...]) -> bytes:
    """A real ustar archive of `members` (zero data), `tar_size(members)` bytes long."""
    out = bytearray()
    for name, size in members:
        info = tarfile.TarInfo(name)
        info.size = size
        out += info.tobuf(format=tarfile.USTAR_FORMAT) + bytes(-(-size // 512) * 512)
    return bytes(out + bytes(1024))


@dataclass(slots=True)
class SortJob:
    id: str
    spec: dict[str, Any]
    state: str = "running"  # running | finished | aborted
    steps: int = 1
    errors: tuple[str, ...] = ()
    ended_at: float | None = None
    created: int = 0


class FakeAis:
    """One AIS cluster: buckets of objects, listings, dSort; every call may fail while faults are on."""

    def __init__(self, clock: Clock, faults: Faults) -> None:
        self.endpoint, self.token = ENDPOINT, None
        self.clock, self.faults, self.rng = clock, faults, faults.rng
        self.buckets: dict[str, dict[str, Obj]] = {}
        self.deleted: dict[tuple[str, str], float] = {}  # (bucket, name) -> when it was last deleted
        self.deleted_by: dict[tuple[str, str], str] = {}  # (bucket, name) -> which operator code deleted it
        self.jobs: dict[str, SortJob] = {}
        self.starts: dict[str, int] = {}  # dSort description -> how many times it was started
        self.seq = 0

    # ------------------------------------------------------------------ store (no faults: the pods' side)

    def store(
        self, bucket: str, name: str, data: bytes = b"", members: tuple[tuple[str, int], ...] | None = None
    ) -> None:
        size = tar_size(members) if members is not None else len(data)
        digest = zlib.crc32(data if members is None else repr(members).encode())
        self.buckets.setdefault(bucket, {})[name] = Obj(data, size, f"{digest:08x}{size:x}", members)

    def remove(self, bucket: str, name: str) -> bool:
        if self.buckets.get(bucket, {}).pop(name, None) is None:
            return False
        self.deleted[(bucket, name)] = self.clock.t
        self.deleted_by[(bucket, name)] = _deleter()
        return True

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(n for n in self.buckets.get(bucket, {}) if n.startswith(prefix))

    def load(self, bucket: str, name: str) -> Any:
        obj = self.buckets.get(bucket, {}).get(name)
        if obj is None or obj.members is not None:
            return None
        try:
            return json.loads(obj.data)
        except ValueError:
            return None

    # ------------------------------------------------------------------ faults

    def _read(self, what: str) -> None:
        if self.faults.hit():
            raise AisUnavailable(f"AIS at {self.endpoint}: read timed out ({what})")

    def _write(self, what: str) -> None:
        self.faults.crash()
        if self.faults.hit(0.5):
            raise AisUnavailable(f"AIS at {self.endpoint}: HTTP 503 ({what})")

    def _bucket(self, name: str) -> dict[str, Obj]:
        b = self.buckets.get(name)
        if b is None:
            raise BucketNotFound(f"bucket ais://{name} not found")
        return b

    # ------------------------------------------------------------------ Ais API

    def bucket_exists(self, name: str, provider: str = "ais") -> bool:
        self._read("HEAD bucket")
        return name in self.buckets

    def ensure_bucket(self, name: str, provider: str = "ais") -> None:
        self._write("create bucket")
        self.buckets.setdefault(name, {})

    def _entries(self, bucket: str, prefix: str, archives: bool) -> list[Listed]:
        b = self._bucket(bucket)
        out: list[Listed] = []
        names = sorted(n for n in b if n.startswith(prefix))
        if names and self.faults.hit(0.5):  # a target that holds one object does not answer: a short listing
            names.remove(self.rng.choice(names))
        for n in names:
            obj = b[n]
            out.append(Listed(n, obj.size, obj.checksum))
            if archives and obj.members is not None:
                out.extend(Listed(f"{n}/{m}", s, "") for m, s in obj.members)
        return out

    def list_objects(
        self, bucket: str, provider: str = "ais", prefix: str = "", archives: bool = False
    ) -> Iterator[Entry]:
        self._read("list")
        for e in self._entries(bucket, prefix, archives):
            yield Entry(e.name, e.size)

    def list_pages(
        self,
        bucket: str,
        provider: str = "ais",
        prefix: str = "",
        *,
        props: str = "name,size",
        archives: bool = False,
        page_size: int = 0,
        ahead: bool = False,
    ) -> Iterator[list[Any]]:
        self._read("list")
        entries = self._entries(bucket, prefix, archives)
        size = self.rng.randint(3, 40)
        for i in range(0, len(entries), size):
            if i and self.faults.hit(0.3):
                raise ListingError(f"listing ais://{bucket}/{prefix} does not advance")
            yield list(entries[i : i + size])

    def object_count(self, bucket: str, provider: str = "ais", prefix: str = "") -> int:
        self._read("summary")
        return sum(1 for n in self._bucket(bucket) if n.startswith(prefix))

    def checksum_type(self, bucket: str, provider: str = "ais") -> str:
        self._read("bucket info")
        self._bucket(bucket)
        return "xxhash2"

    def get(self, bucket: str, name: str, provider: str = "ais", direct: bool = False) -> bytes | None:
        self._read("GET")
        obj = self.buckets.get(bucket, {}).get(name)
        if obj is None or self.faults.hit(0.5):  # a 404 from a target that restarted
            return None
        return obj.data if obj.members is None else b"ustar"

    def read_first_byte(self, bucket: str, name: str, provider: str = "ais") -> bool:
        self._read("GET range")
        return name in self.buckets.get(bucket, {})

    def exists(self, bucket: str, name: str, provider: str = "ais") -> bool:
        self._read("HEAD")
        return name in self.buckets.get(bucket, {})

    def stream_chunks(self, bucket: str, name: str, provider: str = "ais", chunk_size: int = 0) -> Iterator[bytes]:
        self._read("GET stream")
        obj = self.buckets.get(bucket, {}).get(name)
        if obj is None or self.faults.hit(0.5):  # (a 404 from a restarted target)
            raise MissingObject(f"ais://{bucket}/{name} not found")
        data = obj.data if obj.members is None else tar_bytes(obj.members)
        step = self.rng.randint(100, 5000)
        for i in range(0, len(data), step):
            if i and self.faults.hit(0.3):  # the target went away mid-stream
                raise AisUnavailable(f"AIS at {self.endpoint}: connection reset (GET {name})")
            yield data[i : i + step]

    def stream_lines(self, bucket: str, name: str, provider: str = "ais", missing_ok: bool = True) -> Iterator[str]:
        self._read("GET lines")
        obj = self.buckets.get(bucket, {}).get(name)
        if obj is None or obj.members is not None or self.faults.hit(0.5):  # (a 404 from a restarted target)
            if not missing_ok:
                raise MissingObject(f"ais://{bucket}/{name} not found")
            return
        yield from obj.data.decode().splitlines()

    def put(self, bucket: str, name: str, data: bytes, provider: str = "ais") -> None:
        if self.faults.denying and name.endswith("-access-probe"):
            raise AccessDenied("HTTP 403: the token may not write the dSort output")
        self._write(f"PUT {name}")
        self._bucket(bucket)
        self.store(bucket, name, data)
        self.faults.crash()

    def copy_objects(self, bucket: str, pairs: list[tuple[str, str]], provider: str = "ais") -> int:
        for source, destination in pairs:
            self._write(f"COPY {source}")
            obj = self._bucket(bucket).get(source)
            if obj is None:
                raise MissingObject(f"ais://{bucket}/{source} not found: not copied")
            self.buckets[bucket][destination] = obj
            self.faults.crash()
        return len(pairs)

    def delete_objects(self, bucket: str, names: list[str], provider: str = "ais") -> int:
        self._write("DELETE")
        for n in names:
            self.remove(bucket, n)
            self.faults.crash()
        return len(names)

    def delete_prefix(
        self, bucket: str, prefix: str, provider: str = "ais", keep: frozenset[str] = frozenset(), batch: int = 10_000
    ) -> int:
        if not prefix:
            raise ValueError("refusing to delete a whole bucket")
        self._write("DELETE prefix")
        if bucket not in self.buckets:
            return 0
        n = 0
        for name in self.names(bucket, prefix):
            if name not in keep:
                n += self.remove(bucket, name)
                if self.faults.hit(0.2):
                    raise AisUnavailable("AIS: HTTP 503 during a prefix deletion")
                self.faults.crash()
        return n

    def capacity_problems(self) -> list[str]:
        self._read("node status")
        return ["target t1: capacity above the high watermark"] if self.faults.refusing else []

    def running_rebalances(self) -> list[str]:
        self._read("jobs")
        return ["rebalance[r1]"] if self.faults.rebalancing else []

    def etl_list(self, prefix: str = "") -> dict[str, str]:
        return {}

    def etl_init(self, message: dict[str, Any], timeout: float) -> None:
        raise AssertionError("the simulation has no AIS ETL")

    def etl_delete(self, name: str) -> None:
        return None

    # ------------------------------------------------------------------ dSort

    def dsort_start(self, spec: dict[str, Any]) -> str:
        self._write("POST /v1/sort")
        if self.faults.hit(0.1):
            raise DsortRejected("dSort rejected the request: HTTP 400: invalid output bucket")
        self.seq += 1
        job_id = f"srt-{self.seq}"
        desc = str(spec["description"])
        self.starts[desc] = self.starts.get(desc, 0) + 1
        if not (self.faults.refusing or self.faults.hit(0.5)):  # else: refused at init, AIS forgets it at once
            self.jobs[job_id] = SortJob(job_id, spec, steps=self.rng.randint(1, 3))
        self.faults.crash()
        return job_id

    def _job(self, j: SortJob) -> DsortJob:
        return DsortJob(
            id=j.id,
            description=str(j.spec["description"]),
            finished=j.state == "finished",
            aborted=j.state == "aborted",
            errors=j.errors,
            extracted_records=0,
            created_shards=j.created,
            ended_at=j.ended_at,
        )

    def dsort_find(self, regex: str) -> list[DsortJob]:
        self._read("GET /v1/sort")
        pattern = re.compile(regex)
        return [self._job(j) for j in self.jobs.values() if pattern.match(str(j.spec["description"]))]

    def dsort_job(self, job_id: str) -> DsortJob | None:
        self._read("GET /v1/sort")
        j = self.jobs.get(job_id)
        return self._job(j) if j else None

    def dsort_abort(self, job_id: str) -> None:
        self._write("abort")
        j = self.jobs.get(job_id)
        if j is not None and j.state == "running":
            j.state, j.errors, j.ended_at = "aborted", ("aborted by request",), self.clock.t

    def step_dsort(self, faulty: bool) -> None:
        """Every running job advances: finishes (writes its output), aborts, or is lost (AIS forgets it)."""
        for j in list(self.jobs.values()):
            if j.state != "running":
                continue
            if faulty and self.rng.random() < self.faults.rate:
                del self.jobs[j.id]  # every target that ran it restarted
                continue
            if faulty and self.rng.random() < self.faults.rate:
                j.state, j.errors, j.ended_at = "aborted", ("stream: connection reset by peer",), self.clock.t
                continue
            j.steps -= 1
            if j.steps <= 0:
                self._finish(j)

    def _finish(self, j: SortJob) -> None:
        spec = j.spec
        src, dst = str(spec["input_bck"]["name"]), str(spec["output_bck"]["name"])
        samples: dict[str, list[tuple[str, int]]] = {}
        for name in spec["input_format"]["objnames"]:
            obj = self.buckets.get(src, {}).get(name)
            if obj is None or obj.members is None:
                j.state, j.errors, j.ended_at = "aborted", (f"missing shard {name}",), self.clock.t
                return
            for m, s in obj.members:
                samples.setdefault(m.split(".", 1)[0], []).append((m, s))
        keys = sorted(samples)
        if spec["algorithm"]["kind"] == "content":
            keys.sort(key=lambda k: hashlib.blake2b(k.encode(), digest_size=8).digest())
        per = max(1, int(spec["output_shard_size"]) // 2048)
        template = str(spec["output_format"])
        for i in range(0, len(keys), per):
            members = tuple(sorted(m for k in keys[i : i + per] for m in samples[k]))
            self.store(dst, f"{template % (i // per)}.tar", members=members)
            j.created += 1
        j.state, j.ended_at = "finished", self.clock.t


# ---------------------------------------------------------------------------------------------- Kubernetes


@dataclass(slots=True)
class SimJob:
    name: str
    version: str
    component: str
    config: dict[str, Any]
    workers: int
    steps: int
    state: str = "running"  # running | complete | failed
    deleting: bool = False
    done: set[int] = field(default_factory=set)
    completed_at: float | None = None
    message: str = ""


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386: a None value removes the key; objects merge, everything else replaces."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            old = out.get(k)
            out[k] = merge_patch(old if isinstance(old, dict) else {}, v)
        else:
            out[k] = v
    return out


class FakeKube:
    """The `clients.kube` functions the runner calls, over one ShardedDataset and its Jobs."""

    SecretNotAllowed = SecretNotAllowed
    TOKEN_SECRET_LABEL = TOKEN_SECRET_LABEL

    def __init__(self, clock: Clock, faults: Faults, obj: dict[str, Any]) -> None:
        self.clock, self.faults, self.obj = clock, faults, obj
        self.jobs: dict[str, SimJob] = {}

    def get_dataset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.faults.crash()
        self.obj["status"] = merge_patch(self.obj.get("status") or {}, status)

    def annotate_dataset(self, namespace: str, name: str, key: str, value: str) -> None:
        self.obj["metadata"].setdefault("annotations", {})[key] = value

    def get_job(self, namespace: str, name: str, generation: int) -> JobState | None:
        j = self.jobs.get(name)
        if j is None:
            return None
        return JobState(
            name=name,
            generation=generation,
            active=0 if j.state != "running" else j.workers - len(j.done),
            succeeded=len(j.done),
            failed=int(j.state == "failed"),
            complete=j.state == "complete",
            failed_reason="BackoffLimitExceeded" if j.state == "failed" else "",
            failed_message=j.message,
            deleting=j.deleting,
            completed_at=j.completed_at,
            waits=(
                (PodWait(f"{name}-0-x", "Unschedulable", "0/1 nodes are available", self.faults.blocked_since),)
                if self.faults.blocking and j.state == "running" and not j.deleting
                else ()
            ),
        )

    def stale_jobs(self, namespace: str, owner: str, version: str) -> list[str]:
        return sorted(j.name for j in self.jobs.values() if j.version != version and not j.deleting)

    def create_job(self, manifest: dict[str, Any]) -> None:
        self.faults.crash()
        meta = manifest["metadata"]
        if meta["name"] in self.jobs:
            return
        env = {e["name"]: e.get("value") for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
        labels = meta["labels"]
        self.jobs[meta["name"]] = SimJob(
            name=meta["name"],
            version=labels[naming.LABEL_VERSION],
            component=labels[naming.LABEL_COMPONENT],
            config=json.loads(env["SDS_CONVERTER_CONFIG"]),
            workers=int(manifest["spec"]["completions"]),
            steps=self.faults.rng.randint(1, 2),
        )
        self.faults.crash()

    def delete_jobs(self, namespace: str, names: tuple[str, ...]) -> None:
        for n in names:
            self.faults.crash()
            if n in self.jobs:
                self.jobs[n].deleting = True

    def converter_pods(self, namespace: str, owner: str, version: str) -> list[str]:
        return [f"{j.name}-0" for j in self.jobs.values() if j.version == version]

    def pvc_problem(self, namespace: str, claim: str) -> str | None:
        return None

    def read_secret_key(self, namespace: str, name: str, key: str, label: str | None = None) -> str:
        return "token"

    def stop_converters(self, namespace: str, owner: str, timeout: float = 60.0) -> bool:
        self.jobs.clear()
        return True


# ---------------------------------------------------------------------------------------------- pods


def sample_line(key: str, label: str, size: int, split: str | None) -> str:
    return json.dumps([key, label, [["image.jpg", f"images/{key}.jpg", size]], *([split] if split else [])])


class Pods:
    """The planner and converter pods: between passes, each running Job advances (and may fail)."""

    def __init__(self, ais: FakeAis, kube: FakeKube, source: str) -> None:
        self.ais, self.kube, self.source = ais, kube, source
        self.planned: dict[str, int] = {}  # version -> complete samples its planner found
        self.bad_reports = False  # a converter bug: a report that misses a unit (ConversionIncomplete)
        self.unit_lines: dict[str, list[str]] = {}  # unit id -> its samples' plan lines (the membership)

    def step(self, faulty: bool) -> None:
        rng = self.ais.rng
        for j in list(self.kube.jobs.values()):
            if j.deleting:
                del self.kube.jobs[j.name]
                continue
            if j.state != "running" or self.kube.faults.blocking:
                continue
            j.steps -= 1
            if j.steps > 0:
                continue
            if j.component == "planner":
                self.plan(j)
                j.state, j.completed_at = "complete", self.ais.clock.t
                continue
            for w in range(j.workers):
                if w in j.done or rng.random() < 0.3:
                    continue
                if faulty and rng.random() < self.ais.faults.rate:
                    j.state, j.message = "failed", f"[worker {w}, exit 1] converter crashed"
                    break
                if not self.convert(j, w, faulty and rng.random() < self.ais.faults.rate * 0.3):
                    j.state, j.message = "failed", f"[worker {w}, exit 2] a source file disappeared"
                    break
                j.done.add(w)
            if j.state == "running" and len(j.done) == j.workers:
                j.state, j.completed_at = "complete", self.ais.clock.t
        self.ais.step_dsort(faulty)

    def _samples(self, config: dict[str, Any]) -> tuple[list[tuple[str, str, int, str | None]], dict[str, int]]:
        """The source's complete samples (key, label, image size, split), sorted, and the skips by reason."""
        src = self.ais.buckets.get(self.source, {})
        labels: dict[str, str] = {}
        for line in src["list.txt"].data.decode().splitlines() if "list.txt" in src else []:
            k, _, v = line.partition(" ")
            labels[k] = v
        split_of: dict[str, str] = {}
        for s in (config.get("splits") or {}).get("sets") or []:
            obj = src.get(s["listFile"])
            for k in obj.data.decode().split() if obj else []:
                split_of[k] = s["name"]
        out, skipped = [], {"missing:cls": 0, "unlisted": 0}
        for name in sorted(src):
            if not (name.startswith("images/") and name.endswith(".jpg")):
                continue
            key = name[len("images/") : -len(".jpg")]
            split = split_of.get(key) if config.get("splits") else None
            if key not in labels:
                skipped["missing:cls"] += 1
            elif config.get("splits") and split is None:
                skipped["unlisted"] += 1
            else:
                out.append((key, labels[key], src[name].size, split))
        return out, {k: v for k, v in skipped.items() if v}

    def plan(self, j: SimJob) -> None:
        """What `converter/planner.py` writes, as far as the operator and the converters read it: the units of
        the previous version (`output.previous`) whose samples are all unchanged and whose shard exists are
        taken over whole; the rest of the samples (the convert stream, chunk 0) are cut into units."""
        config, out = j.config, j.config["output"]
        bucket, base = str(out["bucket"]), str(out["base"])
        samples, skipped = self._samples(config)
        layout = units.layout_digest(config)
        lines = [sample_line(k, lab, size, split) for k, lab, size, split in samples]
        table: list[str] = []
        fingerprint = 0
        kept, broken, previous_units, records = self._take_over(config, set(lines), layout)
        taken_lines = {line for u in kept for line in self.unit_lines[u.id]}
        convert = [i for i, line in enumerate(lines) if line not in taken_lines]
        stream_lines = [lines[i] for i in convert]
        for u in kept:
            table.append(dataclasses.replace(u, start=-1).line(units.TAKEN_OVER))
            fingerprint = (fingerprint + u.fingerprint) % units.FINGERPRINT_MOD
        streams: dict[str, list[int]] = {}
        for n, i in enumerate(convert):
            streams.setdefault(samples[i][3] or "", []).append(n)
        per = int(out.get("maxSamples") or 10)
        for stream, idx in sorted(streams.items()):
            for s in range(0, len(idx), per):
                chunk = idx[s : s + per]
                hasher, fp = units.UnitHasher(layout), 0
                for n in chunk:
                    hasher.add(stream_lines[n])
                    fp = (fp + units.line_digest(stream_lines[n])) % units.FINGERPRINT_MOD
                fingerprint = (fingerprint + fp) % units.FINGERPRINT_MOD
                first, last = samples[convert[chunk[0]]][0], samples[convert[chunk[-1]]][0]
                unit = units.Unit(hasher.hexdigest(), chunk[0], len(chunk), first, last, 0, fp, stream)
                self.unit_lines[unit.id] = [stream_lines[n] for n in chunk]
                table.append(unit.line(units.CONVERT))
        put = self.ais.store
        put(bucket, naming.plan_chunk_name(base, 0), "\n".join(stream_lines).encode())
        put(bucket, naming.plan_units_name(base, 0), "\n".join(table).encode())
        totals = Totals()
        for r in records:
            totals.merge(Totals.from_dict(r))
        reused = {
            "kind": "sds-reused-v1",
            "generation": config["generation"],
            "version": config["version"],
            "units": len(kept),
            "shards": records,
            "written": sum(int(r["samples"]) for r in records),
            "bytes": sum(int(r["bytes"]) for r in records),
            "consumed": sum(u.count for u in kept),
            "planFingerprint": sum(u.fingerprint for u in kept) % units.FINGERPRINT_MOD,
            **totals.to_dict(),
        }
        put(bucket, naming.reused_name(base), json.dumps(reused).encode())
        manifest = {
            "kind": "sds-plan-v1",
            "generation": config["generation"],
            "samples": len(samples),
            "skipped": skipped,
            "chunks": [naming.plan_chunk_name(base, 0)],
            "units": {
                "layout": layout,
                "count": len(table),
                "convert": len(table) - len(kept),
                "chunks": [naming.plan_units_name(base, 0)],
                "convertSamples": len(convert),
                "reused": len(kept),
                "takenOver": len(kept),
                "previous": out.get("previous") if previous_units is not None else None,
                "previousBroken": broken,
                "previousUnits": previous_units,
                "fingerprint": fingerprint,
            },
        }
        put(bucket, naming.plan_manifest_name(base), json.dumps(manifest).encode())
        self.planned[str(config["version"])] = len(samples)

    def _take_over(
        self, config: dict[str, Any], lines: set[str], layout: str
    ) -> tuple[list[units.Unit], int, int | None, list[dict[str, Any]]]:
        """(units taken over, previous units broken, previous unit count, their shards' records)."""
        out = config["output"]
        bucket, pool = str(out["bucket"]), str(out["pool"])
        previous = self.ais.load(bucket, str(out.get("previous") or ""))
        table = (previous or {}).get("units") or {}
        if not previous or table.get("layout") != layout:
            return [], 0, None, []
        old = []
        for chunk in table.get("chunks") or []:
            obj = self.ais.buckets.get(bucket, {}).get(str(chunk))
            if obj is None:
                return [], 0, None, []  # as the real planner: a table it cannot read takes nothing over
            old += [units.Unit.parse(x)[0] for x in obj.data.decode().splitlines() if x]
        kept, broken, records = [], 0, []
        for u in old:
            if not set(self.unit_lines.get(u.id, ["?"])) <= lines:
                broken += 1
                continue
            shard = self.ais.buckets.get(bucket, {}).get(naming.unit_shard_name(pool, u.id, 0))
            if shard is None or shard.members is None:
                continue  # intact, but its shard is gone: converted again
            totals = Totals()
            for m, size in shard.members:
                totals.add(m, size)
            kept.append(u)
            records.append({"name": naming.unit_shard_name(pool, u.id, 0), "unit": u.id, "part": 0, "last": True,
                            "samples": u.count, "bytes": shard.size, "consumed": u.count, "firstKey": u.first_key,
                            "lastKey": u.last_key, "planFingerprint": u.fingerprint, "takenOver": True,
                            **({"split": u.stream} if u.stream else {}), **totals.to_dict()})  # fmt: skip
        return kept, broken, len(old), records

    def convert(self, j: SimJob, worker: int, bad: bool) -> bool:
        """Worker `worker` converts its units (reading the plan and the source now); False: it failed."""
        out = j.config["output"]
        bucket, base, pool = str(out["bucket"]), str(out["base"]), str(out["pool"])
        manifest = self.ais.load(bucket, naming.plan_manifest_name(base))
        table = self.ais.buckets.get(bucket, {}).get(naming.plan_units_name(base, 0))
        chunk = self.ais.buckets.get(bucket, {}).get(naming.plan_chunk_name(base, 0))
        if manifest is None or table is None or chunk is None:
            return False
        lines = chunk.data.decode().splitlines()
        parsed = [units.Unit.parse(x) for x in table.data.decode().splitlines() if x]
        all_units = [u for u, kind in parsed if kind == units.CONVERT]  # not the units taken over
        first, last = units.assigned(len(all_units), j.workers, worker)
        src = self.ais.buckets.get(self.source, {})
        records: list[dict[str, Any]] = []
        report = Totals()
        fingerprint = 0
        for n, unit in enumerate(all_units[first:last]):
            if bad and n == 0:
                continue  # the converter bug: a unit left out of the report
            members: list[tuple[str, int]] = []
            for line in lines:
                key, label, files, *split = json.loads(line)
                if not unit.first_key <= key <= unit.last_key or (split[0] if split else "") != unit.stream:
                    continue
                if files[0][1] not in src:
                    return False
                members += [(f"{key}.cls", len(label.encode())), (f"{key}.image.jpg", int(files[0][2]))]
            members.sort()
            totals = Totals()
            for m, s in members:
                totals.add(m, s)
            report.merge(totals)
            name = naming.unit_shard_name(pool, unit.id, 0)
            self.ais.store(bucket, name, members=tuple(members))
            fingerprint = (fingerprint + unit.fingerprint) % units.FINGERPRINT_MOD
            records.append(
                {
                    "name": name,
                    "unit": unit.id,
                    "part": 0,
                    "last": True,
                    "samples": unit.count,
                    "bytes": tar_size(tuple(members)),
                    "consumed": unit.count,
                    "firstKey": unit.first_key,
                    "lastKey": unit.last_key,
                    "planFingerprint": unit.fingerprint,
                    **({"split": unit.stream} if unit.stream else {}),
                    **totals.to_dict(),
                }
            )
        body = {
            "worker": worker,
            "workers": j.workers,
            "generation": j.config["generation"],
            "written": sum(int(r["samples"]) for r in records),
            "bytes": sum(int(r["bytes"]) for r in records),
            "shards": records,
            "consumed": sum(int(r["consumed"]) for r in records),
            "planFingerprint": fingerprint,
            "skippedByReason": {},
            **report.to_dict(),
        }
        self.ais.store(bucket, naming.report_name(base, worker), json.dumps(body).encode())
        return True
