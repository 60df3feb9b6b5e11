"""Unit tests for sharded_dataset_operator.core.samples."""

from __future__ import annotations

import random

import pytest

from sharded_dataset_operator.core.samples import (
    FieldRule,
    GroupResult,
    LabelRule,
    LabelTable,
    RawFile,
    Sample,
    default_required,
    derive_key,
    group_samples,
    key_problem,
    match_pattern,
    parse_labels,
    partition,
)

FIELDS = [FieldRule("images/*.jpg", "image.jpg"), FieldRule("annotations/trimaps/*.png", "mask.png")]
LABEL = LabelRule("annotations/list.txt", 0, 1, "cls")

OXFORD_LIST = """#Image CLASS-ID SPECIES BREED ID
#ID: 1:37 Class ids
#SPECIES: 1:Cat 2:Dog
Abyssinian_1 1 1 1
Abyssinian_2 1 1 1
Abyssinian_3 1 1 1
Abyssinian_4 1 1 1
american_bulldog_1 2 2 1
a.b 2 2 1
labelonly_1 3 2 2
"""


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("images/Abyssinian_1.jpg", "images/*.jpg", True),
        ("images/sub/Abyssinian_1.jpg", "images/*.jpg", False),
        ("images/Abyssinian_1.jpg", "*.jpg", False),
        ("Abyssinian_1.jpg", "images/*.jpg", False),
        ("images/a/x.jpg", "images/*/*.jpg", True),
        ("images/x.jpg", "images/*/*.jpg", False),
        ("images/a/b/x.jpg", "images/*/*.jpg", False),
        ("images/x.JPG", "images/*.jpg", False),
        ("images/x.jpg", "images/?.jpg", True),
        ("images/xy.jpg", "images/?.jpg", False),
        ("images/x.jpg", "images/[xyz].jpg", True),
        ("images/a.jpg", "images/[!a].jpg", False),
        ("a/b", "a?b", False),
        ("a/b", "a[/]b", False),
        ("images/._x.png", "images/*.png", True),
        ("annotations/list.txt", "annotations/list.txt", True),
    ],
)
def test_match_pattern(path: str, pattern: str, expected: bool) -> None:
    assert match_pattern(path, pattern) is expected


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("images/Abyssinian_1.jpg", "images/*.jpg", "Abyssinian_1"),
        ("annotations/trimaps/._Abyssinian_1.png", "annotations/trimaps/*.png", "._Abyssinian_1"),
        ("images/a.b.jpg", "images/*.jpg", "a.b"),
        ("masks/cat_mask.png", "masks/*_mask.png", "cat"),
        ("images/a/x.jpg", "images/*/*.jpg", "x"),
        ("data/file.tar.gz", "data/*", "file.tar"),
        ("data/file.txt", "data/file.txt", "file"),
        ("data/x.jpg", "data/*.jp?", "x"),
        ("data/x.jpeg", "data/*.[jp]peg", "x"),
    ],
)
def test_derive_key(path: str, pattern: str, expected: str) -> None:
    assert derive_key(path, pattern) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Abyssinian_1", None),
        ("american-bulldog 12", None),
        ("ünïcode", None),
        ("", "empty-key"),
        ("a.b", "dot-in-key"),
        ("._Abyssinian_1", "dot-in-key"),
        (".hidden", "dot-in-key"),
        ("a/b", "bad-char-in-key"),
        ("a\\b", "bad-char-in-key"),
        ("a\nb", "bad-char-in-key"),
        ("a\x00b", "bad-char-in-key"),
        ("a\x1fb", "bad-char-in-key"),
        ("a\x7fb", "bad-char-in-key"),
    ],
)
def test_key_problem(key: str, expected: str | None) -> None:
    assert key_problem(key) == expected


def test_parse_labels_oxford() -> None:
    table = parse_labels(OXFORD_LIST, 0, 1)
    assert table.values["Abyssinian_1"] == "1"
    assert table.values["american_bulldog_1"] == "2"
    assert "#Image" not in table.values
    assert len(table.values) == 7
    assert table.malformed_lines == 0
    assert table.conflicts == frozenset()


def test_parse_labels_other_columns_malformed_and_conflicts() -> None:
    text = "\n".join(
        [
            "   # indented comment",
            "",
            "   ",
            "k1 1 cat",
            "k2\t2\tdog",
            "k3 3",  # too few columns for value column 2
            "k1 1 cat",  # same value twice is fine
            "k2 2 cat",  # conflict
            "k4",
        ]
    )
    table = parse_labels(text, 0, 2)
    assert table.values == {"k1": "cat", "k2": "dog"}
    assert table.malformed_lines == 2
    assert table.conflicts == frozenset({"k2"})


