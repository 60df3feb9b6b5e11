"""Unit tests of the generic layouts (issue 26): key modes, '**' patterns, classes from the path with stable
indexes, top-level folder splits, value members from tables, and how the spec refuses bad layouts."""

from __future__ import annotations

from typing import Any

import pytest

from sharded_dataset_operator.core import plan
from sharded_dataset_operator.core.keys import KeyRule, glob_regex, key_of, key_problem, match_pattern
from sharded_dataset_operator.core.layout import ClassRule, Layout, LayoutError, from_config, parse_layout
from sharded_dataset_operator.core.samples import (
    FieldRule,
    Grouper,
    RawFile,
    SplitRule,
    group_samples,
    groups_from_records,
    number_classes,
    value_record,
)
from sharded_dataset_operator.core.spec import SpecError, parse_spec


def files(*paths: str, size: int = 10) -> list[RawFile]:
    return [RawFile(p, size) for p in paths]


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("images/*.jpg", "images/a.jpg", True),
        ("images/*.jpg", "images/x/a.jpg", False),  # '*' never crosses '/'
        ("**/*.jpg", "a.jpg", True),  # '**' matches no folder too
        ("**/*.jpg", "x/y/z/a.jpg", True),
        ("train/**/*.JPEG", "train/n01/n01_1.JPEG", True),
        ("train/**/*.JPEG", "val/n01/n01_1.JPEG", False),
        ("train/**", "train/a/b.txt", True),
        ("a/[!b]x", "a/bx", False),
        ("a/[!b]x", "a//x", False),  # a negated class never matches '/'
        ("a/[a-c]?.png", "a/bz.png", True),
        ("*/*/*.JPEG", "train/n01/n01_1.JPEG", True),
    ],
)
def test_glob_patterns_with_double_star(pattern: str, path: str, matches: bool) -> None:
    assert match_pattern(path, pattern) is matches
    assert (glob_regex(pattern).fullmatch(path) is not None) is matches


def test_key_modes() -> None:
    assert key_of("cat/1.jpg", "*/*.jpg", KeyRule()) == "1"
    assert key_of("cat/1.jpg", "*/*.jpg", KeyRule("path")) == "cat/1"
    assert key_of("a/b/scene12_left.png", "**/*.png", KeyRule("path")) == "a/b/scene12_left"
    rule = KeyRule("regex", r".*/(?P<key>scene\d+)_(left|right)\.png")
    assert key_of("a/b/scene12_left.png", "**/*.png", rule) == "scene12"
    assert key_of("a/b/other.png", "**/*.png", rule) is None
    # nested keys may hold '/', never '.' in their last part, empty or dot segments
    assert key_problem("cat/1", nested=True) is None
    assert key_problem("cat/1", nested=False) == "bad-char-in-key"
    assert key_problem("v1.0/x", nested=True) is None
    assert key_problem("cat/1.x", nested=True) == "dot-in-key"
    assert key_problem("cat//1", nested=True) == "bad-char-in-key"
    assert key_problem("../1", nested=True) == "bad-char-in-key"


def test_path_keys_keep_files_of_the_same_name_in_different_folders_apart() -> None:
    fields = [FieldRule("*/*.jpg", "jpg")]
    tree = files("cat/1.jpg", "dog/1.jpg", "dog/2.jpg")
    by_base = group_samples(tree, fields, None, None, ["jpg"])
    assert [s.key for s in by_base.samples] == ["2"] and by_base.skipped == {"duplicate:jpg": 1}
    by_path = group_samples(tree, fields, None, None, ["jpg"], layout=Layout(key=KeyRule("path")))
    assert [s.key for s in by_path.samples] == ["cat/1", "dog/1", "dog/2"]
    assert by_path.samples[0].members()["jpg"].path == "cat/1.jpg"


def test_regex_keys_group_views_and_reject_paths_they_do_not_match() -> None:
    fields = [FieldRule("views/*_left.png", "left.png"), FieldRule("views/*_right.png", "right.png")]
    layout = Layout(key=KeyRule("regex", r"views/(?P<key>scene\d+)_(?:left|right)\.png"))
    tree = files("views/scene1_left.png", "views/scene1_right.png", "views/scene2_left.png", "views/x_left.png")
    result = group_samples(tree, fields, None, None, ["left.png"], layout=layout)
    assert [(s.key, sorted(s.members())) for s in result.samples] == [
        ("scene1", ["left.png", "right.png"]),
        ("scene2", ["left.png"]),
    ]
    assert result.rejected_files == {"no-key": 1} and result.examples["no-key"] == ["views/x_left.png"]


