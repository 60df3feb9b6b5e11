"""One seeded run: a scenario, then passes of the real `passes.reconcile_once` with faults between and
inside them, the invariants checked after every pass, then fault-free passes until the dataset settles."""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.core import builders, failures, guard, naming, records, times, verify, versions
from sharded_dataset_operator.core.spec import parse_spec
from sharded_dataset_operator.runner import objcache, passes
from sharded_dataset_operator.runner.settings import Settings

from .invariants import Checker, check_leaks
from .model import ENDPOINT, EPOCH, Clock, Crash, FakeAis, FakeKube, Faults, Pods

NS, NAME, SOURCE = "ml", "pets", "raw"
TRACE = bool(os.environ.get("SDS_SIM_TRACE"))
SETTINGS = Settings(ais_endpoint=ENDPOINT)
SETTLE_PASSES = 60
MAX_STEP = 60.0  # seconds the clock moves at most per pass (a pass without requeue: the idle interval)
LEGIT_FAILURES = ("NoSamples", "SplitEmpty")  # the source really is so; a retry cannot help


@dataclass(slots=True)
class Scenario:
    seed: int
    samples: int
    shuffle: bool
    splits: bool
    retain: str
    workers: int
    max_samples: int
    max_attempts: int
    fault_passes: int
    rate: float
    crash_rate: float
    append: bool = False  # spec.shuffle.refreshMode Append


@dataclass(slots=True)
class Result:
    seed: int
    violations: list[str] = field(default_factory=list)
    passes: int = 0


class _NoMetrics:
    def __getattr__(self, name: str) -> _NoMetrics:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None


def scenario(seed: int, rng: random.Random) -> Scenario:
    return Scenario(
        seed=seed,
        samples=rng.choice([0, rng.randint(1, 30), rng.randint(1, 30), rng.randint(5, 30)]),
        shuffle=rng.random() < 0.6,
        splits=rng.random() < 0.35,
        retain=rng.choice(["0s", "30s", "60s", "120s"]),
        workers=rng.randint(1, 3),
        max_samples=rng.randint(3, 6),
        max_attempts=rng.randint(1, 3),
        fault_passes=rng.randint(0, 40),
        rate=rng.uniform(0.01, 0.12),
        crash_rate=rng.uniform(0.0, 0.05),
        append=rng.random() < 0.5,
    )


def raw_spec(sc: Scenario) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"ais": {"bucket": SOURCE}},
        "samples": {"fields": [{"pattern": "images/*.jpg", "name": "image.jpg"}], "labels": {"path": "list.txt"}},
        "output": {
            "bucket": "out",
            "prefix": "samples-",
            "maxSamplesPerShard": sc.max_samples,
            "retainPrevious": sc.retain,
        },
        "conversion": {"workers": sc.workers},
    }
    if sc.shuffle:
        spec["shuffle"] = {
            "seed": "1",
            "outputPrefix": "shuffled-",
            "outputShardSize": "6KiB",
            "maxAttempts": sc.max_attempts,
            **({"refreshMode": "Append"} if sc.append else {}),
        }
    if sc.splits:
        spec["splits"] = {
            "sets": [{"name": "trainval", "listFile": "trainval.txt"}, {"name": "test", "listFile": "test.txt"}]
        }
    return spec


def fill_source(ais: FakeAis, rng: random.Random, n: int) -> None:
    keys = [f"k{i:03d}" for i in range(n)]
    labelled = [k for k in keys if rng.random() < 0.9]
    for k in keys:
        ais.store(SOURCE, f"images/{k}.jpg", b"x" * rng.randint(100, 1500))
    ais.store(SOURCE, "list.txt", "\n".join(f"{k} {rng.randint(1, 3)}" for k in labelled).encode())
    ais.store(SOURCE, "trainval.txt", " ".join(k for i, k in enumerate(keys) if i % 3).encode())
    ais.store(SOURCE, "test.txt", " ".join(k for i, k in enumerate(keys) if not i % 3).encode())


KUBE_CALLS = ("get_dataset", "patch_status", "annotate_dataset", "get_job", "stale_jobs", "create_job", "delete_jobs",
              "converter_pods", "pvc_problem", "read_secret_key", "stop_converters")  # fmt: skip


