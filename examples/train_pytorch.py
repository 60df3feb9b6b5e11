"""Train on a Ready ShardedDataset with PyTorch: one short epoch, two ways of reading the shards.

    pip install 'sharded-dataset-operator[train]'      # torch and wids, beside webdataset, pillow, kubernetes
    torchrun --standalone --nproc-per-node 2 examples/train_pytorch.py --dataset ml/oxford-pets-256 \\
        --endpoint http://<ais-proxy>:51080 --loader wids --workers 2

--loader wids        random access through the dataset's wids index (shards are downloaded to a local cache);
                     the ranks split the samples into disjoint contiguous ranges (no padding), and the
                     DataLoader's workers share each rank's range.
--loader webdataset  streaming: every (rank, worker) pair reads its own subset of the shards over HTTP.

Either way each sample is read exactly once per epoch across all ranks and workers; rank 0 prints (and with
--report writes) how many samples were seen. --check also gathers every key seen onto rank 0 to prove that no
sample was missed or seen twice: memory that grows with the dataset (~100 MB of keys for ImageNet-1k), so
it is for checking a dataset, not for long training runs. The dataset is found by
namespace/name (its status.indexObject, read through your kubeconfig) or given as --index-url. An AIS AuthN
token is taken from $AIS_AUTHN_TOKEN. Runs on CPU (gloo); on GPUs use backend nccl and move the batches.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

SIDE = 32  # images are scaled to SIDE x SIDE for batching; a real model would use its own input size
CLASSES = 37  # Oxford-IIIT Pet breeds (cls 1..37)


# ----------------------------------------------------------------------------------------- finding the data


def index_url_of(namespace: str, name: str, endpoint: str | None, pin: bool = False, split: str | None = None) -> str:
    """The HTTP URL of a Ready dataset's wids index, from its status (`ais://bucket/object`).

    By default the stable index, which names whatever version is published when it is read. With `pin`, the
    published version's own index (`status.versions.published.index`), which never changes: a job that is
    restarted or resumed later reads the same version, as long as that version is kept (the dataset's
    `spec.output.retainPrevious` after a newer one is published). With `split` (a dataset with `spec.splits`),
    that split's index (`status.splits[split].index`, or its `versionIndex` with `pin`).
    """
    from kubernetes import client, config

    config.load_kube_config()
    obj: dict[str, Any] = client.CustomObjectsApi().get_namespaced_custom_object(
        "shardeddataset.dev", "v1alpha1", namespace, "shardeddatasets", name
    )
    status = obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if ready.get("status") != "True":
        raise SystemExit(f"{namespace}/{name} is {status.get('phase') or 'new'}, not Ready: {status.get('message')}")
    published = (status.get("versions") or {}).get("published") or {}
    where = published.get("index") if pin else status["indexObject"]
    if split is not None:
        splits = status.get("splits") or {}
        if split not in splits:
            raise SystemExit(f"{namespace}/{name} has no split {split!r} (splits: {sorted(splits) or 'none'})")
        where = splits[split].get("versionIndex" if pin else "index")
    if not where:
        raise SystemExit(f"{namespace}/{name} names no published version index")
    print(f"reading version {published.get('version')} of {namespace}/{name} through {where}", flush=True)
    bucket, _, index = where.removeprefix("ais://").partition("/")
    endpoint = endpoint or ((obj["spec"].get("ais") or {}).get("endpoint"))
    if not endpoint:
        raise SystemExit("the dataset uses the operator's default AIS endpoint: pass --endpoint")
    return f"{endpoint.rstrip('/')}/v1/objects/{bucket}/{index}"


def serving_etl(namespace: str, name: str) -> str:
    """The AIS ETL the operator runs for this dataset's readers (`spec.serve.etl`), once it runs."""
    from kubernetes import client, config

    config.load_kube_config()
    obj: dict[str, Any] = client.CustomObjectsApi().get_namespaced_custom_object(
        "shardeddataset.dev", "v1alpha1", namespace, "shardeddatasets", name
    )
    serve = (obj.get("status") or {}).get("serve") or {}
    if not serve.get("etl") or serve.get("stage") != "Running":
        raise SystemExit(f"{namespace}/{name} has no running serving ETL: {serve.get('message') or serve or 'none'}")
    return str(serve["etl"])


def shard_urls(index_url: str, token_header: str | None) -> tuple[list[str], int, str]:
    """The shards' URLs (the index lists them relative to itself), the number of samples, and the version."""
    import urllib.request

    request = urllib.request.Request(index_url, headers=_auth(token_header))
    with urllib.request.urlopen(request, timeout=60) as r:
        index = json.load(r)
    base = index_url.rsplit("/", 1)[0]
    urls = [s["url"] if "://" in s["url"] else f"{base}/{s['url']}" for s in index["shardlist"]]
    return urls, sum(int(s["nsamples"]) for s in index["shardlist"]), str((index.get("info") or {}).get("version"))


