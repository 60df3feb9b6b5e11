"""Shared clusters, end to end on the AuthN-enabled AIS of the local cluster (`AIS_AUTH=1 hack/cluster.sh up`).

Tenants are real AuthN users whose roles grant read-write on their own buckets and nothing else (no cluster
rights, no dSort, no ETL); the operator holds its own AIS identity (hack/ais_auth.py setup) and uses it for
dSort and to start and remove AIS ETLs only. Every assertion about another tenant's data is made with the
AuthN admin's token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sharded_dataset_operator.clients.ais import AccessDenied, Ais
from sharded_dataset_operator.core import naming

from .conftest import OPERATOR_NS, REPO, Kube, unique, wait_until
from .test_operator import (
    RawDataset,
    assert_complete_samples,
    check_index,
    condition,
    dataset,
    read_shards,
    wait_ready,
)

sys.path.insert(0, str(REPO / "hack"))
import ais_auth  # hack/ais_auth.py: standard library only

pytestmark = pytest.mark.e2e
AUTH_IN_CLUSTER = "http://ais-auth-proxy.ais:56080"  # the Service pods use (hack/cluster.sh)
PLAIN_IN_CLUSTER = "http://ais-proxy.ais:51080"
SAMPLES = 120


@dataclass
class AuthEnv:
    endpoint: str  # the AuthN-enabled proxy, from the host
    args: argparse.Namespace  # what hack/ais_auth.py's admin calls take
    admin: Ais  # the AuthN admin's access, for checks
    admin_token: str
    operator_token: str


@pytest.fixture(scope="module")
def auth(cluster_env: dict[str, str]) -> AuthEnv:
    if not cluster_env.get("AIS_AUTH_ENDPOINT"):
        if os.environ.get("SDS_REQUIRE_AUTH") == "1":
            pytest.fail("the local cluster has no AuthN-enabled AIS (AIS_AUTH=1 hack/cluster.sh up)")
        pytest.skip("no AuthN-enabled AIS (AIS_AUTH=1 hack/cluster.sh up)")
    args = argparse.Namespace(
        authn=cluster_env["AIS_AUTHN_URL"],
        ais=cluster_env["AIS_AUTH_ENDPOINT"],
        admin_pass_file=cluster_env["AIS_AUTHN_ADMIN_PASS_FILE"],
    )
    token = ais_auth.login(args.authn, "admin", Path(args.admin_pass_file).read_text().strip())
    operator_token = (Path(args.admin_pass_file).parent / "operator-token").read_text().strip()
    return AuthEnv(args.ais, args, Ais(args.ais, token), token, operator_token)


@pytest.fixture(scope="module")
def tenancy_operator(kube: Kube, operator: Any, auth: AuthEnv) -> Iterator[None]:
    """The operator allowed to use the AuthN-enabled AIS too, and giving up a failing deletion after 3 tries."""
    dep = f"deployment/{operator['metadata']['name']}"

    def set_env(*assignments: str) -> None:
        kube.run("-n", OPERATOR_NS, "set", "env", dep, *assignments)
        kube.run("-n", OPERATOR_NS, "rollout", "status", dep, "--timeout=180s")

    set_env(f"SDS_ALLOWED_ENDPOINTS={PLAIN_IN_CLUSTER},{AUTH_IN_CLUSTER}", "SDS_CLEANUP_ATTEMPTS=3",
            "SDS_CLEANUP_RETRY_SECONDS=3")  # fmt: skip
    try:
        yield
    finally:
        set_env("SDS_ALLOWED_ENDPOINTS=", "SDS_CLEANUP_ATTEMPTS=20", "SDS_CLEANUP_RETRY_SECONDS=30")


@dataclass
class Tenant:
    name: str
    namespace: str
    raw: str
    out: str
    token: str
    ais: Ais


def tenant(
    kube: Kube, auth: AuthEnv, namespace: str, buckets: tuple[str, str] | None = None, read_only: tuple[str, ...] = ()
) -> Tenant:
    """An AuthN user with read-write on its two buckets only (and read-only on `read_only`), and its token in a
    labelled Secret."""
    name = unique("tenant")
    raw, out = buckets or (f"{name}-raw", f"{name}-out")
    token = ais_auth.tenant_token(auth.args, name, [raw, out], read_only=read_only)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ais-token", "namespace": namespace, "labels": {"shardeddataset.dev/ais-token": "true"}},
        "stringData": {"token": token},
    }
    kube.apply(secret)
    return Tenant(name, namespace, raw, out, token, Ais(auth.endpoint, token))


@pytest.fixture
def second_namespace(kube: Kube, namespace: str) -> Iterator[str]:
    name = f"{namespace[:50]}-b"
    kube.run("create", "namespace", name)
    wait_until(lambda: kube.get("serviceaccount", "default", name) is not None, 60, "default serviceaccount")
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


def tenant_dataset(name: str, t: Tenant, raw_bucket: str, out_bucket: str, **over: Any) -> dict[str, Any]:
    obj = dataset(name, t.namespace, raw_bucket, out_bucket, conversion={"workers": 2}, **over)
    obj["spec"]["ais"] = {"endpoint": AUTH_IN_CLUSTER, "tokenSecretRef": {"name": "ais-token"}}
    return obj


def snapshot(auth: AuthEnv, *buckets: str) -> dict[str, tuple[int, str]]:
    """Every object of the buckets with its size and AIS checksum (read with the admin's token)."""
    out = {}
    for b in buckets:
        for page in auth.admin.list_pages(b, props="name,size,checksum"):
            for e in page:
                out[f"{b}/{e.name}"] = (int(e.size or 0), str(e.checksum or ""))
    return out


def stalled_reason(kube: Kube, ns: str, name: str, reason: str, timeout: float = 180) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kube.get("sds", name, ns) or {}
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        stalled = conds.get("Stalled") or {}
        return obj if stalled.get("status") == "True" and stalled.get("reason") == reason else None

    obj: dict[str, Any] = wait_until(check, timeout, f"{ns}/{name} Stalled with reason {reason}", interval=0.5)
    return obj


def test_a_tenant_converts_and_shuffles_its_own_buckets_with_a_non_admin_token(
    kube: Kube, namespace: str, auth: AuthEnv, tenancy_operator: None, tmp_path: Path
) -> None:
    a = tenant(kube, auth, namespace)
    raw = RawDataset(auth.admin, auth.endpoint, SAMPLES, seed=31, sample_kib=8, bucket=a.raw, token=a.token)
    # the token really is a tenant's: no dSort, no cluster map, no other bucket
    other = unique("not-a")
    auth.admin.ensure_bucket(other)
    for denied in (lambda: a.ais.dsort_find(".*"), lambda: a.ais.bucket_exists(other)):
        with pytest.raises(AccessDenied):
            denied()
    kube.apply(tenant_dataset("pets", a, a.raw, a.out, deletionPolicy="Delete"))
    obj = wait_ready(kube, namespace, "pets", timeout=300)
    assert obj["status"]["samples"]["written"] == len(raw.manifest["complete"])
    shards = check_index(auth.admin, obj, a.out, "shuffled-index.json")
    assert_complete_samples(raw, read_shards(auth.admin, a.out, [s["url"] for s in shards], tmp_path))
    # the operator's own identity ran the dSort, and it is nowhere the tenant can read it
    assert obj["status"]["shuffle"]["dsortJobId"]
    visible = json.dumps([obj, kube.list("jobs", namespace), kube.events(namespace, "pets")])
    assert auth.operator_token not in visible and a.token not in visible
    for job in kube.list("jobs", namespace):
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in env if e["name"] == "AIS_AUTHN_TOKEN"]
        assert refs == ["ais-token"], env

    # a forged status.artifacts record naming the tenant's raw data (which its token could delete) is refused
    tag = naming.uid_tag(obj["metadata"]["uid"])
    before = snapshot(auth, a.raw)
    forged = {
        "version": "g9",
        "generation": 9,
        "locations": [{"bucket": a.raw, "provider": "ais", "prefix": "images/"}],
    }
    artifacts = [*obj["status"]["artifacts"], forged]
    kube.run("patch", "sds", "pets", "-n", namespace, "--subresource=status", "--type=merge",
             "-p", json.dumps({"status": {"artifacts": artifacts}}))  # fmt: skip
    wait_until(lambda: "ArtifactsRefused" in {e["reason"] for e in kube.events(namespace, "pets")}, 120,
               "the forged record refused")  # fmt: skip
    wait_until(lambda: all(r.get("version") != "g9" for r in (kube.get("sds", "pets", namespace) or {})
                           .get("status", {}).get("artifacts", [])), 60, "the forged record gone")  # fmt: skip
    assert snapshot(auth, a.raw) == before

    # the token is revoked: deleting the resource (deletionPolicy Delete) gives up after 3 tries with an
    # Event naming what is left, and the namespace is not held up by the finalizer
    ais_auth.revoke(auth.args.authn, a.token)
    wait_until(lambda: _denied(a.ais, a.out), 60, "the revocation to reach AIS")
    kube.run("delete", "sds", "pets", "-n", namespace, "--wait=false")
    wait_until(lambda: kube.get("sds", "pets", namespace) is None, 180, "the resource gone")
    abandoned = [e["message"] for e in kube.events(namespace, "pets") if e["reason"] == "CleanupAbandoned"]
    assert abandoned and "after 3 attempts" in abandoned[0] and f"{a.out}/shuffled-{tag}" in abandoned[0], abandoned
    assert [e for e in auth.admin.list_objects(a.out) if tag in e.name]  # left in AIS, as the Event says


