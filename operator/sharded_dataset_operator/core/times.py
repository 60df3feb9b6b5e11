"""Timestamps (pure): the one place that turns the status's and AIS's time strings into epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # what the operator writes (status, indexes): RFC 3339, UTC, whole seconds


def parse(ts: str) -> float:
    """Epoch seconds of a time the operator wrote; raises ValueError for anything else."""
    return datetime.strptime(ts, FORMAT).replace(tzinfo=UTC).timestamp()


def epoch(value: Any) -> float | None:
    """Epoch seconds of an RFC 3339 time (the operator's, or AIS's with fractions and an offset); None for an
    absent, zero ("0001-01-01...") or unreadable one."""
    if not isinstance(value, str) or not value or value.startswith("0001"):
        return None
    try:
        return parse(value)
    except ValueError:
        pass
    head, _, frac = value.rstrip("Z").partition(".")
    head = head.split("+")[0]
    try:
        return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + (float(f"0.{frac[:6]}") if frac else 0)
    except ValueError:
        return None


def iso(t: float) -> str:
    """The operator's format of epoch seconds (rounded to the second)."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=round(t))).strftime(FORMAT)


def now_iso() -> str:
    return datetime.now(UTC).strftime(FORMAT)
