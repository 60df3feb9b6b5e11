"""Scheduled refresh: cron parsing and ticks (against a minute-by-minute search), the CRD's schedule pattern
against the parser, when a check is due, what a check decides, the listing fingerprint, and the settled pass's
flow (`runner.scheduled.check`) with the Kubernetes calls recorded."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from sharded_dataset_operator.clients import kube
from sharded_dataset_operator.clients.ais import AisUnavailable
from sharded_dataset_operator.core import schedule
from sharded_dataset_operator.core.fingerprint import ListingFingerprint
from sharded_dataset_operator.core.schedule import ScheduleError, next_tick, parse_cron, parse_refresh
from sharded_dataset_operator.core.spec import SpecError, parse_spec
from sharded_dataset_operator.core.versions import REFRESH_ANNOTATION, IndexInfo
from sharded_dataset_operator.runner import scheduled

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "shardeddatasets.shardeddataset.dev.yaml"
T0 = datetime(2026, 12, 4, 15, 40, 30, tzinfo=UTC)


def brute_next(cron: schedule.Cron, after: datetime, tz: ZoneInfo) -> datetime:
    """Every UTC minute after `after`, tried one by one."""
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(60 * 24 * 800):
        local = t.astimezone(tz)
        if (local.month in cron.months and cron.day_matches(local) and local.hour in cron.hours
                and local.minute in cron.minutes):  # fmt: skip
            return t
        t += timedelta(minutes=1)
    raise AssertionError("no tick")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/5 * * * *", T0, "2026-12-04T15:45:00"),
        ("0 3 * * *", T0, "2026-12-05T03:00:00"),
        ("@hourly", T0, "2026-12-04T16:00:00"),
        ("30 2 * * mon", T0, "2026-12-07T02:30:00"),  # 2026-12-04 is a Friday
        ("0 0 29 2 *", T0, "2028-02-29T00:00:00"),
        ("0 12 1 * 7", T0, "2026-12-06T12:00:00"),  # day of month OR Sunday (7), both restricted
        ("15 10-12/2 * * *", T0, "2026-12-05T10:15:00"),
    ],
)
def test_next_tick_known_cases(expression: str, after: datetime, expected: str) -> None:
    tick = next_tick(parse_cron(expression), after, ZoneInfo("UTC"))
    assert tick == datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_next_tick_in_a_time_zone_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    cron = parse_cron("0 3 * * *")
    before_switch = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)  # CEST (UTC+2) until 2026-10-25 03:00
    assert next_tick(cron, before_switch, berlin) == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)  # 03:00 CET
    assert next_tick(cron, datetime(2026, 10, 25, 2, 0, tzinfo=UTC), berlin) == datetime(2026, 10, 26, 2, 0, tzinfo=UTC)
    assert next_tick(cron, datetime(2026, 6, 1, tzinfo=UTC), berlin) == datetime(2026, 6, 1, 1, 0, tzinfo=UTC)


def random_expression(rng: random.Random) -> str:
    def part(low: int, high: int) -> str:
        kind = rng.randrange(5)
        a, b = sorted(rng.sample(range(low, high + 1), 2))
        return ["*", f"*/{rng.randint(1, 9)}", str(a), f"{a}-{b}", f"{a}-{b}/{rng.randint(1, 3)}"][kind]

    def field(low: int, high: int) -> str:
        return ",".join(part(low, high) for _ in range(rng.choice((1, 1, 2))))

    return " ".join((field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 6)))


def test_next_tick_matches_a_minute_by_minute_search() -> None:
    rng = random.Random(7)
    zones = [ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]
    for _ in range(60):
        cron = parse_cron(random_expression(rng))
        tz = rng.choice(zones)
        after = T0 + timedelta(minutes=rng.randrange(60 * 24 * 200))
        assert next_tick(cron, after, tz) == brute_next(cron, after, tz), (cron.expression, tz, after)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("* * * *", "five"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day of week"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("0 0 30 2 *", "never fires"),
        ("@often", "five"),
        ("a * * * *", "minute"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_cron(expression)


def crd_pattern(field: str) -> re.Pattern[str]:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return re.compile(spec["properties"]["refresh"]["properties"][field]["pattern"])


def test_the_crd_pattern_accepts_exactly_what_parses() -> None:
    """The API server refuses what the operator could not parse (apart from a range that runs backwards and a
    date that never comes, which only the operator sees: InvalidSpec naming the field)."""
    pattern = crd_pattern("schedule")
    rng = random.Random(11)
    tokens = ["*", "*/5", "*/0", "0", "7", "59", "60", "24", "31", "32", "13", "1-5", "5-1", "1-5/2", "mon", "JAN",
              "sun-sat", "x", "1,2", "1,", "-1", "@daily", "@weekly", "@often", ""]  # fmt: skip
    checked = 0
    for _ in range(3000):
        expression = " ".join(rng.choice(tokens) for _ in range(rng.choice((1, 4, 5, 5, 5, 6))))
        try:
            parse_cron(expression)
            parses = True
        except ScheduleError as e:
            if "backwards" in str(e) or "never fires" in str(e):
                continue
            parses = False
        assert bool(pattern.match(expression)) == parses, expression
        checked += parses
    assert checked > 50  # the sample holds valid expressions too


def test_time_zone_and_volume_sources_are_refused_naming_the_field() -> None:
    assert parse_refresh({"schedule": "@daily", "timeZone": "Europe/Berlin"}) is not None
    assert parse_refresh({"timeZone": "UTC"}) is None
    with pytest.raises(ScheduleError, match=r"spec\.refresh\.timeZone"):
        parse_refresh({"schedule": "@daily", "timeZone": "Mars/Olympus"})
    with pytest.raises(ScheduleError, match=r"spec\.refresh\.schedule"):
        parse_refresh({"schedule": "0 0 31 4 *"})
    assert crd_pattern("timeZone").match("America/Argentina/Buenos_Aires")
    base = {"samples": {"fields": [{"pattern": "*.jpg", "name": "jpg"}]}, "output": {"bucket": "o",
            "maxSamplesPerShard": 10}, "refresh": {"schedule": "@hourly"}}  # fmt: skip
    assert (
        parse_spec(
            {**base, "source": {"ais": {"bucket": "raw"}}}, name="d", default_endpoint="http://ais:51080"
        ).refresh
        is not None
    )
    with pytest.raises(SpecError, match=r"spec\.refresh\.schedule: needs an AIS source"):
        parse_spec({**base, "source": {"volume": {"claimName": "c"}}}, name="d", default_endpoint="http://ais:51080")


def rule(expression: str = "*/10 * * * *") -> schedule.RefreshSchedule:
    r = parse_refresh({"schedule": expression})
    assert r is not None
    return r


def test_due_first_shows_the_next_tick_then_is_due_at_it_once() -> None:
    first = schedule.due(rule(), None, T0)
    assert not first.due and first.status["nextCheck"] == "2026-12-04T15:50:00Z" and first.wait == 570
    at_tick = schedule.due(rule(), first.status, T0 + timedelta(seconds=570))
    assert at_tick.due and at_tick.status == first.status
    days_later = schedule.due(rule(), first.status, T0 + timedelta(days=3))  # missed ticks: one check
    assert days_later.due and days_later.status["nextCheck"] == "2026-12-04T15:50:00Z"
    changed = schedule.due(rule("0 * * * *"), first.status, T0 + timedelta(days=3))  # a new schedule starts over
    assert not changed.due and changed.status["nextCheck"] == "2026-12-07T16:00:00Z"
    assert changed.status["schedule"] == "0 * * * *"


def test_outcome_builds_only_on_a_different_listing() -> None:
    rec = schedule.due(rule(), None, T0).status
    now = T0 + timedelta(minutes=10)
    same = schedule.outcome(rule(), rec, ("version g2", "3:9:ab"), "3:9:ab", 3, now, 2)
    assert same.refresh is None and same.status["changed"] is False and "unchanged since version g2" in same.message
    assert same.status["lastCheck"] == "2026-12-04T15:50:30Z" and same.status["nextCheck"] == "2026-12-04T16:00:00Z"
    other = schedule.outcome(rule(), rec, ("version g2", "3:9:ab"), "3:9:ac", 3, now, 2)
    assert other.refresh == "scheduled-2026-12-04T15:50:00Z" and other.status["changed"] is True
    assert other.status["fingerprint"] == "3:9:ac" and other.status["version"].startswith("g2r")
    unknown = schedule.outcome(rule(), rec, ("version g1", ""), "3:9:ab", 3, now, 2)
    assert unknown.refresh is not None and "no source fingerprint" in unknown.message


def test_after_a_failed_build_the_same_listing_does_not_start_it_again() -> None:
    recorded = {"fingerprint": "3:9:ac", "version": "g2rX"}
    assert schedule.baseline("Failed", "g2", "3:9:ab", recorded) == ("the failed build g2rX", "3:9:ac")
    assert schedule.baseline("Ready", "g2", "3:9:ab", recorded) == ("version g2", "3:9:ab")


def test_listing_fingerprint_ignores_order_and_sees_rewrites_of_the_same_size() -> None:
    entries = [(f"d/{i}.jpg", 100 + i, f"etag{i}") for i in range(50)]
    a, b, c = ListingFingerprint(), ListingFingerprint(), ListingFingerprint()
    for e in entries:
        a.add(*e)
    for e in reversed(entries):
        b.add(*e)
    for e in [*entries[:-1], (entries[-1][0], entries[-1][1], "etag-new")]:
        c.add(*e)
    assert a.value() == b.value() and a.value() != c.value()
    assert a.value().startswith(f"50:{sum(e[1] for e in entries)}:")


class Entry:
    def __init__(self, name: str, size: int, checksum: str) -> None:
        self.name, self.size, self.checksum = name, size, checksum


class ListingAis:
    def __init__(self, entries: list[Entry], fail: bool = False) -> None:
        self.entries, self.fail, self.calls = entries, fail, []  # type: list[Any]

    def list_pages(self, bucket: str, provider: str, prefix: str, **kw: Any) -> Any:
        self.calls.append((bucket, provider, prefix, kw))
        if self.fail:
            raise AisUnavailable("connection refused")
        yield [e for e in self.entries if e.name.startswith(prefix)]


def dataset(phase: str = "Ready", recorded: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    raw = {"source": {"ais": {"bucket": "raw", "provider": "aws", "prefix": "p/"}},
           "samples": {"fields": [{"pattern": "*.jpg", "name": "jpg"}]},
           "output": {"bucket": "o", "maxSamplesPerShard": 10}, "refresh": {"schedule": "*/10 * * * *"}}  # fmt: skip
    obj = {"metadata": {"namespace": "ns", "name": "d", "uid": "u", "generation": 2}, "spec": raw,
           "status": {"phase": phase, "versions": {"published": {"version": "g2"}}, "refresh": recorded}}  # fmt: skip
    return obj, parse_spec(raw, name="d", default_endpoint="http://ais:51080")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    monkeypatch.setattr(kube, "patch_status", lambda ns, name, st: seen.append(("status", st["refresh"])))
    monkeypatch.setattr(kube, "annotate_dataset", lambda ns, name, k, v: seen.append(("annotate", (k, v))))
    return seen


def published_with(entries: list[Entry], prefix: str = "p/") -> IndexInfo:
    fp = ListingFingerprint()
    for e in entries:
        fp.add(e.name[len(prefix) :], e.size, e.checksum)
    return IndexInfo("g2", 2, "", "", 2, 1, 1, "", source_fingerprint=fp.value())


def test_a_settled_check_builds_only_when_s3_changed(calls: list[tuple[str, Any]]) -> None:
    entries = [Entry("p/", 0, ""), Entry("p/a.jpg", 5, "e1"), Entry("p/b.jpg", 7, "e2")]  # "p/": a folder marker
    obj, spec = dataset()
    wait, _ = scheduled.check(obj, spec, lambda: (ListingAis(entries), None), T0)  # type: ignore[arg-type,return-value]
    assert wait == 570 and calls == [("status", {"schedule": "*/10 * * * *", "timeZone": "UTC",
                                                 "nextCheck": "2026-12-04T15:50:00Z"})]  # fmt: skip
    recorded = calls[-1][1]
    obj, spec = dataset(recorded=recorded)
    ais = ListingAis(entries)
    at = T0 + timedelta(seconds=570)
    wait, events = scheduled.check(obj, spec, lambda: (ais, published_with(entries[1:])), at)  # type: ignore[arg-type,return-value]
    assert [c[0] for c in calls[1:]] == ["status"] and calls[-1][1]["changed"] is False and not events
    assert ais.calls[0][3]["remote_props"] is True  # an S3 bucket is listed as S3 has it now
    rewritten = [entries[0], entries[1], Entry("p/b.jpg", 7, "e2-new")]
    wait, events = scheduled.check(obj, spec, lambda: (ListingAis(rewritten), published_with(entries[1:])), at)  # type: ignore[arg-type,return-value]
    assert calls[-2] == ("annotate", (REFRESH_ANNOTATION, "scheduled-2026-12-04T15:50:00Z"))
    assert calls[-1][1]["changed"] is True and events[0].reason == "ScheduledRefresh"


def test_a_check_that_cannot_list_builds_nothing_and_tries_again(calls: list[tuple[str, Any]]) -> None:
    obj, spec = dataset(recorded={"schedule": "*/10 * * * *", "timeZone": "UTC", "nextCheck": "2026-12-04T15:40:00Z"})
    wait, events = scheduled.check(obj, spec, lambda: (ListingAis([], fail=True), published_with([])), T0)  # type: ignore[arg-type,return-value]
    assert wait == schedule.RETRY_SECONDS and [c[0] for c in calls] == ["status"]
    assert calls[0][1]["changed"] is None and "connection refused" in calls[0][1]["error"]
    assert calls[0][1]["nextCheck"] == "2026-12-04T15:40:00Z"  # still due: tried again, not skipped
    assert events[0].reason == "RefreshCheckFailed"


def test_no_check_while_a_version_builds_or_before_the_first_is_published(calls: list[tuple[str, Any]]) -> None:
    obj, spec = dataset(phase="Converting")
    assert scheduled.check(obj, spec, lambda: pytest.fail("listed"), T0) == (None, [])  # type: ignore[arg-type,return-value]
    obj, spec = dataset()
    obj["status"]["versions"] = {}
    assert scheduled.check(obj, spec, lambda: pytest.fail("listed"), T0) == (None, [])  # type: ignore[arg-type,return-value]
    assert calls == []


def test_every_refresh_status_field_is_in_the_crd() -> None:
    from tests.unit.test_crd_status import status_schema, unknown

    rec = schedule.due(rule(), None, T0).status
    written = [rec, schedule.outcome(rule(), rec, ("version g2", "a"), "b", 3, T0, 2).status,
               schedule.check_failed(rec, "down", T0).status]  # fmt: skip
    for status in written:
        assert unknown({"refresh": status}, status_schema(), "status") == []