def test_a_tenant_converts_through_an_ais_etl_that_only_the_operators_identity_may_start(
    kube: Kube, namespace: str, auth: AuthEnv, tenancy_operator: None, tmp_path: Path
) -> None:
    """AIS lets only an admin start an ETL: the operator does it with its own identity, and the tenant's
    converters read through it with the tenant's token (the proxy checks GET on the tenant's bucket, then
    redirects to the target, which runs the ETL on the object)."""
    from .test_etl import local_etl

    a = tenant(kube, auth, namespace)
    raw = RawDataset(auth.admin, auth.endpoint, 40, seed=37, bucket=a.raw, token=a.token)  # images over 256 px
    example = yaml.safe_load((REPO / "examples/08-ais-etl.yaml").read_text())
    etl = example["spec"]["transform"]["aisEtl"]
    own = {"name": unique("tenant-etl"), "init_timeout": "30s", "spec": "e30="}  # any message: refused first
    with pytest.raises(AccessDenied):
        a.ais.etl_init(own, 30)
    kube.apply(tenant_dataset("etl", a, a.raw, a.out, transform={"aisEtl": etl}))
    obj = wait_ready(kube, namespace, "etl", timeout=300)
    assert obj["status"]["samples"]["written"] == len(raw.manifest["complete"])
    shards = check_index(auth.admin, obj, a.out, "shuffled-index.json")
    samples = read_shards(auth.admin, a.out, [s["url"] for s in shards], tmp_path)
    assert sorted(s["__key__"] for s in samples) == sorted(raw.manifest["complete"])
    server = local_etl(etl["env"])
    for s in samples:
        original = raw.expected_members(s["__key__"])
        assert s["image.jpg"] == server.transform(original["image.jpg"], "", "") != original["image.jpg"]
        assert s["trimap.png"] == original["trimap.png"]
    # the conversion is over: the operator removed the ETL (it runs on the cluster every tenant shares)
    assert not auth.admin.etl_list(naming.etl_prefix(obj["metadata"]["uid"]))