def test_classes_from_the_parent_folder_numbered_in_sorted_order() -> None:
    fields = [FieldRule("train/*/*.JPEG", "jpg")]
    layout = Layout(classes=ClassRule(segment=-2, index_member="cls", name_member="txt"))
    tree = files("train/n02/n02_1.JPEG", "train/n01/n01_1.JPEG", "train/n03/n03_7.JPEG", "train/n01/n01_2.JPEG")
    result = group_samples(tree, fields, None, None, ["jpg", "cls", "txt"], layout=layout)
    assert [(s.key, s.value("cls"), s.value("txt")) for s in result.samples] == [
        ("n01_1", "0", "n01"),
        ("n01_2", "0", "n01"),
        ("n02_1", "1", "n02"),
        ("n03_7", "2", "n03"),
    ]
    assert result.classes == {"n01": 0, "n02": 1, "n03": 2}


def test_class_indexes_never_change_once_given() -> None:
    first = number_classes(["dog", "cat"], {})
    assert first == {"cat": 0, "dog": 1}
    # a class that sorts first arrives, one disappears: nobody is renumbered, the gone one keeps its number
    later = number_classes(["aaa", "dog", "zebra"], first)
    assert later == {"cat": 0, "dog": 1, "aaa": 2, "zebra": 3}
    assert number_classes(["cat"], later) == later


def test_the_grouper_numbers_classes_after_the_previous_version() -> None:
    fields = [FieldRule("*/*.jpg", "jpg")]
    grouper = Grouper(fields, None, ["jpg", "cls"], layout=Layout(classes=ClassRule()))
    records = [r for raw in files("aaa/1.jpg", "cat/2.jpg", "dog/3.jpg") for r in grouper.records(raw)]
    grouper.number_classes({"cat": 0, "dog": 1})
    samples = [s for g in groups_from_records(sorted(records), grouper.names) if (s := grouper.judge(g))]
    assert [(s.key, s.value("cls")) for s in samples] == [("1", "2"), ("2", "0"), ("3", "1")]
    assert grouper.finish().classes == {"cat": 0, "dog": 1, "aaa": 2}


def test_a_file_outside_a_class_folder_is_rejected_and_a_key_in_two_classes_conflicts() -> None:
    fields = [FieldRule("**/*.jpg", "jpg")]
    tree = files("top.jpg", "cat/x.jpg", "dog/x.jpg", "dog/y.jpg")
    result = group_samples(tree, fields, None, None, ["jpg"], layout=Layout(classes=ClassRule()))
    assert result.rejected_files == {"no-class-folder": 1}
    # x has two files (duplicate) before its classes are looked at; y is fine; cls is optional here
    assert [(s.key, s.value("cls")) for s in result.samples] == [("y", "1")]
    assert result.skipped == {"duplicate:jpg": 1}
    two = [FieldRule("a/*/*.jpg", "jpg"), FieldRule("b/*/*.png", "png")]
    result = group_samples(
        files("a/cat/x.jpg", "b/dog/x.png"), two, None, None, ["jpg", "png", "cls"], layout=Layout(classes=ClassRule())
    )
    assert result.samples == [] and result.skipped == {"conflicting:cls": 1}


def test_top_level_folders_as_splits() -> None:
    fields = [FieldRule("*/*/*.JPEG", "jpg")]
    splits = SplitRule(names=("train", "val"), paths=(), folders=("train", "val"))
    grouper = Grouper(fields, None, ["jpg", "cls"], splits, Layout(classes=ClassRule()))
    tree = files("train/n1/a.JPEG", "val/n1/b.JPEG", "test/n1/c.JPEG", "train/n2/d.JPEG", "val/n2/d.JPEG")
    records = sorted(r for raw in tree for r in grouper.records(raw))
    samples = [s for g in groups_from_records(records, grouper.names) if (s := grouper.judge(g))]
    assert [(s.key, s.split, s.value("cls")) for s in samples] == [("a", "train", "0"), ("b", "val", "0")]
    result = grouper.finish()
    assert result.skipped == {"duplicate:jpg": 1, "not-in-split": 1}


