"""docs/install.md embeds the values table that hack/values-table.py generates from the chart's values.yaml."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "install.md"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("values_table", REPO / "hack" / "values-table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("values_table", module)
    spec.loader.exec_module(module)
    return module


def test_install_doc_table_is_current() -> None:
    tool = _tool()
    for path in (DOC, REPO / "README.md"):
        doc = path.read_text()
        assert tool.embed(doc, tool.table()) == doc, f"{path.name} is stale: hack/values-table.py --update {path}"


def test_every_leaf_value_is_documented() -> None:
    tool = _tool()
    documented = {key for key, _ in tool.documented_keys(tool.VALUES.read_text())}
    values = yaml.safe_load(tool.VALUES.read_text())

    def leaves(node: object, prefix: str) -> set[str]:
        if prefix in documented or not isinstance(node, dict) or not node:
            return {prefix}
        return set().union(*(leaves(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()))

    assert leaves(values, "") <= documented


def test_parser() -> None:
    tool = _tool()
    text = "a:\n  # -- first\n  # more\n  b: 1\n  c: 2\n# -- top\nd: {}\n"
    assert tool.documented_keys(text) == [("a.b", "first more"), ("d", "top")]