def _denied(ais: Ais, bucket: str) -> bool:
    try:
        ais.bucket_exists(bucket)
    except AccessDenied:
        return True
    return False


def test_a_tenant_naming_another_tenants_buckets_is_denied_and_nothing_of_theirs_changes(
    kube: Kube, namespace: str, second_namespace: str, auth: AuthEnv, tenancy_operator: None
) -> None:
    b = tenant(kube, auth, second_namespace)
    published = unique("b-published")  # B publishes here; A may read it, not write it
    a = tenant(kube, auth, namespace, read_only=(published,))
    RawDataset(auth.admin, auth.endpoint, SAMPLES, seed=32, sample_kib=8, bucket=a.raw, token=a.token)
    RawDataset(auth.admin, auth.endpoint, 40, seed=33, sample_kib=8, bucket=b.raw, token=b.token)
    b.ais.put(b.out, "results/keep.txt", b"team b's")
    auth.admin.put(published, "index.json", b"{}")
    before = snapshot(auth, b.raw, b.out, published)

    # A's source, or A's shuffle output, is B's bucket: refused at the first look, before any pod runs
    kube.apply(tenant_dataset("steal", a, b.raw, a.out))
    over = {"shuffle": {"algorithm": "shuffle", "seed": "1", "outputBucket": b.out, "outputShardSize": "8MiB"}}
    kube.apply(tenant_dataset("spill", a, a.raw, a.out, **over))
    for name, bucket in (("steal", b.raw), ("spill", b.out)):
        obj = stalled_reason(kube, namespace, name, "AccessDenied")
        assert f"may not use ais://{bucket} " in obj["status"]["message"], obj["status"]["message"]
    assert not kube.list("jobs", namespace)

    # A's shuffle output is a bucket A may only read: the operator's identity could write there, so the
    # dataset's own token must prove it may, before any dSort; it may not
    over = {"shuffle": {"algorithm": "shuffle", "seed": "1", "outputBucket": published, "outputShardSize": "8MiB"}}
    kube.run("delete", "sds", "steal", "spill", "-n", namespace)
    kube.apply(tenant_dataset("sneak", a, a.raw, a.out, **over))
    obj = stalled_reason(kube, namespace, "sneak", "AccessDenied", timeout=300)
    msg = obj["status"]["message"]
    assert f"may not write ais://{published}/" in msg and "no dSort was started" in msg, msg
    assert obj["status"]["samples"]["written"] > 0  # converted with A's token, into A's bucket
    description = naming.dsort_description(namespace, "sneak", obj["metadata"]["uid"], "g1")
    assert auth.admin.dsort_find(naming.dsort_regex(description)) == []
    assert snapshot(auth, b.raw, b.out, published) == before


