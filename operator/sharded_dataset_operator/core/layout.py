"""The layout part of `spec.samples` beyond fields and the label table: how keys are derived, classes from the
path, and metadata tables (CSV, TSV, JSON Lines, Parquet, COCO-style annotations). Parsed from the spec, carried
to the planner in the converter configuration (`to_config` / `from_config`), pure data."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from sharded_dataset_operator.core.keys import KEY_MODES, KeyRule, regex_problem
from sharded_dataset_operator.core.tables import FORMATS, TableError, format_of

COCO = "coco"
TABLE_FORMATS = (*FORMATS, COCO)
JOIN_BY = ("path", "key")
MEMBER_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")  # as the CRD's member names


class LayoutError(ValueError):
    """The layout cannot be used as written (the message names the field)."""


@dataclass(frozen=True, slots=True)
class ClassRule:
    """The class of a file is the name of one of its path's folders (`segment`: 0 the first, -2 the parent).
    Written as `index_member` (a number stable across versions) and/or `name_member` (the folder name)."""

    segment: int = -2
    index_member: str | None = "cls"
    name_member: str | None = None

    def members(self) -> list[str]:
        return [n for n in (self.index_member, self.name_member) if n]


@dataclass(frozen=True, slots=True)
class TableMember:
    column: str
    name: str


@dataclass(frozen=True, slots=True)
class TableRule:
    """A metadata table: each row attaches values to the sample its join column names.

    `join_by` "path": the column holds a file's path relative to `prefix` (default: the table's folder, as in
    Hugging Face's folder datasets); "key": it holds the sample key. COCO files always join on the path of each
    image's `file_name` (relative to `prefix`, default the source root)."""

    path: str
    format: str
    join_column: str = "file_name"
    join_by: str = "path"
    prefix: str = ""
    members: tuple[TableMember, ...] = ()
    json_member: str | None = None
    json_columns: tuple[str, ...] = ()
    delimiter: str = ","
    quoting: bool = True
    header: bool = True
    columns: tuple[str, ...] = ()

    def names(self) -> list[str]:
        return [m.name for m in self.members] + ([self.json_member] if self.json_member else [])

    def selected(self) -> tuple[str, ...]:
        """The columns read besides the join column."""
        return tuple(dict.fromkeys([*(m.column for m in self.members), *self.json_columns]))


@dataclass(frozen=True, slots=True)
class Layout:
    key: KeyRule = field(default_factory=KeyRule)
    classes: ClassRule | None = None
    tables: tuple[TableRule, ...] = ()

    def value_members(self) -> list[str]:
        """Members whose content is a value (not a file): class members, then each table's."""
        names = self.classes.members() if self.classes else []
        for t in self.tables:
            names.extend(t.names())
        return names

    def to_config(self) -> dict[str, Any]:
        return {
            "key": {"from": self.key.mode, "regex": self.key.regex},
            "classes": (
                {
                    "segment": self.classes.segment,
                    "indexMember": self.classes.index_member,
                    "nameMember": self.classes.name_member,
                }
                if self.classes
                else None
            ),
            "tables": [
                {
                    "path": t.path,
                    "format": t.format,
                    "join": {"column": t.join_column, "by": t.join_by, "prefix": t.prefix},
                    "members": [{"column": m.column, "name": m.name} for m in t.members],
                    "json": {"name": t.json_member, "columns": list(t.json_columns)} if t.json_member else None,
                    "delimiter": t.delimiter,
                    "quoting": t.quoting,
                    "header": t.header,
                    "columns": list(t.columns),
                }
                for t in self.tables
            ],
        }


def _member_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not MEMBER_NAME.match(value) or value.startswith("__"):
        raise LayoutError(f"{where}: {value!r} is not a member name (e.g. txt, cls, json)")
    return value