def test_parse_labels_rejects_negative_columns() -> None:
    with pytest.raises(ValueError):
        parse_labels("", -1, 0)


def oxford_files() -> list[RawFile]:
    return [
        RawFile("annotations/list.txt", 200),
        RawFile("README.md", 10),
        RawFile("annotations/xmls/Abyssinian_1.xml", 5),
        # complete
        RawFile("images/Abyssinian_1.jpg", 100),
        RawFile("annotations/trimaps/Abyssinian_1.png", 50),
        RawFile("annotations/trimaps/._Abyssinian_1.png", 4096),  # macOS junk
        # missing trimap
        RawFile("images/Abyssinian_2.jpg", 100),
        # empty image
        RawFile("images/Abyssinian_3.jpg", 0),
        RawFile("annotations/trimaps/Abyssinian_3.png", 50),
        # empty image and missing trimap: first reason (image) wins
        RawFile("images/Abyssinian_4.jpg", 0),
        # missing label
        RawFile("images/nolabel_1.jpg", 100),
        RawFile("annotations/trimaps/nolabel_1.png", 50),
        # extra dot: rejected file, key is not rewritten to a_b
        RawFile("images/a.b.jpg", 100),
        RawFile("annotations/trimaps/a.b.png", 100),
        # complete, second class
        RawFile("images/american_bulldog_1.jpg", 100),
        RawFile("annotations/trimaps/american_bulldog_1.png", 50),
    ]


def group_oxford(files: list[RawFile]) -> GroupResult:
    table = parse_labels(OXFORD_LIST, 0, 1)
    return group_samples(files, FIELDS, LABEL, table, default_required(FIELDS, LABEL))


def test_group_samples_oxford() -> None:
    result = group_oxford(oxford_files())
    assert [s.key for s in result.samples] == ["Abyssinian_1", "american_bulldog_1"]
    first = result.samples[0]
    assert first == Sample(
        key="Abyssinian_1",
        files=(
            ("image.jpg", RawFile("images/Abyssinian_1.jpg", 100)),
            ("mask.png", RawFile("annotations/trimaps/Abyssinian_1.png", 50)),
        ),
        values=(("cls", "1"),),
    )
    assert first.members()["mask.png"].path == "annotations/trimaps/Abyssinian_1.png"
    assert result.samples[1].value("cls") == "2"
    assert result.skipped == {"empty:image.jpg": 2, "missing:mask.png": 1, "missing:cls": 1}
    assert result.rejected_files == {"invalid-key": 3}
    assert result.examples["invalid-key"] == [
        "annotations/trimaps/._Abyssinian_1.png",
        "annotations/trimaps/a.b.png",
        "images/a.b.jpg",
    ]
    assert result.examples["empty:image.jpg"] == ["Abyssinian_3", "Abyssinian_4"]
    assert result.examples["missing:cls"] == ["nolabel_1"]
    assert result.unmatched_files == 2  # README.md and the xml; list.txt is excluded
    # a.b has no accepted file (key rejected), labelonly_1 has none at all.
    assert result.values_without_files == 2


def test_group_samples_order_independent() -> None:
    files = oxford_files()
    expected = group_oxford(files)
    rng = random.Random(1234)
    for _ in range(20):
        shuffled = files[:]
        rng.shuffle(shuffled)
        assert group_oxford(shuffled) == expected


def test_group_samples_duplicate() -> None:
    fields = [FieldRule("images/*/*.jpg", "image.jpg")]
    files = [
        RawFile("images/a/x.jpg", 10),
        RawFile("images/b/x.jpg", 10),
        RawFile("images/a/y.jpg", 10),
        RawFile("images/a/y.jpg", 10),  # listed twice: same file, not a duplicate
    ]
    result = group_samples(files, fields, None, None, ["image.jpg"])
    assert [s.key for s in result.samples] == ["y"]
    assert result.skipped == {"duplicate:image.jpg": 1}
    assert result.examples["duplicate:image.jpg"] == ["x"]