def test_same_named_datasets_in_two_namespaces_sharing_an_output_bucket_the_second_is_refused(
    kube: Kube, namespace: str, second_namespace: str, auth: AuthEnv, tenancy_operator: None
) -> None:
    shared = (unique("shared-raw"), unique("shared-out"))
    a = tenant(kube, auth, namespace, shared)
    b = tenant(kube, auth, second_namespace, shared)
    RawDataset(auth.admin, auth.endpoint, SAMPLES, seed=34, sample_kib=8, bucket=a.raw, token=a.token)
    kube.apply(tenant_dataset("pets", a, a.raw, a.out))
    first = wait_ready(kube, namespace, "pets", timeout=300)
    index = auth.admin.get(a.out, "shuffled-index.json")

    kube.apply(tenant_dataset("pets", b, b.raw, b.out))
    second = stalled_reason(kube, second_namespace, "pets", "OutputConflict")
    assert f"ShardedDataset {namespace}/pets (uid {first['metadata']['uid']})" in second["status"]["message"]
    assert "OutputConflict" in {e["reason"] for e in kube.events(second_namespace, "pets")}
    # the first is untouched and still Ready; nothing of the second was written
    assert auth.admin.get(a.out, "shuffled-index.json") == index
    again = kube.get("sds", "pets", namespace) or {}
    assert again["status"]["phase"] == "Ready" and again["status"]["versions"] == first["status"]["versions"]
    tag = naming.uid_tag(second["metadata"]["uid"])
    assert not [e.name for e in auth.admin.list_objects(a.out) if tag in e.name]
    assert not kube.list("jobs", second_namespace)


def operator_memory(kube: Kube) -> tuple[int, int, str]:
    """(peak RSS in bytes of the operator process, its container's restart count, its last termination reason)."""
    pod = kube.list("pods", OPERATOR_NS, "app.kubernetes.io/component=operator")[0]
    name = pod["metadata"]["name"]
    status = kube.run("-n", OPERATOR_NS, "exec", name, "--", "cat", "/proc/1/status")
    peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    cs = pod["status"]["containerStatuses"][0]
    return peak, int(cs["restartCount"]), str(((cs.get("lastState") or {}).get("terminated") or {}).get("reason"))


