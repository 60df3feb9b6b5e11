"""The local cluster itself: a real control plane, a real node running the project image, real AIS with dSort."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from typing import Any

import pytest

from sharded_dataset_operator.clients.ais import Ais

from .conftest import REPO, Kube, unique, wait_until

IMAGE = "localhost/sharded-dataset-operator:dev"
pytestmark = pytest.mark.e2e


def pod(name: str, namespace: str, command: list[str], **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": IMAGE, "command": command}],
            **spec,
        },
    }


def wait_pod_done(kube: Kube, namespace: str, name: str, timeout: float = 120) -> str:
    def phase() -> str | None:
        p = kube.get("pod", name, namespace)
        ph = (p or {}).get("status", {}).get("phase")
        return ph if ph in ("Succeeded", "Failed") else None

    return str(wait_until(phase, timeout, f"pod {name} to finish"))


def test_node_ready_and_apiserver_readyz(kube: Kube) -> None:
    nodes = json.loads(kube.run("get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 1
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert not nodes[0]["spec"].get("taints")
    assert nodes[0]["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    out = kube.run("get", "--raw", "/readyz?verbose")
    assert "readyz check passed" in out
    status = subprocess.run([str(REPO / "hack/cluster.sh"), "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stdout


def test_pod_from_project_image_runs_and_logs(kube: Kube, namespace: str) -> None:
    kube.apply(pod("hello", namespace, ["python", "-c", "import sys; print('hello from', sys.version_info[:2])"]))
    assert wait_pod_done(kube, namespace, "hello") == "Succeeded"
    p = kube.get("pod", "hello", namespace)
    assert p is not None
    assert p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert "hello from (3, 11)" in kube.run("logs", "-n", namespace, "hello")


def test_indexed_job_each_pod_sees_its_index(kube: Kube, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "indexed", "namespace": namespace},
        "spec": {
            "completionMode": "Indexed",
            "completions": 3,
            "parallelism": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "command": ["sh", "-c", 'echo "index=$JOB_COMPLETION_INDEX"'],
                        }
                    ],
                }
            },
        },
    }
    kube.apply(job)

    def complete() -> bool:
        j = kube.get("job", "indexed", namespace) or {}
        return any(c["type"] == "Complete" and c["status"] == "True" for c in j.get("status", {}).get("conditions", []))

    wait_until(complete, 180, "indexed job to complete")
    pods = kube.list("pods", namespace, "batch.kubernetes.io/job-name=indexed")
    seen = {}
    for p in pods:
        if p["status"]["phase"] != "Succeeded":
            continue
        idx = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        log = kube.run("logs", "-n", namespace, p["metadata"]["name"]).strip()
        assert log == f"index={idx}"
        seen[idx] = log
    assert sorted(seen) == ["0", "1", "2"]
    j = kube.get("job", "indexed", namespace)
    assert j is not None and j["status"]["completedIndexes"] == "0-2"


def test_deleting_owner_garbage_collects_job_and_pods(kube: Kube, namespace: str) -> None:
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": namespace}})
    owner = kube.get("configmap", "owner", namespace)
    assert owner is not None
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "300"]}],
                }
            }
        },
    }
    kube.apply(job)
    wait_until(lambda: kube.list("pods", namespace, "batch.kubernetes.io/job-name=owned"), 60, "owned pod")
    kube.run("delete", "configmap", "owner", "-n", namespace)
    wait_until(lambda: kube.get("job", "owned", namespace) is None, 90, "job to be garbage-collected")
    wait_until(
        lambda: not kube.list("pods", namespace, "batch.kubernetes.io/job-name=owned"),
        120,
        "pods to be garbage-collected",
    )


AIS_FROM_POD = r"""
import json
from aistore.sdk import Client
c = Client("http://ais-proxy.ais:51080")
b = c.bucket("BUCKET")
b.create(exist_ok=True)
b.object("dir/hello.txt").get_writer().put_content(b"hello from a pod")
data = b.object("dir/hello.txt").get_reader().read_all().decode()
names = [e.name for e in b.list_objects_iter(prefix="dir/")]
print(json.dumps({"data": data, "names": names}))
"""


def test_ais_runs_as_pods_with_the_etl_rights_and_no_more(kube: Kube, ais: Ais) -> None:
    """AIS as its users run it on Kubernetes: proxy and target pods Running and Ready in namespace ais, the
    targets (every one in the cluster map) with the rights AIS ETL uses in their namespace only."""

    def ready_pods() -> list[dict[str, Any]] | None:
        pods = kube.list("pods", "ais", "ais.sdo.dev/cluster=ais")
        ready = [
            p
            for p in pods
            if p["status"].get("phase") == "Running" and all(c["ready"] for c in p["status"]["containerStatuses"])
        ]
        return ready if len(ready) == len(pods) == 3 else None

    pods = wait_until(ready_pods, 120, "the AIS pods Running and Ready")  # a previous fault may be healing
    roles = sorted(p["metadata"]["labels"]["ais.sdo.dev/role"] for p in pods)
    assert roles == ["proxy", "target", "target"], roles
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"localhost/sdo-aisnode:1.5.0"}
    members = ais.membership()
    assert members is not None and members.targets == members.answering == 2
    sa = "system:serviceaccount:ais:ais-target"

    def can(*args: str) -> bool:
        return kube.try_run("auth", "can-i", *args, "--as", sa).stdout.strip() == "yes"

    assert can("create", "pods", "-n", "ais") and can("delete", "services", "-n", "ais")
    assert can("get", "pods", "--subresource", "log", "-n", "ais") and can("watch", "pods", "-n", "ais")
    assert not can("create", "pods", "-n", "default") and not can("get", "secrets", "-n", "ais")
    assert not can("update", "pods", "-n", "ais") and not can("create", "pods", "--subresource", "exec", "-n", "ais")
    assert not can("list", "nodes")
    proxy_sa = "system:serviceaccount:ais:ais-proxy"
    assert kube.try_run("auth", "can-i", "get", "pods", "-n", "ais", "--as", proxy_sa).stdout.strip() == "no"


def test_ais_through_its_service_from_a_pod(kube: Kube, namespace: str, ais: Ais) -> None:
    bucket = unique("e2e-pod")
    kube.apply(pod("ais-client", namespace, ["python", "-c", AIS_FROM_POD.replace("BUCKET", bucket)]))
    phase = wait_pod_done(kube, namespace, "ais-client")
    log = kube.run("logs", "-n", namespace, "ais-client")
    assert phase == "Succeeded", log
    result = json.loads(log.strip().splitlines()[-1])
    assert result == {"data": "hello from a pod", "names": ["dir/hello.txt"]}
    # and the host sees the same object
    assert ais.get(bucket, "dir/hello.txt") == b"hello from a pod"
    ais.client.bucket(bucket).delete(missing_ok=True)


def _tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for key in sorted(samples):
            for ext, data in sorted(samples[key].items()):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _untar(data: bytes) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            f = tf.extractfile(m)
            assert f is not None
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = f.read()
    return out


def test_dsort_shuffles_three_shards_keeping_every_record(ais: Ais) -> None:
    bucket = unique("e2e-dsort")
    ais.ensure_bucket(bucket)
    expected: dict[str, dict[str, bytes]] = {}
    for s in range(3):
        shard = {f"s{s}k{i:03d}": {"txt": f"{s}-{i}".encode() * 50, "cls": str(i % 7).encode()} for i in range(40)}
        expected.update(shard)
        ais.put(bucket, f"in-{s}.tar", _tar(shard))
    spec = {
        "input_bck": {"name": bucket, "provider": "ais"},
        "input_format": {"template": "in-{0..2}"},
        "input_extension": ".tar",
        "output_format": "out-%04d",
        "output_extension": ".tar",
        "output_shard_size": "20KiB",
        "algorithm": {"kind": "shuffle", "seed": "42"},
        "description": f"e2e {bucket}",
        "dsorter_type": "dsort_general",
    }
    job_id = ais.dsort_start(spec)
    assert job_id.startswith("srt-")

    def finished() -> bool:
        job = ais.dsort_job(job_id)
        assert job is not None and not job.aborted, job
        return job.finished

    wait_until(finished, 120, f"dSort job {job_id}")
    outputs = sorted(e.name for e in ais.list_objects(bucket, prefix="out-"))
    assert len(outputs) > 1
    got: dict[str, dict[str, bytes]] = {}
    order = []
    for name in outputs:
        part = _untar(ais.get(bucket, name) or b"")
        assert not set(part) & set(got), "a record appears in two output shards"
        got.update(part)
        order.extend(part)
    assert got == expected  # same keys, same members, same bytes
    assert order != sorted(order), "shuffle kept the input order"
    ais.client.bucket(bucket).delete(missing_ok=True)
    time.sleep(0)
