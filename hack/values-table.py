#!/usr/bin/env python3
"""Markdown table of the chart's values, from the `# -- description` comments in values.yaml.

A comment block starting with `# --` right above a key documents that key (continuation lines are the
following `#` lines); keys without one are not listed (their documented children are).

Usage:
  hack/values-table.py                    print the table
  hack/values-table.py --update FILE      replace the table between the markers in FILE
  hack/values-table.py --check FILE       exit 1 if FILE's table is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
VALUES = REPO / "charts" / "sharded-dataset-operator" / "values.yaml"
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"

KEY_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(\s|$)")
DOC_RE = re.compile(r"^ *# -- ?(?P<text>.*)$")
MORE_RE = re.compile(r"^ *#(?: (?P<text>.*))?$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a `# --` comment, in file order."""
    rows: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    doc: list[str] | None = None
    for line in text.splitlines():
        if m := DOC_RE.match(line):
            doc = [m["text"].strip()]
            continue
        if doc is not None and (m := MORE_RE.match(line)):
            doc.append((m["text"] or "").strip())
            continue
        if m := KEY_RE.match(line):
            indent = len(m["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m["key"]))
            if doc is not None:
                rows.append((".".join(k for _, k in stack), " ".join(d for d in doc if d)))
        doc = None  # a blank line or anything else ends a pending comment
    return rows


def lookup(values: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(values_path: Path = VALUES) -> str:
    text = values_path.read_text()
    values = yaml.safe_load(text)
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for key, description in documented_keys(text):
        value = lookup(values, key)
        default = json.dumps(value, separators=(", ", ": ")) if not isinstance(value, str) else json.dumps(value)
        lines.append(f"| `{key}` | {type_name(value)} | `{cell(default)}` | {cell(description)} |")
    return "\n".join(lines) + "\n"


def embed(document: str, rendered: str) -> str:
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"markers {START} ... {END} not found")
    return document[: start + len(START)] + "\n" + rendered + document[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--update", type=Path, metavar="FILE")
    group.add_argument("--check", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    rendered = table()
    if args.update:
        args.update.write_text(embed(args.update.read_text(), rendered))
    elif args.check:
        if embed(args.check.read_text(), rendered) != args.check.read_text():
            print(f"{args.check}: values table out of date; run hack/values-table.py --update {args.check}")
            return 1
    else:
        sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
