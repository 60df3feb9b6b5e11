"""The sortable records the planner's external sort brings together per key (pure logic, no I/O).

Grouping is done in two halves: every listed file is classified on its own (`samples.Grouper.classify`:
unmatched, rejected, or (key, member)), and every key is judged on its own (`samples.Grouper.judge`) once all
of its files and values are known. In between, the files and values of a key must be brought together:
`samples.group_samples` does it with a dict (small inputs, tests), the planner with an external sort of these
record strings (any size, flat memory).

A record is ``<key> NUL <kind> NUL <payload>``. Keys hold no control characters (`keys.key_problem`), so
sorting the strings sorts by key first (a key sorts before every key it is a proper prefix of, exactly as plain
string order does), and all records of one key are adjacent. Kinds: ``f<member index>`` a file, ``v<member
name>`` a value, ``s`` a split index (of a split list). A file's class folder and split folder are not records:
they are read from its path when its key is judged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class RawFile(NamedTuple):
    """A raw file: path relative to the dataset root ('/'-separated, no leading '/'), size in bytes, and a tag
    of its content as the listing gives it (an AIS checksum, a file's modification time; "" when unknown).

    A named tuple, not a frozen dataclass: one is made per listed file and per file record read back, and a
    frozen dataclass's constructor cost 5 % of the planner's CPU at ImageNet's count."""

    path: str
    size: int
    tag: str = ""


UNMATCHED = "unmatched"
LABEL_FILE = "label-file"
_SEP = "\0"


@dataclass(slots=True)
class KeyGroup:
    """Everything known about one key: its files by member name, its values, class names and splits."""

    key: str
    files: dict[str, list[RawFile]] = field(default_factory=dict)
    values: dict[str, list[str]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)  # indexes of the split lists or folders that hold the key

    def add_value(self, name: str, value: str) -> None:
        seen = self.values.setdefault(name, [])
        if value not in seen:
            seen.append(value)


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _quote(text: str) -> str:
    """`text` as a JSON string; the common case (nothing to escape) without the json module (a fifth of the
    planner's CPU on 400 k small files went to json.dumps and json.loads of paths)."""
    return f'"{text}"' if not _NEEDS_ESCAPE.search(text) else json.dumps(text, ensure_ascii=False)


def _unquote(quoted: str) -> str:
    """The inverse of `_quote`: a JSON string without a backslash holds its characters literally."""
    return quoted[1:-1] if "\\" not in quoted else str(json.loads(quoted))


def _carries(key: str) -> bool:
    return _SEP not in key and "\n" not in key and "\r" not in key


def file_record(key: str, member_index: int, raw: RawFile) -> str:
    """Sortable record of an accepted field file (member by its index in the deduplicated field names)."""
    return f"{key}{_SEP}f{member_index:02x}{_SEP}{raw.size}{_SEP}{_quote(raw.tag)}{_SEP}{_quote(raw.path)}"


def value_record(key: str, name: str, value: str) -> str | None:
    """Sortable record of a value member (a label, a table column); None for a key no record can carry."""
    return f"{key}{_SEP}v{name}{_SEP}{_quote(value)}" if _carries(key) else None


def split_record(key: str, index: int) -> str | None:
    """Sortable record of a split list's entry or a file's split folder (the key belongs to split `index`)."""
    return f"{key}{_SEP}s{_SEP}{index}" if _carries(key) else None


def groups_from_records(records: Iterable[str], names: Sequence[str]) -> Iterator[KeyGroup]:
    """Key groups from sorted records (identical adjacent records, i.e. a file listed twice, count once)."""
    group: KeyGroup | None = None
    previous = None
    for record in records:
        if record == previous:
            continue
        previous = record
        parts = record.split(_SEP)  # quoted strings hold no NUL: 5 parts for a file, 3 for anything else
        key, kind = parts[0], parts[1]
        if group is None or group.key != key:
            if group is not None:
                yield group
            group = KeyGroup(key)
        if kind[0] == "v":
            group.add_value(kind[1:], _unquote(parts[2]))
        elif kind == "s":
            if int(parts[2]) not in group.splits:
                group.splits.append(int(parts[2]))
        else:
            raw = RawFile(_unquote(parts[4]), int(parts[2]), _unquote(parts[3]))
            group.files.setdefault(names[int(kind[1:], 16)], []).append(raw)
    if group is not None:
        yield group
