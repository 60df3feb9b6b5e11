"""Units: content-defined cuts keep every unit a change does not touch, and identities are exact."""

from __future__ import annotations

import random

import pytest

from sharded_dataset_operator.core import plan
from sharded_dataset_operator.core.samples import RawFile, Sample
from sharded_dataset_operator.core.units import UnitCutter, assigned, estimated_tar_bytes, layout_digest, planned

LAYOUT = "layout"


def sample(key: str, size: int = 1000, label: str | None = "1", tag: str = "") -> Sample:
    values = (("cls", label),) if label is not None else ()
    return Sample(key=key, files=(("image.jpg", RawFile(f"images/{key}.jpg", size, tag)),), values=values)


def cut(samples: list[Sample], max_samples: int | None = 40, max_bytes: int | None = None) -> list[tuple[str, int]]:
    cutter = UnitCutter(LAYOUT, max_samples, max_bytes, with_order=True)
    units = [u for s in samples for u in cutter.add(s)] + cutter.finish()
    position = 0
    for u in units:
        assert u.start == position and u.count >= 1
        position += u.count
    assert position == len(samples)
    return [(u.id, u.count) for u in units]


def keys(n: int, start: int = 0) -> list[str]:
    return [f"k{i:07d}" for i in range(start, start + n)]


def test_units_respect_both_limits_and_are_nearly_full() -> None:
    units = cut([sample(k) for k in keys(20_000)], max_samples=40)
    assert all(n <= 40 for _, n in units)
    # 40 samples: the window is 8 samples wide (a 2-sample window would make every cut positional)
    assert all(n >= 32 for _, n in units[:-1]), min(n for _, n in units[:-1])
    assert 32 <= sum(n for _, n in units) / len(units) <= 36
    by_bytes = cut([sample(k, size=10_000) for k in keys(5_000)], max_samples=None, max_bytes=200_000)
    per_sample = estimated_tar_bytes(sample("x", 10_000), True)
    assert all(n * per_sample + 1024 <= 200_000 for _, n in by_bytes)


def test_shards_of_small_samples_are_within_five_percent_of_max_shard_size() -> None:
    """ImageNet-like: ~3 KiB samples against a limit of a few hundred of them (64 MiB holds ~20,000)."""
    rng = random.Random(7)
    max_bytes = 2 * 1024 * 1024
    cutter = UnitCutter(LAYOUT, None, max_bytes, with_order=True)
    samples = [sample(k, size=rng.randrange(1_500, 5_000)) for k in keys(60_000)]
    units = [u for s in samples for u in cutter.add(s)] + cutter.finish()
    sizes = [(u.tar_bytes + 1024) / max_bytes for u in units[:-1]]
    assert len(sizes) >= 50
    assert all(0.95 <= r <= 1.0 for r in sizes), (min(sizes), max(sizes))
    forced = sum(1 for u in units[:-1] if u.tar_bytes + 1024 + 6_000 > max_bytes)  # no room for one more
    assert forced <= len(sizes) // 5, forced


def test_an_appended_sample_changes_only_the_last_unit() -> None:
    base = [sample(k) for k in keys(5_000)]
    before = cut(base)
    after = cut([*base, sample("k9999999")])
    assert after[:-1] == before[:-1] and after[-1] != before[-1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_change_inside_touches_its_unit_and_at_most_the_units_up_to_the_next_content_cut(seed: int) -> None:
    rng = random.Random(seed)
    base = [sample(k) for k in keys(5_000)]
    before = cut(base)
    changed = list(base)
    i = rng.randrange(len(base))
    kind = seed % 3
    if kind == 0:
        changed.insert(i, sample(base[i].key[:-1] + "x"))  # an added key (sorts right after its neighbour)
    elif kind == 1:
        del changed[i]  # a removed sample
    else:
        changed[i] = sample(base[i].key, label="2")  # a relabelled sample
    after = cut(changed)
    kept = set(before) & set(after)
    assert len(before) - len(kept) <= 3, (len(before), len(kept))


def test_one_percent_appended_keys_leave_99_percent_of_the_units() -> None:
    base = [sample(k) for k in keys(20_000)]
    before = cut(base)
    after = cut([*base, *(sample(k) for k in keys(200, start=20_000))])
    kept = len(set(before) & set(after))
    assert kept >= len(before) - 1


def test_identity_covers_what_decides_the_bytes() -> None:
    base = [sample(k) for k in keys(10)]
    (unit,) = cut(base, max_samples=1000)
    assert cut([sample(k, tag="other") for k in keys(10)], max_samples=1000) != [unit]  # same size, new content
    assert cut([sample(k, size=1001) for k in keys(10)], max_samples=1000) != [unit]
    assert cut([sample(k, label="2") for k in keys(10)], max_samples=1000) != [unit]
    other = UnitCutter("other-layout", 1000, None, True)
    units = [u for s in base for u in other.add(s)] + other.finish()
    assert units[0].id != unit[0]


def test_layout_digest_ignores_the_worker_count_but_not_the_shard_layout() -> None:
    config = {"fields": [{"name": "image.jpg"}], "output": {"maxSamples": 40, "maxBytes": None}, "workers": 4}
    assert layout_digest(config) == layout_digest({**config, "workers": 8})
    assert layout_digest(config) != layout_digest({**config, "output": {"maxSamples": 41, "maxBytes": None}})
    assert layout_digest(config) != layout_digest({**config, "orderSeed": "7"})
    assert layout_digest(config) != layout_digest({**config, "transform": {"resize": {"maxSide": 64}}})


def test_workers_share_the_units_to_convert_evenly() -> None:
    shares = [assigned(10, 3, i) for i in range(3)]
    assert shares == [(0, 3), (3, 6), (6, 10)]
    assert [assigned(2, 2, i) for i in range(2)] == [(0, 1), (1, 2)]


@pytest.mark.parametrize("with_order", [False, True])
def test_a_planned_sample_carries_its_line_member_count_bytes_and_tar_size(with_order: bool) -> None:
    rng = random.Random(7)
    for i in range(200):
        files = tuple(
            sorted((f"m{j}.bin", RawFile(f"d/k{i}.{j}", rng.choice([0, 1, 511, 512, 513, rng.randrange(10**6)])))
                   for j in range(rng.randrange(1, 4)))
        )  # fmt: skip
        values = tuple((f"v{j}", "é" * rng.randrange(0, 600)) for j in range(rng.randrange(0, 3)))
        s = Sample(key=f"k{i}", files=files, values=values, split=rng.choice([None, "train"]))
        p = planned(s, with_order)
        assert (p.key, p.split, p.line) == (s.key, s.split, plan.encode_sample(s))
        assert (p.members, p.bytes) == (len(files), s.file_bytes())
        assert p.tar_bytes == estimated_tar_bytes(s, with_order)
