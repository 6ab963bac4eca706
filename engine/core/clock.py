"""The time, read through one object so tests (and users' tests) can drive it.

Every place that asks "what time is it" or "wait this long" goes through a :class:`Clock`:
:class:`SystemClock` in production, :class:`FakeClock` in tests, where ``advance()`` moves
time on at once and wakes whoever was sleeping past the new instant (asynq's
``timeutil.Clock``, River's stubbed time). Redis keeps its own time for TTLs, leases and
the created/started/finished times its scripts record; a fake clock changes what the engine
computes (due times, ticks, ages) and when its loops wake, not those.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (what is stored and shown)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


def now_ms(clock: Clock) -> int:
    """Wall-clock milliseconds, the unit the scripts and job hashes use."""
    return int(clock.time() * 1000)


def now_utc(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.time(), tz=UTC)


class SystemClock:
    """The real time."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to: ``advance(seconds)`` or ``set(when)``.

    Sleepers wake in deadline order when time passes their deadline; ``sleeping()`` says
    how many are waiting, so a test can let the code under test reach its sleep first
    (``await clock.until_sleeping(1)``) instead of guessing with a real sleep.
    """

    def __init__(self, start: float | datetime = 1_767_225_600.0) -> None:  # 2026-01-01 UTC
        self._wall = start.timestamp() if isinstance(start, datetime) else float(start)
        self._mono = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"FakeClock({now_utc(self).isoformat()}, sleeping={self.sleeping()})"

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # still a checkpoint, as a real sleep(0) is
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), future))
        self._notify()
        try:
            await future
        finally:
            if not future.done():
                future.cancel()  # cancelled while asleep: drop it from the count below

    def sleeping(self) -> int:
        """How many callers are asleep on this clock right now."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def until_sleeping(self, count: int = 1, timeout_s: float = 10.0) -> None:
        """Wait (in real time, at most ``timeout_s``) until ``count`` callers are asleep."""
        async with asyncio.timeout(timeout_s):
            while self.sleeping() < count:
                self._changed = self._changed or asyncio.Event()
                await self._changed.wait()

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("a clock does not go back; advance() takes seconds >= 0")
        self._wall += seconds
        self._mono += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        self._notify()

    def set(self, when: float | datetime) -> None:
        """Move the wall clock to ``when`` (never backwards), waking sleepers on the way."""
        target = when.timestamp() if isinstance(when, datetime) else float(when)
        self.advance(max(0.0, target - self._wall))

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
