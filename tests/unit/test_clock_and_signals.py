"""FakeClock and the test signals, with no server: what engine.testing offers users too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from engine.core.clock import SYSTEM_CLOCK, Clock, now_ms, now_utc
from engine.testing import FakeClock, Signal, Signals


async def test_fake_clock_wakes_sleepers_in_deadline_order_only_when_advanced() -> None:
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(sleeper("late", 10))
        tg.create_task(sleeper("early", 2))
        await clock.until_sleeping(2)
        clock.advance(1)
        await asyncio.sleep(0)
        assert woke == []  # no real time makes a fake sleep end
        clock.advance(1)
        await clock.until_sleeping(1)
        await asyncio.sleep(0)
        assert woke == ["early"]
        clock.set(datetime(2026, 3, 1, 0, 1, tzinfo=UTC))
    assert woke == ["early", "late"]
    assert now_utc(clock) == datetime(2026, 3, 1, 0, 1, tzinfo=UTC)
    assert clock.monotonic() == 60.0
    assert now_ms(clock) == int(datetime(2026, 3, 1, 0, 1, tzinfo=UTC).timestamp() * 1000)


async def test_a_cancelled_sleeper_is_not_counted_and_time_never_goes_back() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5))
    await clock.until_sleeping(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleeping() == 0
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)
    before = clock.time()
    clock.set(before - 100)  # a set() into the past leaves the clock where it is
    assert clock.time() == before
    await clock.sleep(0)  # returns at once, as a real sleep(0) does


def test_both_clocks_are_clocks() -> None:
    assert isinstance(SYSTEM_CLOCK, Clock) and isinstance(FakeClock(), Clock)


async def test_a_signal_wakes_waiters_at_their_count_and_keeps_its_values() -> None:
    signal = Signal("thing_done")
    waiter = asyncio.create_task(signal.wait(2))
    signal.emit("a")
    await asyncio.sleep(0)
    assert not waiter.done()
    signal.emit("b")
    assert await waiter == "b"
    assert signal.count == 2 and list(signal.values) == ["a", "b"] and signal.last == "b"
    assert await signal.wait(1) == "b"  # already reached: returns at once
    nxt = asyncio.create_task(signal.wait())  # default: the next emission
    await asyncio.sleep(0)
    signal.emit("c")
    assert await nxt == "c"


async def test_a_signal_that_never_fires_times_out_naming_itself() -> None:
    signals = Signals()
    with pytest.raises(TimeoutError, match="'shipper_committed' fired 0 times, not 1"):
        await signals.shipper_committed.wait(timeout_s=0.01)
    assert "scheduler_fired=0" in repr(signals)
