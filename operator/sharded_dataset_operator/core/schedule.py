"""Scheduled refresh (pure): cron expressions, their ticks, and what a check of the source at a tick means.

`spec.refresh.schedule` is a five-field cron expression (minute hour day-of-month month day-of-week, with `*`,
ranges, lists, steps and the names jan..dec, sun..sat; or a macro such as `@daily`), read in
`spec.refresh.timeZone` (an IANA zone, default UTC). At each tick the operator lists the source once and
compares the listing's fingerprint (`core.fingerprint`) with the one the published version was planned from:

    tick ──► listing fingerprint == published version's ──► nothing built (status.refresh.changed: false)
                                 != (or the version has none) ──► refresh annotation `scheduled-<tick>`:
                                                                   a new version, built and guarded as any other

A check that cannot list the source is never taken for "unchanged": it is retried (`RETRY_SECONDS`) and said
in `status.refresh.message`, and nothing is built on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sharded_dataset_operator.core.naming import version_id
from sharded_dataset_operator.core.times import FORMAT

RETRY_SECONDS = 30.0
SCHEDULED_PREFIX = "scheduled-"  # the refresh annotation's value for a version a tick asked for

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names); day-of-week 7 is Sunday as well
FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()), ("month", 1, 12, MONTHS),
          ("day of week", 0, 7, DAYS))  # fmt: skip
_TERM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?$")
_DAYS_IN = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # a month's most days (leap years included)


class ScheduleError(ValueError):
    """The expression or time zone does not parse, or the schedule never fires."""


@dataclass(frozen=True, slots=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is `*`
    any_weekday: bool  # day of week is `*`

    def day_matches(self, d: datetime) -> bool:
        """cron's rule: with both day fields restricted, either may match."""
        in_month, in_week = d.day in self.days, (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week


def _value(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text in names:
        return names.index(text) + (1 if field == "month" else 0)
    if not text.isdigit() or not low <= int(text) <= high:
        raise ScheduleError(f"{field}: {text!r} is not within {low}..{high}")
    return int(text)


def _field(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    out: set[int] = set()
    for term in text.split(","):
        m = _TERM.match(term)
        if not m:
            raise ScheduleError(f"{field}: {term!r} is not *, a value, a range a-b or one with a step /n")
        span, step = m.group(1), int(m.group(2) or 1)
        if step < 1:
            raise ScheduleError(f"{field}: a step must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, b = span.split("-")
            first, last = _value(a, field, low, high, names), _value(b, field, low, high, names)
            if first > last:
                raise ScheduleError(f"{field}: range {span} runs backwards")
        else:
            first = _value(span, field, low, high, names)
            last = high if m.group(2) else first  # `a/n`: from a to the highest value, every n
        out.update(range(first, last + 1, step))
    return frozenset(out)


def parse_cron(expression: str) -> Cron:
    """A cron expression (five fields or a macro); raises ScheduleError saying which part is wrong."""
    text = MACROS.get(expression.strip().lower(), expression.strip().lower())
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleError(f"{expression!r} has {len(parts)} fields; cron needs five: minute hour day month weekday")
    values = [_field(p, *f) for p, f in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[4])
    cron = Cron(expression, values[0], values[1], values[2], values[3], weekdays, parts[2] == "*", parts[4] == "*")
    if cron.any_weekday and not any(d <= _DAYS_IN[m - 1] for m in cron.months for d in cron.days):
        raise ScheduleError(f"{expression!r} never fires (no selected month has the selected day)")
    return cron


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from e


def next_tick(cron: Cron, after: datetime, tz: ZoneInfo) -> datetime:
    """The first tick strictly after `after` (aware), in UTC. Local times a DST change skips fire at the
    same wall time as the zone maps them; a repeated hour fires once."""
    local = after.astimezone(tz).replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
    limit = local + timedelta(days=366 * 5)
    while local < limit:
        if local.month not in cron.months:
            local = (local.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0)
        elif not cron.day_matches(local):
            local = (local + timedelta(days=1)).replace(hour=0, minute=0)
        elif local.hour not in cron.hours:
            local = (local + timedelta(hours=1)).replace(minute=0)
        elif local.minute not in cron.minutes:
            local += timedelta(minutes=1)
        else:
            tick = local.replace(tzinfo=tz).astimezone(UTC)
            if tick > after:
                return tick
            local += timedelta(minutes=1)
    raise ScheduleError(f"{cron.expression!r} does not fire within five years")


@dataclass(frozen=True, slots=True)
class RefreshSchedule:
    """spec.refresh: the parsed schedule."""

    expression: str
    time_zone: str
    cron: Cron
    tz: ZoneInfo

    def next_after(self, t: datetime) -> datetime:
        return next_tick(self.cron, t, self.tz)


def parse_refresh(raw: dict[str, Any] | None) -> RefreshSchedule | None:
    """spec.refresh, or None when it has no schedule; raises ScheduleError naming the field."""
    if not raw or not raw.get("schedule"):
        return None
    expression, tz_name = str(raw["schedule"]), str(raw.get("timeZone") or "UTC")
    try:
        cron = parse_cron(expression)
    except ScheduleError as e:
        raise ScheduleError(f"spec.refresh.schedule: {e}") from e
    try:
        tz = zone(tz_name)
    except ScheduleError as e:
        raise ScheduleError(f"spec.refresh.timeZone: {e}") from e
    return RefreshSchedule(expression, tz_name, cron, tz)


def _time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), FORMAT).replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime(FORMAT)


@dataclass(frozen=True, slots=True)
class Due:
    """Where the schedule stands at `now`: the status it shows, and whether a check is due now."""

    status: dict[str, Any]
    due: bool
    wait: float  # seconds until the next check (0 when due)


def due(rule: RefreshSchedule, recorded: dict[str, Any] | None, now: datetime) -> Due:
    """The next check is the first tick after the last check (or, with none yet or a changed schedule, after
    now). A tick missed while the operator was down is checked once, at once, never once per missed tick."""
    rec = dict(recorded or {})
    same = rec.get("schedule") == rule.expression and (rec.get("timeZone") or "UTC") == rule.time_zone
    if not same:
        rec = {"schedule": rule.expression, "timeZone": rule.time_zone}
    planned = _time(rec.get("nextCheck")) if same else None
    if planned is None:
        planned = rule.next_after(now)
    rec["nextCheck"] = _fmt(planned)
    wait = (planned - now).total_seconds()
    return Due(rec, wait <= 0, max(wait, 0.0))


def baseline(
    phase: str, published_version: str, published_fingerprint: str, recorded: dict[str, Any]
) -> tuple[str, str]:
    """What a check compares with: the published version's listing while it is the wanted one (Ready); after a
    failed build, the listing that build was asked for, so an unchanged source does not start it again at every
    tick (a changed one does; so does the retry annotation)."""
    if phase == "Failed" and recorded.get("fingerprint"):
        return f"the failed build {recorded.get('version') or ''}".rstrip(), str(recorded["fingerprint"])
    return f"version {published_version}", published_fingerprint


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    status: dict[str, Any]
    refresh: str | None  # the refresh annotation value to set (a new version), or None
    message: str
    wait: float


def outcome(
    rule: RefreshSchedule,
    recorded: dict[str, Any],
    against: tuple[str, str],
    listed: str,
    objects: int,
    now: datetime,
    generation: int,
) -> CheckOutcome:
    """A check's result: a new version when the listing differs from `against` (what, fingerprint; see
    `baseline`), or when that has no fingerprint (a version built before fingerprints were kept); else nothing."""
    what, fingerprint = against
    tick = _time(recorded.get("nextCheck")) or now
    following = rule.next_after(now)
    changed = fingerprint != listed
    refresh = f"{SCHEDULED_PREFIX}{_fmt(tick)}" if changed else None
    if not fingerprint:
        message = f"{what} has no source fingerprint to compare with: building a new version"
    elif changed:
        message = f"the source changed since {what} ({objects} objects now): building a new version"
    else:
        message = f"the source is unchanged since {what} ({objects} objects)"
    status = {**recorded, "lastCheck": _fmt(now), "changed": changed, "nextCheck": _fmt(following),
              "message": message, "error": None}  # fmt: skip
    if refresh is not None:  # what this build is for: a failed one is not asked for again on the same listing
        status.update(fingerprint=listed, version=version_id(generation, refresh))
    return CheckOutcome(status, refresh, message, (following - now).total_seconds())


def check_failed(recorded: dict[str, Any], error: str, now: datetime) -> CheckOutcome:
    """A listing that failed: not "unchanged" (promise P2); tried again soon, the next tick kept."""
    message = f"could not list the source; trying again in {RETRY_SECONDS:.0f}s: {error}"
    status = {**recorded, "lastCheck": _fmt(now), "changed": None, "error": message[:1000]}
    return CheckOutcome(status, None, message, RETRY_SECONDS)
