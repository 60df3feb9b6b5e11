"""The planner's per-file fast paths give exactly what the general code gives (seeded random inputs with the
characters that need care: quotes, backslashes, control characters, non-ASCII, dots and slashes)."""

from __future__ import annotations

import json
import random

import pytest

from sharded_dataset_operator.core import plan, reuse
from sharded_dataset_operator.core.compactjson import compact, string
from sharded_dataset_operator.core.keys import KeyRule, derive_key, key_function, key_of, stem_of
from sharded_dataset_operator.core.samples import RawFile, Sample

ALPHABET = ["a", "b", "Z", "0", ".", "/", "-", "_", " ", '"', "\\", "\n", "\x00", "\x1f", "é", "\u2028", "*"]
PATTERNS = ["*.jpg", "*/*.JPEG", "**/*.png", "images/*", "*.seg.png", "*_mask.pn?", "x/*[0-9].txt", "*", "a.txt"]


def text(rng: random.Random, most: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, most)))


def path(rng: random.Random) -> str:
    return "/".join(text(rng, 6) for _ in range(rng.randint(1, 4))) + rng.choice(["", ".jpg", ".seg.png", "_mask.png"])


def test_a_string_is_quoted_as_the_json_encoder_quotes_it() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        t = text(rng)
        assert string(t) == compact(t), repr(t)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_key_function_gives_what_key_of_gives(pattern: str) -> None:
    rng = random.Random(pattern)
    for mode in ("basename", "path"):
        rule = KeyRule(mode=mode)
        fast, slow_stem = key_function(pattern, rule), stem_of(pattern)
        for _ in range(2000):
            p = path(rng)
            assert slow_stem(p) == derive_key(p, pattern), (p, pattern)
            assert fast(p) == key_of(p, pattern, rule), (p, pattern, mode)


def general_sample_line(sample: Sample) -> str:
    """The plan line as the JSON encoder writes it (what `encode_sample` wrote before its fast path)."""
    files = [[name, raw.path, raw.size, *([raw.tag] if raw.tag else [])] for name, raw in sample.files]
    fields: list[object] = [sample.key, dict(sample.values) or None, files]
    return compact(fields + ([sample.split] if sample.split is not None else []))


def test_plan_and_membership_lines_are_the_json_encoders_and_read_back() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        files = tuple(
            (text(rng, 4) or "m", RawFile(path(rng), rng.randint(0, 1 << 40), rng.choice(["", text(rng, 8)])))
            for _ in range(rng.randint(0, 3))
        )
        values = tuple(sorted({text(rng, 4): text(rng, 6) for _ in range(rng.randint(0, 3))}.items()))
        sample = Sample(text(rng) or "k", files, values, rng.choice([None, "train", text(rng, 5)]))
        line = plan.encode_sample(sample)
        assert line == general_sample_line(sample)
        back = plan.decode_sample(line)
        assert (back.key, back.values, back.split) == (sample.key, sample.values, sample.split)
        assert back.files == tuple((n, RawFile(r.path, r.size, r.tag)) for n, r in sample.files)
        digest = rng.getrandbits(64)
        for unit in (rng.randint(0, 10**6), text(rng, 16), [text(rng, 5), rng.randint(0, 999)]):
            member = reuse.encode_member(sample.key, digest, unit, sample.split)
            tail = [sample.split] if sample.split is not None else []
            assert member == compact([sample.key, f"{digest:016x}", unit, *tail])
            assert json.loads(member)[0] == sample.key
