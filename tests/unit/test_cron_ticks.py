"""Cron tick maths across DST and calendars, misfire policies and validation: pure, no server."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ConfigurationError, Engine, JobContext
from engine.cron import Schedule, next_tick, ticks_after

BERLIN = ZoneInfo("Europe/Berlin")
JAKARTA = ZoneInfo("Asia/Jakarta")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def take(expr: str, tz: ZoneInfo, after: datetime, n: int) -> list[datetime]:
    it = ticks_after(expr, tz, after)
    return [next(it) for _ in range(n)]


def test_monthly_report_in_jakarta() -> None:
    # 00:00 on the 1st in Jakarta (UTC+7, no DST) is 17:00 UTC on the last day of the month.
    ticks = take("0 0 1 * *", JAKARTA, utc(2026, 1, 15), 3)
    assert ticks == [utc(2026, 1, 31, 17), utc(2026, 2, 28, 17), utc(2026, 3, 31, 17)]


def test_daily_tick_across_berlin_spring_forward() -> None:
    # 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
    ticks = take("30 2 * * *", BERLIN, utc(2026, 3, 27, 12), 3)
    assert ticks[0] == utc(2026, 3, 28, 1, 30)  # 02:30 CET
    assert ticks[1] == utc(2026, 3, 29, 1, 30)  # shifted by the gap: 03:30 CEST, once
    assert ticks[2] == utc(2026, 3, 30, 0, 30)  # 02:30 CEST


def test_hourly_ticks_across_berlin_fall_back() -> None:
    # 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:xx happens twice, fires once.
    ticks = take("0 * * * *", BERLIN, utc(2026, 10, 24, 22, 30), 5)
    walls = [t.astimezone(BERLIN).strftime("%H:%M%z") for t in ticks]
    assert walls == ["01:00+0200", "02:00+0200", "03:00+0100", "04:00+0100", "05:00+0100"]
    assert all(b > a for a, b in itertools.pairwise(ticks))


def test_month_ends_and_leap_days() -> None:
    assert take("0 0 31 * *", ZoneInfo("UTC"), utc(2026, 1, 31, 1), 3) == [
        utc(2026, 3, 31),
        utc(2026, 5, 31),
        utc(2026, 7, 31),
    ]
    assert take("0 12 29 2 *", ZoneInfo("UTC"), utc(2026, 1, 1), 2) == [
        utc(2028, 2, 29, 12),
        utc(2032, 2, 29, 12),
    ]
    assert next_tick("59 23 L * *", ZoneInfo("UTC"), utc(2026, 2, 1)) == utc(2026, 2, 28, 23, 59)


def test_six_fields_have_seconds_last() -> None:
    assert take("* * * * * */20", ZoneInfo("UTC"), utc(2026, 1, 1, 0, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
    ]


EXPRESSIONS = st.sampled_from(
    [
        "* * * * *",
        "*/7 * * * *",
        "0 * * * *",
        "30 2 * * *",
        "0 0 1 * *",
        "15 3 * * 1-5",
        "0 0 29 2 *",
        "0 0 L * *",
        "5 4 * * sun",
        "* * * * * */13",
        "0 */5 * * *",
    ]
)
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "Asia/Jakarta", "America/New_York", "Australia/Lord_Howe"])


@settings(max_examples=150, deadline=None)
@given(
    expr=EXPRESSIONS,
    zone=ZONES,
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_ticks_strictly_increase_and_match_croniter(expr: str, zone: str, start: datetime) -> None:
    tz = ZoneInfo(zone)
    after = start.replace(tzinfo=UTC)
    ticks = take(expr, tz, after, 8)
    assert ticks[0] > after
    assert all(b > a for a, b in itertools.pairwise(ticks))
    # Every tick's wall time is one croniter yields, in order (DST duplicates dropped).
    expected = croniter(expr, after.astimezone(tz).replace(tzinfo=None))
    walls = {expected.get_next(datetime) for _ in range(40)}
    for tick in ticks:
        local = tick.astimezone(tz).replace(tzinfo=None)
        assert local in walls or _in_dst_gap(tick, tz)


def _in_dst_gap(tick: datetime, tz: ZoneInfo) -> bool:
    # A wall time that does not exist was shifted forward by the gap: its local form differs.
    before = tick - timedelta(hours=3)
    return before.astimezone(tz).utcoffset() != tick.astimezone(tz).utcoffset()


def test_bad_expressions_and_zones_raise_at_decoration() -> None:
    app = Engine("redis://127.0.0.1:1", namespace="cron-checks")  # never connects
    with pytest.raises(ConfigurationError, match=r"invalid cron expression '61 \* \* \* \*'"):
        app.cron("61 * * * *")(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="invalid cron expression"):
        app.cron("every day")(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus'"):
        app.cron("0 0 * * *", tz="Mars/Olympus")(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="misfire"):

        @app.cron("0 0 * * *", misfire="sometimes")
        async def report(ctx: JobContext) -> None: ...

    assert "report" not in app.tasks  # refused whole
    with pytest.raises(ConfigurationError, match="only the context"):

        @app.cron("0 0 * * *")
        async def needs_args(ctx: JobContext, month: int) -> None: ...


def test_misfire_policies() -> None:
    now = utc(2026, 5, 1, 12, 0, 0, 500_000)
    last = utc(2026, 5, 1, 11, 55)

    def schedule(policy: str, catch_up: float = 3600) -> Schedule:
        return Schedule("s", "* * * * *", ZoneInfo("UTC"), "q", task=None, misfire=policy, catch_up=catch_up)  # type: ignore[arg-type]

    assert schedule("latest").due(last, now) == [utc(2026, 5, 1, 12)]
    assert schedule("all").due(last, now) == [utc(2026, 5, 1, 11, m) for m in range(56, 60)] + [
        utc(2026, 5, 1, 12)
    ]
    assert schedule("all", catch_up=150).due(last, now) == [
        utc(2026, 5, 1, 11, 58),
        utc(2026, 5, 1, 11, 59),
        utc(2026, 5, 1, 12),
    ]
    assert schedule("skip").due(last, now) == [utc(2026, 5, 1, 12)]  # the current tick is on time
    assert schedule("skip").due(last, now + timedelta(seconds=30)) == []  # only missed ones
    assert schedule("latest").due(now, now) == []