def test_table_values_join_by_key_and_rows_without_files_are_counted() -> None:
    fields = [FieldRule("wavs/*.wav", "wav")]
    values = [("LJ001-0001", "txt", 'He said "no", twice.'), ("LJ001-0009", "txt", "nobody")]
    tree = files("wavs/LJ001-0001.wav", "wavs/LJ001-0002.wav")
    layout = parse_layout(
        {
            "tables": [
                {
                    "path": "metadata.csv",
                    "delimiter": "|",
                    "quoting": False,
                    "header": False,
                    "columns": ["id", "text", "normalized"],
                    "join": {"column": "id", "by": "key"},
                    "members": [{"column": "normalized", "name": "txt"}],
                }
            ]
        }
    )
    result = group_samples(tree, fields, None, None, ["wav", "txt"], layout=layout, values=values)
    assert [(s.key, s.value("txt")) for s in result.samples] == [("LJ001-0001", 'He said "no", twice.')]
    assert result.skipped == {"missing:txt": 1} and result.values_without_files == 1


def test_plan_lines_carry_value_members_exactly() -> None:
    fields = [FieldRule("images/*.jpg", "jpg")]
    caption = 'a "dog", on\na sofa \u00e9'
    result = group_samples(
        files("images/0001.jpg"), fields, None, None, ["jpg", "txt"], values=[("0001", "txt", caption)],
        layout=Layout(tables=parse_layout(
            {"tables": [{"path": "images/metadata.jsonl", "members": [{"column": "text", "name": "txt"}]}]}
        ).tables),
    )  # fmt: skip
    (sample,) = result.samples
    line = plan.encode_sample(sample)
    assert "\n" not in line and plan.decode_sample(line) == sample and sample.value("txt") == caption


def _spec(samples: dict[str, Any], splits: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"ais": {"bucket": "raw"}},
        "samples": samples,
        "output": {"bucket": "out", "maxSamplesPerShard": 10},
    }
    if splits:
        spec["splits"] = splits
    return spec


@pytest.mark.parametrize(
    ("samples", "field"),
    [
        ({"key": {"from": "regex", "regex": "(?P<id>.*)"}}, "spec.samples.key.regex: needs a named group 'key'"),
        ({"key": {"from": "regex", "regex": "(?P<key>[)"}}, "spec.samples.key.regex: not a valid regular"),
        ({"key": {"from": "path", "regex": "(?P<key>.*)"}}, "spec.samples.key.regex: only with"),
        ({"classes": {"segment": -1}}, "spec.samples.classes.segment"),
        ({"classes": {"indexMember": "jpg"}}, "spec.samples: member names must be unique"),
        ({"tables": [{"path": "meta.xlsx", "members": [{"column": "a", "name": "txt"}]}]}, "tables[0].format"),
        ({"tables": [{"path": "m.csv"}]}, "spec.samples.tables[0]: choose columns"),
        ({"tables": [{"path": "m.csv", "header": False, "members": [{"column": "a", "name": "t"}]}]}, "columns"),
        (
            {
                "tables": [
                    {
                        "path": "m.csv",
                        "header": False,
                        "columns": ["id"],
                        "join": {"column": "id", "by": "key"},
                        "members": [{"column": "a", "name": "t"}],
                    }
                ]
            },
            "column 'a' is not among columns",
        ),
        ({"tables": [{"path": "a.json", "format": "coco", "members": [{"column": "a", "name": "t"}]}]}, "COCO"),
        ({"required": ["jpg", "caption"]}, "spec.samples.required: 'caption' is not a member"),
    ],
)
def test_bad_layouts_are_refused_naming_the_field(samples: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=None) as err:
        parse_spec(
            _spec({"fields": [{"pattern": "*/*.jpg", "name": "jpg"}], **samples}),
            name="ds",
            default_endpoint="http://ais:51080",
        )
    assert field in str(err.value)


def test_a_layout_survives_the_converter_configuration() -> None:
    raw = {
        "key": {"from": "path"},
        "classes": {"segment": 1, "nameMember": "txt"},
        "tables": [
            {"path": "a/metadata.csv", "delimiter": ";", "members": [{"column": "c", "name": "cap"}]},
            {"path": "ann/x.json", "format": "coco", "json": {"name": "json"}, "join": {"prefix": "train2017"}},
        ],
    }
    layout = parse_layout(raw)
    assert layout.classes == ClassRule(segment=1, index_member=None, name_member="txt")
    assert layout.tables[0].prefix == "a/" and layout.tables[1].prefix == "train2017/"
    assert from_config({"layout": layout.to_config()}) == layout
    spec = parse_spec(
        _spec({"fields": [{"pattern": "**/*.jpg", "name": "jpg"}], **raw}),
        name="ds",
        default_endpoint="http://ais:51080",
    )
    assert spec.required == ("jpg", "txt", "cap", "json") and spec.layout == layout


