"""Unit tests for sharded_dataset_operator.pods.tarshard."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import webdataset

from sharded_dataset_operator.pods.tarshard import (
    END_OF_ARCHIVE,
    FIXED_MTIME,
    FinishedShard,
    ShardCutter,
    encode_sample,
)


def read_tar(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    out: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            handle = tar.extractfile(info)
            assert handle is not None
            out.append((info, handle.read()))
    return out


def read_webdataset(path: Path) -> list[dict[str, Any]]:
    return list(webdataset.WebDataset([str(path)], shardshuffle=False))


def test_encode_sample_deterministic_and_sorted() -> None:
    members = [("mask.png", b"\x89PNG" * 100), ("image.jpg", b"\xff\xd8" + b"x" * 1000), ("cls", b"7")]
    first = encode_sample("Abyssinian_1", members)
    assert first == encode_sample("Abyssinian_1", list(reversed(members)))
    assert len(first) % 512 == 0
    assert not first.endswith(END_OF_ARCHIVE)

    entries = read_tar(first + END_OF_ARCHIVE)
    assert [info.name for info, _ in entries] == [
        "Abyssinian_1.cls",
        "Abyssinian_1.image.jpg",
        "Abyssinian_1.mask.png",
    ]
    for info, data in entries:
        assert info.isreg()
        assert info.mtime == FIXED_MTIME
        assert info.mode == 0o444
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
        assert data == dict(members)[info.name.split(".", 1)[1]]


def test_encode_sample_empty_member_and_block_sizes() -> None:
    data = encode_sample("k", [("txt", b""), ("bin", b"a" * 512)])
    assert len(data) == 512 + 512 + 512
    assert [(i.name, d) for i, d in read_tar(data + END_OF_ARCHIVE)] == [
        ("k.bin", b"a" * 512),
        ("k.txt", b""),
    ]


def test_encode_sample_long_and_unicode_names(tmp_path: Path) -> None:
    key = "k" * 150
    unicode_key = "chat_ünïcode"
    shard = (
        encode_sample(key, [("image.jpg", b"img"), ("x" * 120, b"long")])
        + encode_sample(unicode_key, [("cls", b"3")])
        + END_OF_ARCHIVE
    )
    assert [(i.name, d) for i, d in read_tar(shard)] == [
        (f"{key}.image.jpg", b"img"),
        (f"{key}.{'x' * 120}", b"long"),
        (f"{unicode_key}.cls", b"3"),
    ]
    path = tmp_path / "long.tar"
    path.write_bytes(shard)
    samples = read_webdataset(path)
    assert [s["__key__"] for s in samples] == [key, unicode_key]
    assert samples[0]["image.jpg"] == b"img"
    assert samples[1]["cls"] == b"3"


def test_encode_sample_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_sample("a.b", [("jpg", b"x")])
    with pytest.raises(ValueError):
        encode_sample("a", [("jpg", b"x"), ("jpg", b"y")])
    with pytest.raises(ValueError):
        encode_sample("a", [("sub/jpg", b"x")])


def test_shard_readable_by_webdataset(tmp_path: Path) -> None:
    cutter = ShardCutter(max_samples=None, max_bytes=10**6)
    expected: dict[str, dict[str, bytes]] = {}
    for i in range(5):
        key = f"Abyssinian_{i}"
        members = {"image.jpg": f"jpeg-{i}".encode(), "mask.png": f"png-{i}".encode(), "cls": b"1"}
        expected[key] = members
        assert cutter.add(key, encode_sample(key, list(members.items()))) is None
    shard = cutter.finish()
    assert shard is not None
    assert shard.samples == 5
    assert shard.keys == tuple(expected)
    assert shard.data.endswith(END_OF_ARCHIVE)
    path = tmp_path / "shard-000000.tar"
    path.write_bytes(shard.data)
    samples = read_webdataset(path)
    assert [s["__key__"] for s in samples] == list(expected)
    for sample in samples:
        for name, data in expected[sample["__key__"]].items():
            assert sample[name] == data


def sample_of_size(key: str, payload: int) -> bytes:
    return encode_sample(key, [("bin", b"z" * payload)])


def collect(cutter: ShardCutter, samples: list[tuple[str, bytes]]) -> list[FinishedShard]:
    shards = [s for key, tar in samples if (s := cutter.add(key, tar)) is not None]
    last = cutter.finish()
    if last is not None:
        shards.append(last)
    return shards


def test_cutter_by_count() -> None:
    samples = [(f"k{i}", sample_of_size(f"k{i}", 10)) for i in range(10)]
    shards = collect(ShardCutter(max_samples=3, max_bytes=None), samples)
    assert [s.samples for s in shards] == [3, 3, 3, 1]
    assert [k for s in shards for k in s.keys] == [k for k, _ in samples]
    for shard in shards:
        assert [i.name for i, _ in read_tar(shard.data)] == [f"{k}.bin" for k in shard.keys]


def test_cutter_by_bytes() -> None:
    samples = [(f"k{i:02d}", sample_of_size(f"k{i:02d}", (i * 397) % 3000)) for i in range(40)]
    max_bytes = 8 * 1024
    shards = collect(ShardCutter(max_samples=None, max_bytes=max_bytes), samples)
    assert len(shards) > 1
    assert [k for s in shards for k in s.keys] == [k for k, _ in samples]
    sizes = dict(samples)
    for index, shard in enumerate(shards):
        assert len(shard.data) <= max_bytes
        assert len(shard.data) == sum(len(sizes[k]) for k in shard.keys) + len(END_OF_ARCHIVE)
        if index + 1 < len(shards):
            # The shard was cut because the next sample did not fit.
            nxt = sizes[shards[index + 1].keys[0]]
            assert len(shard.data) + len(nxt) > max_bytes
        assert len(read_tar(shard.data)) == shard.samples


def test_cutter_by_count_and_bytes() -> None:
    samples = [(f"k{i}", sample_of_size(f"k{i}", 100)) for i in range(7)]  # 1024 bytes each
    shards = collect(ShardCutter(max_samples=2, max_bytes=3 * 1024 + 1024), samples)
    assert [s.samples for s in shards] == [2, 2, 2, 1]
    shards = collect(ShardCutter(max_samples=5, max_bytes=2 * 1024 + 1024), samples)
    assert [s.samples for s in shards] == [2, 2, 2, 1]


def test_cutter_oversize_sample_alone() -> None:
    cutter = ShardCutter(max_samples=None, max_bytes=4096)
    assert cutter.add("small1", sample_of_size("small1", 10)) is None
    first = cutter.add("huge", sample_of_size("huge", 10_000))
    assert first is not None and first.keys == ("small1",)
    second = cutter.add("small2", sample_of_size("small2", 10))
    assert second is not None and second.keys == ("huge",)
    assert len(second.data) > 4096
    assert [(i.name, len(d)) for i, d in read_tar(second.data)] == [("huge.bin", 10_000)]
    last = cutter.finish()
    assert last is not None and last.keys == ("small2",)
    assert cutter.finish() is None


def test_cutter_oversize_first_sample() -> None:
    cutter = ShardCutter(max_samples=None, max_bytes=1024)
    assert cutter.add("huge", sample_of_size("huge", 5000)) is None
    shard = cutter.finish()
    assert shard is not None and shard.samples == 1


def test_cutter_finish_with_nothing() -> None:
    assert ShardCutter(max_samples=1, max_bytes=None).finish() is None


@pytest.mark.parametrize(("max_samples", "max_bytes"), [(None, None), (0, None), (None, 0), (-1, 100)])
def test_cutter_validates(max_samples: int | None, max_bytes: int | None) -> None:
    with pytest.raises(ValueError):
        ShardCutter(max_samples=max_samples, max_bytes=max_bytes)


def test_cutter_rejects_partial_blocks() -> None:
    with pytest.raises(ValueError):
        ShardCutter(max_samples=1, max_bytes=None).add("k", b"x" * 100)