def _table(raw: dict[str, Any], i: int) -> TableRule:
    where = f"spec.samples.tables[{i}]"
    path = str(raw.get("path") or "")
    if not path or path.startswith("/"):
        raise LayoutError(f"{where}.path: a path relative to the source root")
    try:
        fmt = format_of(path, raw.get("format") or None)
    except TableError:
        if raw.get("format") == COCO:
            fmt = COCO
        else:
            raise LayoutError(
                f"{where}.format: cannot tell the format of {path!r}; set one of {', '.join(TABLE_FORMATS)}"
            ) from None
    if fmt not in TABLE_FORMATS:
        raise LayoutError(f"{where}.format: one of {', '.join(TABLE_FORMATS)}")
    join = raw.get("join") or {}
    by = str(join.get("by") or "path")
    if by not in JOIN_BY:
        raise LayoutError(f"{where}.join.by: path or key")
    default_prefix = "" if fmt == COCO else posixpath.dirname(path)
    prefix = str(join["prefix"]) if join.get("prefix") is not None else default_prefix
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    members = tuple(
        TableMember(column=str(m.get("column") or ""), name=_member_name(m.get("name"), f"{where}.members[{j}].name"))
        for j, m in enumerate(raw.get("members") or [])
    )
    if any(not m.column for m in members):
        raise LayoutError(f"{where}.members[].column: required")
    js = raw.get("json") or None
    json_member = _member_name(js.get("name") or "json", f"{where}.json.name") if js is not None else None
    json_columns = tuple(str(c) for c in (js.get("columns") or [])) if js is not None else ()
    if fmt == COCO:
        if members or json_member is None or json_columns or by != "path":
            raise LayoutError(f"{where}: a COCO file gives one JSON member per image: set only json.name")
    elif not members and json_member is None:
        raise LayoutError(f"{where}: choose columns as members (members) or as one JSON member (json)")
    elif json_member is not None and not json_columns:
        raise LayoutError(f"{where}.json.columns: name the columns that go into the JSON member")
    delimiter = str(raw.get("delimiter") or ("\t" if fmt == "tsv" else ","))
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise LayoutError(f"{where}.delimiter: one character (not a quote or a line end)")
    header = bool(raw.get("header", True))
    columns = tuple(str(c) for c in (raw.get("columns") or []))
    if fmt in ("csv", "tsv") and not header and not columns:
        raise LayoutError(f"{where}.columns: a table without a header needs its column names")
    join_column = str(join.get("column") or ("file_name" if by == "path" else ""))
    if not join_column:
        raise LayoutError(f"{where}.join.column: required when joining by the key")
    named = columns if fmt in ("csv", "tsv") and not header else ()
    for c in (join_column, *(m.column for m in members), *json_columns):
        if named and c not in named:
            raise LayoutError(f"{where}: column {c!r} is not among columns ({', '.join(named)})")
    return TableRule(
        path=path,
        format=fmt,
        join_column=join_column if fmt != COCO else "file_name",
        join_by=by,
        prefix=prefix,
        members=members,
        json_member=json_member,
        json_columns=json_columns,
        delimiter=delimiter,
        quoting=bool(raw.get("quoting", True)),
        header=header,
        columns=columns,
    )


def parse_layout(samples: dict[str, Any]) -> Layout:
    """The layout of `spec.samples` (key, classes, tables); LayoutError names the field."""
    key_raw = samples.get("key") or {}
    mode = str(key_raw.get("from") or "basename")
    if mode not in KEY_MODES:
        raise LayoutError(f"spec.samples.key.from: one of {', '.join(KEY_MODES)}")
    regex = key_raw.get("regex")
    if mode == "regex":
        problem = regex_problem(str(regex or ""))
        if problem is not None:
            raise LayoutError(f"spec.samples.key.regex: {problem}")
    elif regex:
        raise LayoutError("spec.samples.key.regex: only with key.from: regex")
    classes = None
    cl = samples.get("classes")
    if cl is not None:
        segment = int(cl.get("segment", -2))
        name_member = cl.get("nameMember")
        index_member = cl.get("indexMember") or (None if name_member else "cls")
        classes = ClassRule(
            segment=segment,
            index_member=_member_name(index_member, "spec.samples.classes.indexMember") if index_member else None,
            name_member=_member_name(name_member, "spec.samples.classes.nameMember") if name_member else None,
        )
        if not classes.members():
            raise LayoutError("spec.samples.classes: set indexMember, nameMember or both")
        if segment == -1:
            raise LayoutError("spec.samples.classes.segment: -1 is the file name; -2 is its folder")
    tables = tuple(_table(t, i) for i, t in enumerate(samples.get("tables") or []))
    return Layout(key=KeyRule(mode=mode, regex=str(regex) if mode == "regex" else None), classes=classes, tables=tables)


def from_config(config: dict[str, Any]) -> Layout:
    """The layout of a converter configuration (`to_config`); a configuration without one is the default."""
    raw = config.get("layout") or {}
    samples: dict[str, Any] = {"key": raw.get("key") or {}, "classes": raw.get("classes"), "tables": []}
    for t in raw.get("tables") or []:
        samples["tables"].append({**t, "json": t.get("json")})
    return parse_layout(samples)
