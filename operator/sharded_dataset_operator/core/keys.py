"""Which files a field pattern matches and the sample key a file gets (pure logic, no I/O).

Patterns are globs relative to the source root: `*`, `?` and `[...]` never cross '/', and a `**` segment matches
any number of directories (none included). The key of a file is, by `KeyRule.mode`:

* ``basename`` (the default): the file's base name without the pattern's extension (`derive_key`);
* ``path``: its path relative to the source root without that extension (``cat/1`` for ``cat/1.jpg``), so files
  with the same name in different folders stay distinct samples;
* ``regex``: the named group ``key`` of a regular expression matched against the whole relative path.

Keys are never rewritten: a key `key_problem` refuses rejects that one file.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

KEY_MODES = ("basename", "path", "regex")
_BAD_KEY_CHAR = re.compile(r"[/\\\x00-\x1f\x7f]")
_BAD_PATH_KEY_CHAR = re.compile(r"[\\\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class KeyRule:
    """How a file's sample key is derived (`spec.samples.key`)."""

    mode: str = "basename"
    regex: str | None = None

    def compiled(self) -> re.Pattern[str] | None:
        return re.compile(self.regex) if self.mode == "regex" and self.regex else None


def regex_problem(regex: str) -> str | None:
    """Why `regex` cannot be a key expression (not valid, or no named group ``key``), or None."""
    try:
        compiled = re.compile(regex)
    except re.error as e:
        return f"not a valid regular expression: {e}"
    if "key" not in compiled.groupindex:
        return "needs a named group 'key', e.g. (?P<key>[^/]+)_left\\.png"
    return None


def _bracket_end(glob: str, i: int) -> int:
    """The index of the ']' that closes the '[' at `i` (a ']' first in the class is a member), or -1 when it is
    unterminated (then the '[' is a literal character, as in fnmatch)."""
    j = i + 1
    if j < len(glob) and glob[j] == "!":
        j += 1
    if j < len(glob) and glob[j] == "]":
        j += 1
    j = glob.find("]", j)
    return j


def _segment_regex(segment: str) -> str:
    """One '/'-free glob segment as a regular expression."""
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        c = segment[i]
        if c == "*":
            while i + 1 < n and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = _bracket_end(segment, i)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = segment[i + 1 : j]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\").replace("^", "\\^")
                out.append(f"[{'^/' if negate else ''}{body}]" if negate else f"(?!/)[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The compiled form of a field pattern, matched against a whole relative path."""
    parts = pattern.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append("(?:[^/]+/)*[^/]+" if last else "(?:[^/]+/)*")
        else:
            out.append(_segment_regex(part) + ("" if last else "/"))
    return re.compile("".join(out), re.DOTALL)


def match_pattern(path: str, pattern: str) -> bool:
    """Case-sensitive glob match of a whole relative path (see the module docstring)."""
    return glob_regex(pattern).fullmatch(path) is not None


def _glob_length(glob: str) -> int:
    """Number of characters matched by a glob without '*' ('?', '[...]' and literals match one each)."""
    count = 0
    i = 0
    while i < len(glob):
        j = _bracket_end(glob, i) if glob[i] == "[" else -1
        i = j + 1 if j >= 0 else i + 1
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


def stem_of(pattern: str) -> Callable[[str], str]:
    """`derive_key` with its pattern fixed: what depends on the pattern alone is worked out once (the planner
    calls it once per listed file)."""
    pattern_base = posixpath.basename(pattern)
    star = pattern_base.rfind("*")
    suffix = pattern_base[star + 1 :]
    splitext = posixpath.splitext

    if star < 0 or star == len(pattern_base) - 1:
        return lambda path: splitext(path[path.rfind("/") + 1 :])[0]
    if "?" in suffix or "[" in suffix:
        n = _glob_length(suffix)
        return lambda path: (base := path[path.rfind("/") + 1 :])[: len(base) - n]
    cut = len(suffix)

    def stem(path: str) -> str:
        base = path[path.rfind("/") + 1 :]
        return base[:-cut] if base.endswith(suffix) else splitext(base)[0]

    return stem


def key_problem(key: str, nested: bool = False) -> str | None:
    """None for a valid WebDataset key, else ``empty-key``, ``dot-in-key`` or ``bad-char-in-key``.

    A base-name key holds no '/'. A `nested` key (path and regex keys) may: its segments are non-empty and not
    '.' or '..', and only its last segment must be free of '.' (a reader splits a member name at the first '.'
    after the last '/').
    """
    if not key:
        return "empty-key"
    if not nested:
        if "." in key:
            return "dot-in-key"
        return "bad-char-in-key" if _BAD_KEY_CHAR.search(key) else None
    if _BAD_PATH_KEY_CHAR.search(key):
        return "bad-char-in-key"
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "bad-char-in-key"
    return "dot-in-key" if "." in segments[-1] else None


def key_of(path: str, pattern: str, rule: KeyRule, regex: re.Pattern[str] | None = None) -> str | None:
    """The key of a file that `pattern` matched, by `rule`; None when a regex rule does not match the path."""
    if rule.mode == "path":
        stem = derive_key(path, pattern)
        folder = posixpath.dirname(path)
        return f"{folder}/{stem}" if folder else stem
    if rule.mode == "regex":
        m = (regex or rule.compiled() or re.compile("")).fullmatch(path)
        return None if m is None or m.group("key") is None else m.group("key")
    return derive_key(path, pattern)


def key_function(pattern: str, rule: KeyRule, regex: re.Pattern[str] | None = None) -> Callable[[str], str | None]:
    """`key_of` with its pattern and rule fixed (see `stem_of`)."""
    if rule.mode == "regex":
        return lambda path: key_of(path, pattern, rule, regex)
    stem = stem_of(pattern)
    if rule.mode == "path":

        def nested(path: str) -> str:
            folder = posixpath.dirname(path)
            return f"{folder}/{stem(path)}" if folder else stem(path)

        return nested
    return stem
