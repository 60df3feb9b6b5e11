"""Grouping raw dataset files into WebDataset samples (pure logic, no I/O).

Contract of :func:`group_samples` (user-facing):

* Paths are relative to the dataset root, '/'-separated. The label file's own path is never matched
  against field patterns. A file matching no field pattern counts in ``unmatched_files``; a file matching
  several patterns belongs to the first matching field (in ``fields`` order).
* A file's sample key is :func:`derive_key` of its path and field pattern. Keys are never rewritten: a key
  that :func:`key_problem` refuses (empty, contains '.', '/', '\\' or control characters; this catches junk
  such as ``._Abyssinian_1.png``) rejects that one file (``rejected_files["invalid-key"]``). A rejected
  file does not make any other sample incomplete.
* Two different raw files with the same key and member name skip the sample as ``duplicate:<name>``;
  one of them is never picked silently.
* A label comes from the label table by key. A key listed with different values is treated as having no
  label; when the label is required the reason is ``conflicting:<label name>``.
* Required names are checked in order and the first failure is the single skip reason:
  ``missing:<name>`` (file or label absent) or ``empty:<name>`` (0-byte file or empty label value).
* Empty optional members are dropped, the sample is still written.
* Only keys with at least one accepted field file form samples; label keys without any file are counted in
  ``labels_without_files``.
* ``samples`` is sorted by key and the result does not depend on input order. ``examples`` keeps the
  5 smallest keys (skips) or paths (rejections) per reason.
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

MAX_EXAMPLES = 5
INVALID_KEY = "invalid-key"
_BAD_KEY_CHAR = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class RawFile:
    """A raw file: path relative to the dataset root ('/'-separated, no leading '/'), size in bytes, and a tag
    of its content as the listing gives it (an AIS checksum, a file's modification time; "" when unknown)."""

    path: str
    size: int
    tag: str = ""


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Files matching ``pattern`` become member ``<key>.<name>`` of their sample."""

    pattern: str
    name: str


@dataclass(frozen=True, slots=True)
class LabelRule:
    """Labels read from the whitespace-separated table file ``path``; written as member ``<key>.<name>``."""

    path: str
    key_column: int
    value_column: int
    name: str


@dataclass(frozen=True, slots=True)
class SplitRule:
    """Splits by list files: key `k` belongs to split `names[i]` when list file `paths[i]` names it (column
    `key_column`); a key in no list goes to `rest`, or is skipped as `not-in-split` without one; a key in two
    lists is an overlap (counted with examples; the planner refuses the run)."""

    names: tuple[str, ...]
    paths: tuple[str, ...]
    key_column: int = 0
    rest: str | None = None


NOT_IN_SPLIT = "not-in-split"


@dataclass(frozen=True, slots=True)
class Sample:
    """A complete sample: ``files`` is sorted by member name; ``label`` is None when absent or optional;
    ``split`` is the split it belongs to (None without splits)."""

    key: str
    files: tuple[tuple[str, RawFile], ...]
    label: str | None
    split: str | None = None

    def members(self) -> dict[str, RawFile]:
        """Member name -> raw file."""
        return dict(self.files)


@dataclass(frozen=True, slots=True)
class LabelTable:
    """Parsed label file: key -> value (first value wins), malformed line count, conflicting keys."""

    values: dict[str, str]
    malformed_lines: int = 0
    conflicts: frozenset[str] = frozenset()


@dataclass(slots=True)
class GroupResult:
    """Outcome of :func:`group_samples`; see the module docstring for the meaning of each counter."""

    samples: list[Sample] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    rejected_files: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    unmatched_files: int = 0
    labels_without_files: int = 0
    split_keys_without_files: int = 0  # keys a split list names that have no field file
    split_overlaps: int = 0  # keys named by more than one split list
    overlap_examples: list[str] = field(default_factory=list)  # "key (split, split)", at most MAX_EXAMPLES


def match_pattern(path: str, pattern: str) -> bool:
    """Case-sensitive glob match where wildcards never cross '/' and segment counts must be equal."""
    parts = path.split("/")
    pattern_parts = pattern.split("/")
    if len(parts) != len(pattern_parts):
        return False
    return all(fnmatch.fnmatchcase(p, pp) for p, pp in zip(parts, pattern_parts, strict=True))


def _glob_length(glob: str) -> int:
    """Number of characters matched by a glob without '*' ('?', '[...]' and literals match one each)."""
    count = 0
    i = 0
    n = len(glob)
    while i < n:
        if glob[i] == "[":
            j = i + 1
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            # An unterminated '[' is a literal character, as in fnmatch.
            i = j + 1 if j < n else i + 1
        else:
            i += 1
        count += 1
    return count


def derive_key(path: str, pattern: str) -> str:
    """Basename of ``path`` minus the pattern's extension (the text after the last '*' of its basename).

    Without a '*' in the pattern basename, or when it ends in '*', the last ``.ext`` is stripped. If the text
    after the last '*' holds '?' or '[...]', as many characters are stripped as it matches.
    """
    base = posixpath.basename(path)
    pattern_base = posixpath.basename(pattern)
    star = pattern_base.rfind("*")
    if star < 0 or star == len(pattern_base) - 1:
        return posixpath.splitext(base)[0]
    suffix = pattern_base[star + 1 :]
    if "?" in suffix or "[" in suffix:
        return base[: len(base) - _glob_length(suffix)]
    if base.endswith(suffix):
        return base[: -len(suffix)]
    return posixpath.splitext(base)[0]


def key_problem(key: str) -> str | None:
    """None for a valid WebDataset key, else ``empty-key``, ``dot-in-key`` or ``bad-char-in-key``."""
    if not key:
        return "empty-key"
    if "." in key:
        return "dot-in-key"
    if _BAD_KEY_CHAR.search(key):
        return "bad-char-in-key"
    return None


def label_entries(lines: Iterable[str], key_column: int, value_column: int) -> Iterator[tuple[str, str] | None]:
    """(key, value) per data line of a whitespace-separated label table, None per malformed line.

    '#' comment lines and blank lines are skipped. Streaming: the table is never held in memory.
    """
    if key_column < 0 or value_column < 0:
        raise ValueError("label columns must be >= 0")
    needed = max(key_column, value_column) + 1
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        columns = stripped.split()
        if len(columns) < needed:
            yield None
            continue
        yield columns[key_column], columns[value_column]


def parse_labels(text: str, key_column: int, value_column: int) -> LabelTable:
    """Parse a whitespace-separated label table into memory ('#' comment lines and blank lines skipped)."""
    values: dict[str, str] = {}
    conflicts: set[str] = set()
    malformed = 0
    for entry in label_entries(text.splitlines(), key_column, value_column):
        if entry is None:
            malformed += 1
            continue
        key, value = entry
        previous = values.setdefault(key, value)
        if previous != value:
            conflicts.add(key)
    return LabelTable(values=values, malformed_lines=malformed, conflicts=frozenset(conflicts))


def default_required(fields: Sequence[FieldRule], label: LabelRule | None) -> list[str]:
    """Every field name (in order, without repeats), then the label name."""
    names = list(dict.fromkeys(f.name for f in fields))
    if label is not None:
        names.append(label.name)
    return names


def partition_range(n: int, workers: int, index: int) -> tuple[int, int]:
    """Contiguous ``[start, end)`` slice of ``n`` sorted samples for worker ``index`` of ``workers``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not 0 <= index < workers:
        raise ValueError(f"index must be in [0, {workers}), got {index}")
    return index * n // workers, (index + 1) * n // workers


def partition(keys: Sequence[str], workers: int, index: int) -> tuple[int, int]:
    """Contiguous ``[start, end)`` slice of the sorted ``keys`` for worker ``index`` of ``workers``."""
    return partition_range(len(keys), workers, index)


class _Tally:
    """Reason counters plus the smallest few examples per reason."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES or example < kept[-1]:
            bisect.insort(kept, example)
            del kept[MAX_EXAMPLES:]


def _validate(
    fields: Sequence[FieldRule], label: LabelRule | None, required: Sequence[str]
) -> tuple[list[str], set[str]]:
    names = list(dict.fromkeys(f.name for f in fields))
    for name in names:
        if not name or "/" in name:
            raise ValueError(f"invalid member name {name!r}")
    known = set(names)
    if label is not None:
        if not label.name or "/" in label.name:
            raise ValueError(f"invalid label name {label.name!r}")
        if label.name in known:
            raise ValueError(f"label name {label.name!r} is also a field name")
        known.add(label.name)
    unknown = [r for r in required if r not in known]
    if unknown:
        raise ValueError(f"required names are neither fields nor the label: {unknown}")
    return names, set(required)


# ------------------------------------------------------------------------------------------ streaming grouping
#
# Grouping is done in two halves that both paths share: every listed file is classified on its own
# (`Grouper.classify`: unmatched, rejected, or (key, member)), and every key is judged on its own
# (`Grouper.judge`) once all of its files and label entries are known. In between, the files and label
# entries of a key must be brought together: `group_samples` does it with a dict (small inputs, tests),
# the planner with an external sort of `file_record`/`label_record` strings (any size, flat memory).
#
# A record is ``<key> NUL <kind> NUL <payload>``. Keys hold no control characters (`key_problem`), so
# sorting the strings sorts by key first (a key sorts before every key it is a proper prefix of, exactly
# as plain string order does), and all records of one key are adjacent.

UNMATCHED = "unmatched"
LABEL_FILE = "label-file"
_SEP = "\0"


@dataclass(slots=True)
class KeyGroup:
    """Everything known about one key: its files by member name, and its label value(s)."""

    key: str
    files: dict[str, list[RawFile]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)  # indexes of the split lists that name the key


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _quote(text: str) -> str:
    """`text` as a JSON string; the common case (nothing to escape) without the json module (a fifth of the
    planner's CPU on 400 k small files went to json.dumps and json.loads of paths)."""
    return f'"{text}"' if not _NEEDS_ESCAPE.search(text) else json.dumps(text, ensure_ascii=False)


def _unquote(quoted: str) -> str:
    """The inverse of `_quote`: a JSON string without a backslash holds its characters literally."""
    return quoted[1:-1] if "\\" not in quoted else str(json.loads(quoted))


def file_record(key: str, member_index: int, raw: RawFile) -> str:
    """Sortable record of an accepted field file (member by its index in the deduplicated field names)."""
    return f"{key}{_SEP}f{member_index:02x}{_SEP}{raw.size}{_SEP}{_quote(raw.tag)}{_SEP}{_quote(raw.path)}"


def label_record(key: str, value: str) -> str | None:
    """Sortable record of a label-table entry; None for a key no record can carry (NUL or newline)."""
    if _SEP in key or "\n" in key or "\r" in key:
        return None
    return f"{key}{_SEP}l{_SEP}{json.dumps(value, ensure_ascii=False)}"


def split_record(key: str, index: int) -> str | None:
    """Sortable record of a split list's entry (the key belongs to split `index`)."""
    if _SEP in key or "\n" in key or "\r" in key:
        return None
    return f"{key}{_SEP}s{_SEP}{index}"


def groups_from_records(records: Iterable[str], names: Sequence[str]) -> Iterator[KeyGroup]:
    """Key groups from sorted records (identical adjacent records, i.e. a file listed twice, count once)."""
    group: KeyGroup | None = None
    previous = None
    for record in records:
        if record == previous:
            continue
        previous = record
        key, kind, payload = record.split(_SEP, 2)
        if group is None or group.key != key:
            if group is not None:
                yield group
            group = KeyGroup(key)
        if kind == "l":
            value = json.loads(payload)
            if value not in group.labels:
                group.labels.append(value)
        elif kind == "s":
            if int(payload) not in group.splits:
                group.splits.append(int(payload))
        else:
            size, tag, path = payload.split(_SEP, 2)
            raw = RawFile(_unquote(path), int(size), _unquote(tag))
            group.files.setdefault(names[int(kind[1:], 16)], []).append(raw)
    if group is not None:
        yield group


class Grouper:
    """The grouping rules of the module docstring, applied one file and one key at a time.

    Counters and examples accumulate in `result` (whose `samples` stays empty: samples are returned by
    `judge` to whoever streams them). Memory is the counters plus 5 examples per reason.
    """

    def __init__(
        self,
        fields: Sequence[FieldRule],
        label: LabelRule | None,
        required: Sequence[str],
        splits: SplitRule | None = None,
    ) -> None:
        self.names, self.required_set = _validate(fields, label, required)
        self.splits = splits
        self._list_files = set(splits.paths) if splits is not None else set()
        self.fields = list(fields)
        self.label = label
        self.required = list(required)
        self.result = GroupResult()
        self._rejected = _Tally()
        self._skipped = _Tally()
        self._index = {name: i for i, name in enumerate(self.names)}
        # `match_pattern`, compiled once per rule: a regex per '/'-separated segment
        self._segments = [(f, [re.compile(fnmatch.translate(s)) for s in f.pattern.split("/")]) for f in fields]

    def _rule(self, path: str) -> FieldRule | None:
        parts = path.split("/")
        for rule, segments in self._segments:
            if len(segments) == len(parts) and all(seg.match(p) for seg, p in zip(segments, parts, strict=True)):
                return rule
        return None

    def classify(self, raw: RawFile) -> tuple[str, int] | str:
        """(key, member index) of an accepted file; else UNMATCHED, INVALID_KEY (counted) or LABEL_FILE."""
        if (self.label is not None and raw.path == self.label.path) or raw.path in self._list_files:
            return LABEL_FILE
        rule = self._rule(raw.path)
        if rule is None:
            self.result.unmatched_files += 1
            return UNMATCHED
        key = derive_key(raw.path, rule.pattern)
        if key_problem(key) is not None:
            self._rejected.add(INVALID_KEY, raw.path)
            return INVALID_KEY
        return key, self._index[rule.name]

    def record(self, raw: RawFile) -> str | None:
        """The sortable record of an accepted file, None for any other (counted by `classify`)."""
        verdict = self.classify(raw)
        if isinstance(verdict, str):
            return None
        return file_record(verdict[0], verdict[1], raw)

    def judge(self, group: KeyGroup) -> Sample | None:
        """The sample of a key, or None when it is skipped (counted by reason) or has no field file."""
        label = self.label
        if not group.files:
            if label is not None and group.labels:
                self.result.labels_without_files += 1
            if group.splits:
                self.result.split_keys_without_files += 1
            return None
        found = group.files
        reason = next((f"duplicate:{n}" for n in self.names if len(found.get(n, ())) > 1), None)
        conflicting = len(group.labels) > 1
        value = None if conflicting or not group.labels else group.labels[0]
        if reason is None:
            for name in self.required:
                if label is not None and name == label.name:
                    if conflicting:
                        reason = f"conflicting:{name}"
                    elif value is None:
                        reason = f"missing:{name}"
                    elif value == "":
                        reason = f"empty:{name}"
                else:
                    raw_files = found.get(name)
                    if not raw_files:
                        reason = f"missing:{name}"
                    elif raw_files[0].size == 0:
                        reason = f"empty:{name}"
                if reason is not None:
                    break
        split = None
        if reason is None and self.splits is not None:
            rule = self.splits
            if len(group.splits) > 1:
                self.result.split_overlaps += 1
                if len(self.result.overlap_examples) < MAX_EXAMPLES:
                    names = ", ".join(rule.names[i] for i in sorted(group.splits))
                    self.result.overlap_examples.append(f"{group.key} ({names})")
                return None
            if group.splits:
                split = rule.names[group.splits[0]]
            elif rule.rest is not None:
                split = rule.rest
            else:
                reason = NOT_IN_SPLIT
        if reason is not None:
            self._skipped.add(reason, group.key)
            return None
        # Required members are non-empty here; empty optional ones are dropped.
        members = tuple((name, found[name][0]) for name in sorted(found) if found[name][0].size > 0)
        if label is not None and value == "" and label.name not in self.required_set:
            value = None
        return Sample(key=group.key, files=members, label=value if label is not None else None, split=split)

    def finish(self) -> GroupResult:
        """The counters and examples (call once every key was judged)."""
        self.result.skipped = dict(sorted(self._skipped.counts.items()))
        self.result.rejected_files = dict(sorted(self._rejected.counts.items()))
        self.result.examples = dict(sorted({**self._skipped.examples, **self._rejected.examples}.items()))
        return self.result


def group_samples(
    files: Iterable[RawFile],
    fields: Sequence[FieldRule],
    label: LabelRule | None,
    labels: LabelTable | None,
    required: Sequence[str],
) -> GroupResult:
    """Group raw files into complete samples in memory; see the module docstring for the exact rules."""
    grouper = Grouper(fields, label, required)
    groups: dict[str, KeyGroup] = {}
    for raw in files:
        verdict = grouper.classify(raw)
        if isinstance(verdict, str):
            continue
        key, index = verdict
        bucket = groups.setdefault(key, KeyGroup(key)).files.setdefault(grouper.names[index], [])
        if raw not in bucket:
            bucket.append(raw)
    if label is not None and labels is not None:
        for key, value in labels.values.items():
            group = groups.setdefault(key, KeyGroup(key))
            group.labels.append(value)
            if key in labels.conflicts:
                group.labels.append(value + "\0conflict")  # a second, different value
    samples = [s for key in sorted(groups) if (s := grouper.judge(groups[key])) is not None]
    result = grouper.finish()
    result.samples = samples
    return result
