"""The monthly report example's month arithmetic, in Jakarta time."""

from __future__ import annotations

from datetime import UTC, date, datetime

from examples import monthly_report as example


def test_the_month_before_a_tick_is_taken_in_jakarta() -> None:
    # 2026-03-01 00:00 in Jakarta is 2026-02-28 17:00 UTC: the report covers February.
    month, start, end = example.month_before(datetime(2026, 2, 28, 17, tzinfo=UTC))
    assert month == date(2026, 2, 1)
    assert start.astimezone(UTC) == datetime(2026, 1, 31, 17, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 2, 28, 17, tzinfo=UTC)
    assert example.month_before(datetime(2028, 3, 1, tzinfo=example.JAKARTA))[0] == date(2028, 2, 1)
