"""One-line JSON as the plan, membership and sort records write it: compact, UTF-8 kept as is.

The encoders are built once: `json.dumps` with any option builds a new encoder per call, which at ImageNet's
1.33 M samples (three lines each) was 4 % of the planner's CPU.
"""

from __future__ import annotations

import json
import re

compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""`json.dumps(value, ensure_ascii=False, separators=(",", ":"))`"""

compact_sorted = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
"""The same with object keys sorted."""

_ESCAPED = re.compile(r'[\x00-\x1f"\\]')


def string(text: str) -> str:
    """`compact(text)` for a string, without the encoder when nothing in it needs escaping (the common case:
    the planner writes three JSON lines per sample, and the encoder call was a sixth of its CPU)."""
    return f'"{text}"' if _ESCAPED.search(text) is None else compact(text)
