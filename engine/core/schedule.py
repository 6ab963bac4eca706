"""Cron schedules, pure: expressions, time zones, ticks and misfire policies.

Ticks follow the wall clock of the schedule's time zone. A tick that falls in a skipped
hour (spring forward) fires once, shifted forward by the gap (PEP 495, fold=0); a tick in a
repeated hour (fall back) fires once, at its first occurrence.

Misfires (ticks missed while no scheduler ran), per schedule:
- ``"latest"`` (default): fire the most recent missed tick once;
- ``"skip"``: fire nothing missed, wait for the next tick;
- ``"all"``: fire every missed tick within ``catch_up`` seconds, oldest first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

from engine.core.errors import ConfigurationError
from engine.core.taskdef import TaskDef

MISFIRE_POLICIES = ("latest", "skip", "all")
# A tick fired this late still counts as on time under the "skip" policy.
ON_TIME_S = 1.0
# Never enqueue more than this many missed ticks in one go under "all".
MAX_CATCH_UP_TICKS = 1000


def check_expression(expr: str, what: str) -> str:
    if not isinstance(expr, str) or len(expr.split()) not in (5, 6) or not croniter.is_valid(expr):
        raise ConfigurationError(
            f"{what}: invalid cron expression {expr!r}; use 5 fields (minute hour day month weekday) "
            "or 6 (the 6th is seconds), e.g. '0 0 1 * *'"
        )
    return expr


def check_zone(tz: str, what: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"{what}: unknown time zone {tz!r} (use an IANA name like 'Asia/Jakarta')"
        ) from None


def ticks_after(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Ticks strictly after ``after`` (aware), as aware UTC datetimes, strictly increasing."""
    wall = after.astimezone(tz).replace(tzinfo=None)
    it = croniter(expr, wall)
    previous = after.astimezone(UTC)
    while True:
        candidate = it.get_next(datetime).replace(tzinfo=tz, fold=0).astimezone(UTC)
        # Two wall times can map to one instant around a DST change: keep the first only.
        if candidate > previous:
            previous = candidate
            yield candidate


def next_tick(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    return next(ticks_after(expr, tz, after))


@dataclass(frozen=True)
class Schedule:
    name: str
    expr: str
    tz: ZoneInfo
    queue: str
    task: TaskDef
    misfire: str = "latest"
    catch_up: float = 3600.0

    def due(self, last: datetime, now: datetime) -> list[datetime]:
        """The ticks to fire now, given the last fired tick, per the misfire policy."""
        missed: list[datetime] = []
        for tick in ticks_after(self.expr, self.tz, last):
            if tick > now:
                break
            missed.append(tick)
            if self.misfire != "all" and len(missed) > 1:
                missed.pop(0)  # only the latest matters
            elif len(missed) > MAX_CATCH_UP_TICKS:
                missed.pop(0)
        if not missed:
            return []
        if self.misfire == "latest":
            return missed[-1:]
        if self.misfire == "skip":
            return missed[-1:] if (now - missed[-1]).total_seconds() <= ON_TIME_S else []
        horizon = now - timedelta(seconds=self.catch_up)
        return [t for t in missed if t >= horizon]


class ScheduleAnnouncement(msgspec.Struct):
    expr: str
    tz: str
    queue: str
    task: str
    misfire: str


def make_schedule(task: TaskDef, expr: str, tz: str, misfire: str, catch_up: float) -> Schedule:
    what = f"cron {task.name!r}"
    if misfire not in MISFIRE_POLICIES:
        raise ConfigurationError(
            f"{what}: misfire must be one of {', '.join(MISFIRE_POLICIES)}, not {misfire!r}"
        )
    if not (isinstance(catch_up, int | float) and math.isfinite(catch_up) and catch_up > 0):
        raise ConfigurationError(f"{what}: catch_up must be a number of seconds > 0, not {catch_up!r}")
    if task.spec.signature is not None:
        try:
            task.spec.signature.bind()
        except TypeError:
            raise ConfigurationError(
                f"{what}: a cron task takes only the context (ctx); it gets no other arguments"
            ) from None
    return Schedule(
        name=task.name,
        expr=check_expression(expr, what),
        tz=check_zone(tz, what),
        queue=task.spec.queue,
        task=task,
        misfire=misfire,
        catch_up=float(catch_up),
    )