def _auth(token_header: str | None) -> dict[str, str]:
    if not token_header:
        return {}
    with open(token_header) as f:
        name, _, value = f.read().strip().partition(": ")
    return {name: value}


def token_header_file() -> str | None:
    """$AIS_AUTHN_TOKEN as a curl header file (mode 0600), so the token is not on any command line."""
    token = os.environ.get("AIS_AUTHN_TOKEN")
    if not token:
        return None
    fd, path = tempfile.mkstemp(prefix="ais-auth-", suffix=".txt")
    os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(f"Authorization: Bearer {token}\n")
    return path


# ----------------------------------------------------------------------------------------- samples


def to_example(sample: dict[str, Any], image_member: str, label_member: str) -> tuple[torch.Tensor, int, str]:
    """(image tensor 3xSIDExSIDE in [0, 1], class index, key) from a sample as either library yields it.

    wids names members with a leading dot (".image.jpg") and gives file objects; webdataset gives bytes.
    """
    members = {k.lstrip("."): (v.read() if hasattr(v, "read") else v) for k, v in sample.items()}
    with Image.open(io.BytesIO(members[image_member])) as img:
        rgb = img.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(SIDE, SIDE, 3)
    label = int(members[label_member]) - 1
    return pixels.permute(2, 0, 1).float() / 255.0, label, str(sample["__key__"])


def wids_loader(index_url: str, args: argparse.Namespace, token_header: str | None) -> DataLoader[Any]:
    import wids

    if token_header:  # wids downloads shards with curl: send the token from the header file
        for scheme in ("http", "https"):
            wids.wids_dl.default_cmds[scheme] = f"curl -s -f -L -H @{token_header} '{{url}}' -o '{{local}}'"

    def decode(sample: dict[str, Any]) -> tuple[torch.Tensor, int, str]:
        return to_example(sample, args.image_member, args.label_member)

    dataset = wids.ShardListDataset(index_url, transformations=[decode], cache_dir=args.cache_dir, keep=True)
    sampler = wids.DistributedChunkedSampler(
        dataset, num_replicas=dist.get_world_size(), rank=dist.get_rank(), shuffle=True, seed=args.seed
    )
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers)


def webdataset_loader(urls: list[str], args: argparse.Namespace, token_header: str | None) -> DataLoader[Any]:
    import webdataset as wds

    if token_header:
        urls = [f"pipe:curl -s -f -L -H @{token_header} '{u}'" for u in urls]
    dataset = (
        wds.WebDataset(
            urls,
            nodesplitter=wds.split_by_node,  # rank r of n takes shards r, r+n, ...
            workersplitter=wds.split_by_worker,  # and its workers split those again
            shardshuffle=len(urls),
            seed=args.seed,
            empty_check=False,  # fewer shards than rank x worker pairs leaves some pairs idle
        )
        .shuffle(256)
        .map(lambda s: to_example(s, args.image_member, args.label_member))
    )
    return DataLoader(dataset.batched(args.batch_size), batch_size=None, num_workers=args.workers)