@contextmanager
def patched(ais: FakeAis, fake: FakeKube, clock: Clock, from_bytes: bool) -> Iterator[None]:
    """The runner with the fake AIS and Kubernetes (the `clients.kube` functions), the simulated clock and a
    fresh cache; `from_bytes`: the verifier counts the shards' bytes (the members are small), else it lists them
    (no member is small enough)."""
    saved: list[tuple[Any, str, Any]] = [(kube, name, getattr(kube, name)) for name in KUBE_CALLS]
    saved += [(passes, n, getattr(passes, n)) for n in ("ais_for", "dsort_for", "METRICS")]
    saved += [(times, "now_iso", times.now_iso), (objcache, "CACHE", objcache.CACHE)]
    saved += [(verify, "READ_MEMBER_BYTES", verify.READ_MEMBER_BYTES)]
    verify.READ_MEMBER_BYTES = verify.READ_MEMBER_BYTES if from_bytes else 0
    for name in KUBE_CALLS:
        setattr(kube, name, getattr(fake, name))
    passes.ais_for = lambda spec, namespace: ais  # type: ignore[assignment,return-value]
    passes.dsort_for = lambda spec, tenant, settings: ais  # type: ignore[assignment,return-value]
    times.now_iso = clock.now_iso
    objcache.CACHE = objcache.ObjectCache()
    passes.METRICS = _NoMetrics()  # type: ignore[assignment,attr-defined]
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def run(seed: int) -> Result:
    logging.getLogger("sds").setLevel(logging.CRITICAL)
    rng = random.Random(seed)
    sc = scenario(seed, rng)
    clock, faults = Clock(), Faults(rng, sc.rate, sc.crash_rate)
    ais = FakeAis(clock, faults)
    ais.buckets["out"] = {}
    fill_source(ais, rng, sc.samples)
    uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    obj: dict[str, Any] = {
        "metadata": {"name": NAME, "namespace": NS, "uid": uid, "generation": 1, "annotations": {}},
        "spec": raw_spec(sc),
    }
    cluster = FakeKube(clock, faults, obj)
    pods = Pods(ais, cluster, SOURCE)
    spec = parse_spec(obj["spec"], name=NAME, default_endpoint=ENDPOINT)
    prefix = records.index_prefix(spec)
    checker = Checker(
        ais,
        cluster,
        pods,
        "out",
        naming.index_name(prefix),
        {s: naming.index_name(builders.split_prefix(prefix, s)) for s in spec.splits.names} if spec.splits else {},
        spec.output.retain_seconds,
        uid,
        sc.max_attempts,
    )
    result = Result(seed)
    with patched(ais, cluster, clock, from_bytes=seed % 2 == 0):
        drive(sc, rng, ais, cluster, pods, checker, result)
    result.violations = [f"seed {seed}: {v}" for v in checker.violations]
    return result


def user_events(
    sc: Scenario, rng: random.Random, ais: FakeAis, obj: dict[str, Any], k: int, garbage: list[str]
) -> None:
    """Spec changes, refresh and retry requests, source accidents, a foreign index object, AIS weather."""
    meta, roll = obj["metadata"], rng.random()
    if roll < 0.04:
        meta["generation"] += 1
        obj["spec"]["output"]["maxSamplesPerShard"] = rng.randint(3, 6)
    elif roll < 0.08:
        meta["annotations"][versions.REFRESH_ANNOTATION] = f"r{k}"
    elif roll < 0.12:
        meta["annotations"][failures.RETRY_ANNOTATION] = f"t{k}"
    elif roll < 0.14:
        images = ais.names(SOURCE, "images/")
        for name in images if rng.random() < 0.3 else rng.sample(images, int(len(images) * 0.6)):
            ais.remove(SOURCE, name)
        meta["annotations"][versions.REFRESH_ANNOTATION] = f"a{k}"
    elif roll < 0.145:
        prefix = "shuffled-" if sc.shuffle else "samples-"
        split = rng.choice(["", "trainval-", "test-"]) if sc.splits else ""
        name = naming.index_name(prefix + split)
        if name not in ais.buckets.get("out", {}):  # something else wrote there before the dataset did
            ais.store("out", name, b"<html>503</html>")
            garbage.append(name)
            if TRACE:
                print(f"event: garbage at {name}")
    elif roll < 0.17 or (sc.append and roll > 0.88):
        grow_source(ais, rng, meta, k)
    if rng.random() < 0.03:  # a person approves a held version, or (by mistake) another one
        held = str(((obj.get("status") or {}).get("publishGuard") or {}).get("version") or "")
        meta["annotations"][guard.APPROVE_ANNOTATION] = held if held and rng.random() < 0.5 else f"g{rng.randint(1, 9)}"
    if rng.random() < 0.05:
        ais.faults.denying = not ais.faults.denying
    if rng.random() < 0.05:
        ais.faults.refusing = not ais.faults.refusing
    if rng.random() < 0.05:
        ais.faults.rebalancing = not ais.faults.rebalancing
    if rng.random() < 0.03:
        ais.faults.blocking, ais.faults.blocked_since = not ais.faults.blocking, ais.clock.t