def test_folder_splits_and_stratify_by_a_class_member_parse() -> None:
    samples = {"fields": [{"pattern": "*/*/*.JPEG", "name": "jpg"}], "classes": {}}
    spec = parse_spec(
        _spec(samples, {"sets": [{"name": "train", "folder": "train"}, {"name": "val", "folder": "val"}]}),
        name="ds",
        default_endpoint="http://ais:51080",
    )
    assert spec.splits is not None and [s.folder for s in spec.splits.sets] == ["train", "val"]
    fractions = {"sets": [{"name": "a", "fraction": 0.5}, {"name": "b", "fraction": 0.5}], "stratifyBy": "cls"}
    assert parse_spec(_spec(samples, fractions), name="ds", default_endpoint="http://ais:51080").splits is not None
    with pytest.raises(SpecError, match="folder"):
        parse_spec(
            _spec(samples, {"sets": [{"name": "a", "folder": "x/y"}, {"name": "b", "folder": "z"}]}),
            name="ds",
            default_endpoint="http://ais:51080",
        )
    with pytest.raises(LayoutError):
        parse_layout({"classes": {"indexMember": "__order__"}})


def test_splits_by_a_table_column() -> None:
    fields = [FieldRule("images/*.jpg", "jpg")]
    splits = SplitRule(names=("train", "validation"), paths=(), rest="other", member="split", values=("train", "val"))
    layout = parse_layout(
        {"tables": [{"path": "images/metadata.csv", "members": [{"column": "split", "name": "split"}]}]}
    )
    grouper = Grouper(fields, None, ["jpg"], splits, layout)
    records = [
        r for raw in files("images/a.jpg", "images/b.jpg", "images/c.jpg", "images/d.jpg") for r in grouper.records(raw)
    ]
    for key, value in (("a", "train"), ("b", "val"), ("c", "test")):
        record = value_record(key, "split", value)
        assert record is not None
        records.append(record)
    samples = [s for g in groups_from_records(sorted(records), grouper.names) if (s := grouper.judge(g))]
    assert [(s.key, s.split) for s in samples] == [("a", "train"), ("b", "validation"), ("c", "other"), ("d", "other")]
    spec = parse_spec(
        _spec(
            {"fields": [{"pattern": "images/*.jpg", "name": "jpg"}], **{"tables": [{"path": "images/metadata.csv",
             "members": [{"column": "split", "name": "split"}]}]}},
            {"member": "split", "sets": [{"name": "train"}, {"name": "validation", "value": "val"}]},
        ),
        name="ds",
        default_endpoint="http://ais:51080",
    )  # fmt: skip
    assert spec.splits is not None and [(s.name, s.value) for s in spec.splits.sets] == [
        ("train", "train"),
        ("validation", "val"),
    ]
    by_kind = {"member": "kind", "sets": [{"name": "a"}, {"name": "b"}]}
    with pytest.raises(SpecError, match=r"spec\.splits\.member: 'kind' is not a value member"):
        parse_spec(
            _spec({"fields": [{"pattern": "images/*.jpg", "name": "jpg"}]}, by_kind),
            name="ds",
            default_endpoint="http://ais:51080",
        )


def test_table_rows_become_value_records_of_the_file_they_name() -> None:
    import io
    import json
    from collections import Counter

    from sharded_dataset_operator.pods.metadata import table_records

    layout = parse_layout(
        {"tables": [{"path": "images/metadata.jsonl", "members": [{"column": "text", "name": "txt"}]}]}
    )
    grouper = Grouper([FieldRule("images/*.jpg", "jpg")], None, ["jpg", "txt"], layout=layout)
    lines = [
        {"file_name": "./0001.jpg", "text": "one"},
        {"file_name": "0002.jpg", "text": "two"},
        {"file_name": "notes.txt", "text": "no field matches"},
        {"text": "no join"},
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    counts: Counter[str] = Counter()
    stream = io.BytesIO(data)
    records = list(table_records(grouper, layout.tables[0], stream, counts, None, "b-", 1 << 20))  # type: ignore[arg-type]
    assert records == [value_record("0001", "txt", "one"), value_record("0002", "txt", "two")]
    assert counts == {"no-field": 1, "no-join-value": 1}