@pytest.mark.parametrize("reports", ["one oversized", "many large"])
def test_oversized_reports_fail_their_dataset_clearly_while_another_tenants_dataset_reaches_ready(
    kube: Kube,
    namespace: str,
    second_namespace: str,
    auth: AuthEnv,
    tenancy_operator: None,
    tmp_path: Path,
    reports: str,
) -> None:
    """One report larger than the operator's memory limit, or many whose sum is over the operator's bound of one
    namespace's objects (each under the per-object bound): never read, the dataset fails clearly."""
    a = tenant(kube, auth, namespace)
    b = tenant(kube, auth, second_namespace)
    raw_b = RawDataset(auth.admin, auth.endpoint, SAMPLES, seed=35, sample_kib=8, bucket=b.raw, token=b.token)
    _, restarts, _ = operator_memory(kube)
    limit = 512 * 2**20  # the chart's operator memory limit
    # A's dataset waits for its source (the bucket A may use, not created yet); meanwhile A writes a worker report
    # larger than the operator's whole memory limit where the operator reads its reports (A's own bucket)
    destroy_bucket(auth, a.raw)
    kube.apply(tenant_dataset("big", a, a.raw, a.out))
    obj = stalled_reason(kube, namespace, "big", "SourceNotFound")
    base = naming.generation_base("samples-", obj["metadata"]["uid"], "g1")
    report = naming.report_name(base, 99)
    if reports == "one oversized":
        body = b'{"worker": 99, "pad": "' + b" " * (600 * 2**20) + b'"}'
        names = [report]
    else:  # 12 x 12 MiB: each under the 64 MiB per-object bound, 144 MiB in all over the 128 MiB namespace share
        body = b'{"worker": 99, "pad": "' + b" " * (12 * 2**20) + b'"}'
        names = [naming.report_name(base, w) for w in range(90, 102)]
    for name in names:
        a.ais.put(a.out, name, body)
    try:
        RawDataset(auth.admin, auth.endpoint, SAMPLES, seed=36, sample_kib=8, bucket=a.raw, token=auth.admin_token)
        kube.apply(tenant_dataset("fine", b, b.raw, b.out))
        failed = wait_until(
            lambda: (o := kube.get("sds", "big", namespace)) and o["status"].get("phase") == "Failed" and o,
            180,
            "the dataset with the oversized report to fail",
        )
        msg = failed["status"]["message"]
        assert condition(failed, "Stalled")["reason"] == "LimitExceeded", failed["status"]["conditions"]
        if reports == "one oversized":
            assert report in msg and f"is {len(body)} bytes" in msg and "it was not read" in msg, msg
        else:
            assert f"{base}report-" in msg and f"{len(body) * len(names)} bytes in all" in msg, msg
            assert "one namespace's objects" in msg and "they were not read" in msg, msg
        ready = wait_ready(kube, second_namespace, "fine", timeout=300)
        shards = check_index(auth.admin, ready, b.out, "shuffled-index.json")
        assert_complete_samples(raw_b, read_shards(auth.admin, b.out, [s["url"] for s in shards], tmp_path))
        peak, restarted, reason = operator_memory(kube)
        assert restarted == restarts and reason != "OOMKilled" and peak < limit, (peak, restarted, reason)
    finally:
        a.ais.delete_objects(a.out, names)


def destroy_bucket(auth: AuthEnv, bucket: str) -> None:
    import requests

    r = requests.delete(f"{auth.endpoint}/v1/buckets/{bucket}", json={"action": "destroy-bck"},
                        headers={"Authorization": f"Bearer {auth.admin_token}"}, timeout=30)  # fmt: skip
    r.raise_for_status()


def test_a_tenants_s3_source_needs_rights_on_the_remote_bucket(
    kube: Kube, namespace: str, second_namespace: str, auth: AuthEnv, tenancy_operator: None, tmp_path: Path
) -> None:
    """An S3 bucket through the AuthN-enabled AIS: a tenant whose role grants read on `aws://<bucket>` converts
    it, byte-identical; a tenant without that right is refused AccessDenied naming the bucket, and writes
    nothing."""
    from .test_s3 import S3Dataset

    raw = S3Dataset(40, seed=37)
    allowed = tenant(kube, auth, namespace, read_only=(f"aws://{raw.bucket}",))
    other = tenant(kube, auth, second_namespace)
    s3_source = {"ais": {"bucket": raw.bucket, "provider": "aws"}}
    kube.apply(tenant_dataset("s3-denied", other, other.raw, other.out, source=s3_source))
    obj = stalled_reason(kube, second_namespace, "s3-denied", "AccessDenied", timeout=300)
    assert raw.bucket in obj["status"]["message"], obj["status"]["message"]
    assert not [e for e in auth.admin.list_objects(other.out)]  # nothing written

    kube.apply(tenant_dataset("s3-allowed", allowed, allowed.raw, allowed.out, source=s3_source))
    ready = wait_ready(kube, namespace, "s3-allowed", timeout=300)
    shards = check_index(auth.admin, ready, allowed.out, "shuffled-index.json")
    assert_complete_samples(raw, read_shards(auth.admin, allowed.out, [s["url"] for s in shards], tmp_path))  # type: ignore[arg-type]