def grow_source(ais: FakeAis, rng: random.Random, meta: dict[str, Any], k: int) -> None:
    """The source grows (one to three new labelled images, in the trainval list), then a refresh."""
    new = [f"n{k:03d}{i}" for i in range(rng.randint(1, 3))]
    src = ais.buckets[SOURCE]
    for key in new:
        ais.store(SOURCE, f"images/{key}.jpg", b"x" * rng.randint(100, 1500))
    for listing, lines in (("list.txt", [f"{key} {rng.randint(1, 3)}" for key in new]), ("trainval.txt", new)):
        before = src[listing].data.decode().strip() if listing in src else ""
        ais.store(SOURCE, listing, "\n".join([*([before] if before else []), *lines]).encode())
    meta["annotations"][versions.REFRESH_ANNOTATION] = f"g{k}"


def status_reason(obj: dict[str, Any]) -> str:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((str(c.get("reason")) for c in conds if c.get("type") == "Stalled"), "")


def drive(
    sc: Scenario, rng: random.Random, ais: FakeAis, kube: FakeKube, pods: Pods, checker: Checker, result: Result
) -> None:
    obj, faults = kube.obj, ais.faults
    deadline = sc.fault_passes + SETTLE_PASSES
    retried = ""
    grown = False
    garbage: list[str] = []
    k = 0
    while k < deadline:
        faults.on = k < sc.fault_passes
        if faults.on:
            user_events(sc, rng, ais, obj, k, garbage)
        else:
            faults.refusing = faults.rebalancing = faults.denying = faults.blocking = False
            for name in garbage:  # a person removes what the OutputConflict named
                if ais.load("out", name) is None and name in ais.buckets.get("out", {}):
                    ais.remove("out", name)
            garbage.clear()
            held = (obj.get("status") or {}).get("publishGuard") or {}
            if status_reason(obj) == "PublishHeld" and held.get("held"):  # a person looks and approves
                obj["metadata"]["annotations"][guard.APPROVE_ANNOTATION] = str(held["version"])
        checker.pass_time = ais.clock.t
        try:
            requeue = passes.reconcile_once(NS, NAME, SETTINGS).requeue
        except Crash:
            objcache.CACHE = objcache.ObjectCache()  # the operator restarted
            requeue = 1.0
            if TRACE:
                print(f"pass {k}: the operator restarted")
        except Exception as e:
            checker.flag("raised", f"pass-raised: {type(e).__name__}: {e} (pass {k})")
            break
        if TRACE:
            st = obj.get("status") or {}
            print(
                f"pass {k} t+{ais.clock.t - EPOCH:.0f} faults={faults.on} gen={obj['metadata']['generation']} "
                f"{obj['metadata']['annotations']} -> {st.get('phase')}/{status_reason(obj)}: "
                f"{str(st.get('message'))[:150]} requeue={requeue}"
            )
        ais.clock.t += min(MAX_STEP, max(1.0, requeue if requeue is not None else MAX_STEP))
        pods.step(faults.on)
        checker.after_pass()
        k += 1
        if faults.on or not passes.is_settled(obj):
            continue
        phase, reason = (obj.get("status") or {}).get("phase"), status_reason(obj)
        if phase == "Ready" and sc.append and not grown:
            # a second act: the source grows after the version is published, under faults again for a while
            grown, retried = True, ""  # (the act's own failures get their own retry)
            grow_source(ais, rng, obj["metadata"], k)
            sc.fault_passes = k + rng.randint(0, 20)
            deadline = sc.fault_passes + SETTLE_PASSES
            continue
        if phase == "Ready":
            check_leaks(checker)
            break
        if reason in LEGIT_FAILURES:
            break
        if retried:
            checker.flag(
                "retry",
                f"P5 retry-failed: a retry after {retried} ended Failed again ({reason}: "
                f"{(obj.get('status') or {}).get('message')})",
            )
            break
        retried = reason  # the cause (a fault) is gone: a retry must succeed
        obj["metadata"]["annotations"][failures.RETRY_ANNOTATION] = f"final-{k}"
        deadline = k + SETTLE_PASSES
    else:
        st = obj.get("status") or {}
        checker.flag(
            "converge",
            f"P5 no-convergence: not settled {SETTLE_PASSES} passes after the faults stopped"
            f"{' and a retry after ' + retried if retried else ''} (phase {st.get('phase')}, "
            f"{status_reason(obj)}: {str(st.get('message'))[:160]})",
        )
    result.passes = k