def test_group_samples_first_field_wins_and_optional_members() -> None:
    fields = [
        FieldRule("data/*.jpg", "image.jpg"),
        FieldRule("data/*", "raw.bin"),
        FieldRule("meta/*.json", "meta.json"),
    ]
    files = [
        RawFile("data/k1.jpg", 10),
        RawFile("data/k2.jpg", 10),
        RawFile("meta/k1.json", 0),  # optional and empty: dropped
        RawFile("meta/k2.json", 3),
        RawFile("data/k3.bin", 7),  # only matches the second field
    ]
    result = group_samples(files, fields, None, None, ["image.jpg"])
    assert [s.key for s in result.samples] == ["k1", "k2"]
    assert [name for name, _ in result.samples[0].files] == ["image.jpg"]
    assert [name for name, _ in result.samples[1].files] == ["image.jpg", "meta.json"]
    assert result.skipped == {"missing:image.jpg": 1}


def test_group_samples_label_conflicts() -> None:
    fields = [FieldRule("*.jpg", "jpg")]
    label = LabelRule("labels.txt", 0, 1, "cls")
    table = parse_labels("a 1\na 2\nb 3\nc 4\nc 4\n", 0, 1)
    files = [RawFile("a.jpg", 1), RawFile("b.jpg", 1), RawFile("c.jpg", 1), RawFile("labels.txt", 9)]

    required = group_samples(files, fields, label, table, ["jpg", "cls"])
    assert [s.key for s in required.samples] == ["b", "c"]
    assert required.skipped == {"conflicting:cls": 1}
    assert required.unmatched_files == 0

    optional = group_samples(files, fields, label, table, ["jpg"])
    assert [(s.key, s.value("cls")) for s in optional.samples] == [("a", None), ("b", "3"), ("c", "4")]
    assert optional.skipped == {}


def test_group_samples_empty_label_value_and_order_of_checks() -> None:
    fields = [FieldRule("*.jpg", "jpg"), FieldRule("*.png", "png")]
    label = LabelRule("l.txt", 0, 1, "cls")
    table = LabelTable(values={"a": "", "b": "x"})
    files = [RawFile("a.jpg", 1), RawFile("a.png", 1), RawFile("b.png", 0)]
    result = group_samples(files, fields, label, table, ["cls", "jpg", "png"])
    assert result.samples == []
    assert result.skipped == {"empty:cls": 1, "missing:jpg": 1}
    result = group_samples(files, fields, label, table, ["png", "jpg"])
    assert [(s.key, s.value("cls")) for s in result.samples] == [("a", None)]
    assert result.skipped == {"empty:png": 1}


def test_group_samples_examples_capped_and_sorted() -> None:
    files = [RawFile(f"img/k{i:02d}.jpg", 0) for i in range(20, 0, -1)]
    result = group_samples(files, [FieldRule("img/*.jpg", "jpg")], None, None, ["jpg"])
    assert result.skipped == {"empty:jpg": 20}
    assert result.examples["empty:jpg"] == ["k01", "k02", "k03", "k04", "k05"]


def test_group_samples_validates_names() -> None:
    with pytest.raises(ValueError):
        group_samples([], FIELDS, None, None, ["cls"])
    with pytest.raises(ValueError):
        group_samples([], FIELDS, LabelRule("l.txt", 0, 1, "image.jpg"), None, [])


def test_default_required() -> None:
    assert default_required(FIELDS, LABEL) == ["image.jpg", "mask.png", "cls"]
    assert default_required(FIELDS, None) == ["image.jpg", "mask.png"]


def test_partition_covers_every_key_once() -> None:
    for n in range(0, 30):
        keys = [f"k{i:03d}" for i in range(n)]
        for workers in range(1, 40):
            seen: list[str] = []
            previous_end = 0
            for index in range(workers):
                start, end = partition(keys, workers, index)
                assert start == previous_end
                assert start <= end
                assert end - start in (n // workers, n // workers + 1)
                seen.extend(keys[start:end])
                previous_end = end
            assert seen == keys


@pytest.mark.parametrize(("workers", "index"), [(0, 0), (-1, 0), (3, 3), (3, -1)])
def test_partition_validates(workers: int, index: int) -> None:
    with pytest.raises(ValueError):
        partition(["a"], workers, index)


@pytest.mark.parametrize("path", ["images/a.jpg", 'images/q"uote.jpg', "images/back\\slash.jpg", "images/tab\t.jpg",
                                  "images/ünï.jpg"])  # fmt: skip
def test_file_records_carry_any_path_and_tag_through_the_sort(path: str) -> None:
    from sharded_dataset_operator.core.samples import file_record, groups_from_records

    raw = RawFile(path, 7, 'tag"\\1')
    (group,) = groups_from_records([file_record("k", 0, raw)], ["image.jpg"])
    assert group.files == {"image.jpg": [raw]}