def batches(loader: DataLoader[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    for images, labels, keys in loader:
        yield images, torch.as_tensor(labels), list(keys)


# ----------------------------------------------------------------------------------------- training


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dataset", help="NAMESPACE/NAME of a Ready ShardedDataset")
    where.add_argument("--index-url", help="HTTP URL of a wids index in AIS")
    p.add_argument(
        "--pin",
        action="store_true",
        help="with --dataset: read the published version's own index (stays the same when a newer version is "
        "published) instead of the stable index",
    )
    p.add_argument("--split", help="with --dataset: train on this split (spec.splits), e.g. trainval")
    p.add_argument(
        "--etl",
        help="with --loader webdataset: read every shard through this AIS ETL (GET ?etl_name=); 'serve' with "
        "--dataset: the dataset's own (spec.serve.etl, named in status.serve.etl)",
    )
    p.add_argument(
        "--eval-split", help="with --dataset: after training, one evaluation pass over this split, e.g. test"
    )
    p.add_argument("--endpoint", default=os.environ.get("AIS_ENDPOINT"), help="AIS proxy URL reachable from here")
    p.add_argument("--loader", choices=["wids", "webdataset"], default="wids")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-member", default="image.jpg")
    p.add_argument("--label-member", default="cls")
    p.add_argument("--cache-dir", default=None, help="wids shard cache (default $WIDS_CACHE or /tmp/_wids_cache)")
    p.add_argument("--check", action="store_true", help="gather every key seen onto rank 0, count duplicates")
    p.add_argument("--report", help="rank 0 writes the epochs' counts (with --check: and keys) here (JSON)")
    args = p.parse_args(argv)

    if "RANK" not in os.environ:  # not under torchrun: one process
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    token_header = token_header_file()
    if args.dataset:
        namespace, _, name = args.dataset.partition("/")
        index_url = index_url_of(namespace, name, args.endpoint, args.pin, args.split)
    else:
        index_url = args.index_url
    urls, total, version = shard_urls(index_url, token_header)
    if args.etl:
        if args.loader != "webdataset":
            raise SystemExit("--etl needs --loader webdataset (wids caches whole shards by their plain URL)")
        etl = serving_etl(*args.dataset.partition("/")[::2]) if args.etl == "serve" and args.dataset else args.etl
        print(f"every shard through AIS ETL {etl}", flush=True)
        urls = [f"{u}{'&' if '?' in u else '?'}etl_name={etl}" for u in urls]
    if args.loader == "wids":
        loader = wids_loader(index_url, args, token_header)
    else:
        loader = webdataset_loader(urls, args, token_header)

    torch.manual_seed(args.seed)
    model = DistributedDataParallel(nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, CLASSES)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    report: dict[str, Any] = {
        "loader": args.loader,
        "ranks": world,
        "workers": args.workers,
        "indexed": total,
        "version": version,
    }
    report["epochs"] = []
    for epoch in range(args.epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        seen: list[str] = []
        loss_sum, steps, samples = 0.0, 0, 0
        with Join([model]):  # ranks may get different numbers of batches: Join keeps DDP from waiting forever
            for images, labels, keys in batches(loader):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(images), labels)
                loss.backward()
                optimizer.step()
                loss_sum, steps, samples = loss_sum + float(loss.detach()), steps + 1, samples + len(keys)
                if args.check:
                    seen.extend(keys)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, {"keys": seen, "loss": loss_sum, "steps": steps, "samples": samples})
        if rank == 0:
            per_rank = [g["samples"] for g in gathered]
            mean = sum(g["loss"] for g in gathered) / max(1, sum(g["steps"] for g in gathered))
            line = f"epoch {epoch}: {sum(per_rank)} samples"
            stats: dict[str, Any] = {"samples": sum(per_rank), "perRank": per_rank}
            if args.check:
                keys = sorted(k for g in gathered for k in g["keys"])
                twice = sum(1 for n in Counter(keys).values() if n > 1)
                line += f" ({len(set(keys))} distinct, {twice} seen more than once)"
                stats.update(distinct=len(set(keys)), keys=keys)
            print(f"{line} of {total} indexed, per rank {per_rank}, mean loss {mean:.3f}", flush=True)
            report["epochs"].append(stats)
    if args.eval_split:
        report["eval"] = evaluate(model, args, token_header, rank, world)
    if rank == 0 and args.report:
        with open(args.report, "w") as f:
            json.dump(report, f)
    # Leave the process group together: every rank waits until all are done (rank 0 writes the report first),
    # then the DDP model, which holds its own reference to the gloo group, is freed before the group is
    # destroyed. Before this, a rank that finished first now and then aborted on its way out ("terminate called
    # without an active exception": once in CI, about 1 run in 100 locally, after both epochs had finished).
    dist.barrier()
    del model, optimizer, loader
    gc.collect()
    dist.destroy_process_group()
    if token_header:
        os.unlink(token_header)
    return 0


def evaluate(
    model: nn.Module, args: argparse.Namespace, token_header: str | None, rank: int, world: int
) -> dict[str, Any]:
    """One pass without gradients over `--eval-split` (every sample once across ranks and workers)."""
    namespace, _, name = args.dataset.partition("/")
    index_url = index_url_of(namespace, name, args.endpoint, args.pin, args.eval_split)
    urls, total, _ = shard_urls(index_url, token_header)
    loader = (
        wids_loader(index_url, args, token_header)
        if args.loader == "wids"
        else webdataset_loader(urls, args, token_header)
    )
    correct, samples, seen = 0, 0, []
    model.eval()
    with torch.no_grad(), Join([model]):
        for images, labels, keys in batches(loader):
            correct += int((model(images).argmax(dim=1) == labels).sum())
            samples += len(keys)
            if args.check:
                seen.extend(keys)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, {"correct": correct, "samples": samples, "keys": seen})
    out = {
        "split": args.eval_split,
        "indexed": total,
        "samples": sum(g["samples"] for g in gathered),
        "accuracy": sum(g["correct"] for g in gathered) / max(1, sum(g["samples"] for g in gathered)),
    }
    if args.check:
        keys = sorted(k for g in gathered for k in g["keys"])
        out.update(distinct=len(set(keys)), keys=keys)
    if rank == 0:
        print(
            f"eval on {args.eval_split}: {out['samples']} of {total} samples, accuracy {out['accuracy']:.3f}",
            flush=True,
        )
    return out


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown: everything is written and the group destroyed, and the teardown is where
    # torch's C++ threads can still abort a rank (see the end of main).
    os._exit(code)
