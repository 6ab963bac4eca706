"""Cron: tick maths across DST and calendars, validation, and exactly-once firing with
several schedulers, a killed leader and a paused (deposed) one."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ConfigurationError, Engine, JobContext
from engine.cron import Schedule, Scheduler, next_tick, ticks_after
from engine.testing import FakeClock, worker_running
from tests.helpers import eventually, start_worker_process, stop_process

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


def test_bad_expressions_and_zones_raise_at_decoration(app: Engine) -> None:
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


async def test_three_schedulers_fire_each_tick_once(redis_url: str, namespace: str) -> None:
    seen: list[datetime] = []
    clock = FakeClock()  # the three share one time, moved a second at a time below

    def make() -> Engine:
        engine = Engine(redis_url, namespace=namespace, cron_lease=2.0, clock=clock)

        @engine.cron("* * * * * *", name="tick", timeout=5)
        async def tick(ctx: JobContext) -> None:
            assert ctx.scheduled_at is not None
            seen.append(ctx.scheduled_at)

        return engine

    engines = [make() for _ in range(3)]

    def fired() -> int:
        return sum(e.signals.scheduler_fired.count for e in engines)

    async with engines[0], engines[1], engines[2]:
        async with worker_running(engines[0]), worker_running(engines[1]), worker_running(engines[2]):
            await eventually(
                lambda: _true(any(e.signals.scheduler_elected.count for e in engines)), what="a leader"
            )
            for second in range(1, 7):
                clock.advance(1.0)
                await eventually(lambda n=second: _true(fired() >= n), what=f"tick {second} fired")
            await eventually(lambda: _true(len(seen) >= 6), what="6 ticks run")
        assert fired() == 6
        assert len(seen) == len(set(seen)) == 6
        ordered = sorted(seen)
        assert ordered[0] == datetime.fromtimestamp(clock.time() - 5, tz=UTC)
        assert all((b - a) == timedelta(seconds=1) for a, b in itertools.pairwise(ordered))
        leaders = await engines[0].gateway.redis.get(engines[0].gateway.keys.queue("default").cron_leader)
        assert leaders is None  # released on shutdown


async def _true(value: bool) -> bool:
    return value


async def test_a_deposed_leader_cannot_enqueue(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace, cron_lease=1.0)

    @app.cron("* * * * * *", name="tick", timeout=5)
    async def tick(ctx: JobContext) -> None: ...

    async with app:
        old, new = Scheduler(app, "old", lease=1.0), Scheduler(app, "new", lease=1.0)
        await old.run_once()
        assert "default" in old.leading
        # `old` is paused past its lease; `new` takes over.
        gateway = app.gateway
        await gateway.redis.delete(gateway.keys.queue("default").cron_leader)
        await new.run_once()
        assert "default" in new.leading
        tick_at = next_tick("* * * * * *", ZoneInfo("UTC"), datetime.now(UTC) + timedelta(seconds=30))
        assert await old.fire(app.schedules["tick"], tick_at) is False  # fenced
        assert "default" not in old.leading
        assert await app.job(f"cron-tick-{int(tick_at.timestamp() * 1000)}").info() is None
        assert await new.fire(app.schedules["tick"], tick_at) is True
        assert await new.fire(app.schedules["tick"], tick_at) is True  # a repeat adds nothing
        stats = await app.stats()
        assert stats["default"]["enqueued"] == new.fired == 1


async def test_a_follower_takes_over_when_the_lock_expires_not_at_its_next_poll(
    redis_url: str, namespace: str
) -> None:
    app = Engine(redis_url, namespace=namespace)  # the default lease: 10 s, polls 3.3 s apart

    @app.cron("* * * * * *", name="tick", timeout=5)
    async def tick(ctx: JobContext) -> None: ...

    async with app:
        gateway = app.gateway
        qk = gateway.keys.queue("default")
        # A leader died 9.7 s after its last renewal, 5 s after firing its last tick.
        last = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
        await gateway.redis.zadd(qk.cron_last, {"tick": int(last.timestamp() * 1000)})
        left = 0.3
        await gateway.redis.set(qk.cron_leader, "dead-leader|token", px=int(left * 1000))
        expires = time.monotonic() + left
        follower = Scheduler(app, "follower", lease=app.cron_lease)
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            await eventually(
                lambda: _true(follower.fired >= 1), timeout=app.cron_lease, interval=0.005, what="a tick"
            )
            late = time.monotonic() - expires
            tg.cancel_scope.cancel()
        # A time bound is the behaviour here: the follower tries for the lock on its expiry
        # (it was a whole poll, 3.3 s, before). The margin absorbs a loaded machine.
        print(f"\n[cron] follower took over {late * 1000:.0f} ms after the lock expired")
        assert late <= 1.5, late
        fired = await gateway.redis.zscore(qk.cron_last, "tick")
        assert fired is not None and fired >= (last + timedelta(seconds=5)).timestamp() * 1000
        # misfire="latest": the tick due at takeover only, none of the four missed before it
        for missed in range(1, 5):
            tick_ms = int((last + timedelta(seconds=missed)).timestamp() * 1000)
            assert await app.job(f"cron-tick-{tick_ms}").info() is None


async def test_killed_leader_is_replaced_and_no_tick_fires_twice(redis_url: str, namespace: str) -> None:
    from tests.apps.cronapp import ticks_key

    lease = 2.0
    env = {"TEST_CRON_LEASE": str(lease)}
    app = Engine(redis_url, namespace=namespace)
    procs = [start_worker_process("tests.apps.cronapp:app", redis_url, namespace, env=env) for _ in range(3)]
    try:
        async with app:
            redis = app.gateway.redis
            lock = app.gateway.keys.queue("ticks").cron_leader
            await eventually(lambda: _exists(redis, lock), timeout=20, what="a leader")
            # The leader is killed once it has been firing for a while (a few ticks run)...
            await eventually(lambda: _ticks_after(redis, namespace, 0, 4), timeout=20, what="4 ticks")
            leader_pid = int((await redis.get(lock)).split("|")[0].rsplit("-", 2)[1])
            victim = next(p for p in procs if p.pid == leader_pid)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            victim.wait(10)
            # ...and watched until its successor has fired for a while after the takeover.
            resumed = killed_at + lease + 2
            await eventually(lambda: _ticks_after(redis, namespace, resumed, 4), timeout=20, what="4 more")
            stop_at = time.time()
            ticks = sorted(int(t) for t in await redis.hkeys(ticks_key(namespace)))
            stats = await app.stats()
        # no tick enqueued twice: every tick got one job (ids are per tick, counted on add)
        assert stats["ticks"]["enqueued"] == len(ticks)
        # ticks resume within one lease of the kill; none missing outside that window
        gaps = [(a, b) for a, b in itertools.pairwise(ticks) if b - a > 1]
        for a, b in gaps:
            assert a >= killed_at - 2 and b <= killed_at + lease + 2, (a, b, killed_at)
        assert len(gaps) <= 1
        assert ticks[-1] >= stop_at - 3
        print(f"\n[cron] {len(ticks)} ticks, gaps around the kill: {[(b - a) for a, b in gaps]} s")
    finally:
        for proc in procs:
            stop_process(proc)


async def _ticks_after(redis: Any, namespace: str, after: float, count: int) -> bool:
    """At least ``count`` ticks scheduled after ``after`` (epoch seconds) have run."""
    from tests.apps.cronapp import ticks_key

    return sum(1 for t in await redis.hkeys(ticks_key(namespace)) if int(t) > after) >= count


async def _exists(redis: object, key: str) -> bool:
    return bool(await redis.exists(key))  # type: ignore[attr-defined]


async def test_sigstopped_leader_cannot_enqueue_after_resuming(redis_url: str, namespace: str) -> None:
    from tests.apps.cronapp import ticks_key

    env = {"TEST_CRON_LEASE": "1"}
    app = Engine(redis_url, namespace=namespace)
    procs = [start_worker_process("tests.apps.cronapp:app", redis_url, namespace, env=env) for _ in range(2)]
    try:
        async with app:
            redis = app.gateway.redis
            lock = app.gateway.keys.queue("ticks").cron_leader
            await eventually(lambda: _exists(redis, lock), timeout=20, what="a leader")
            first = await redis.get(lock)
            paused = next(p for p in procs if p.pid == int(first.split("|")[0].rsplit("-", 2)[1]))
            paused.send_signal(signal.SIGSTOP)
            await eventually(lambda: _leader_changed(redis, lock, first), timeout=10, what="new leader")
            # Ticks come due while it is stopped: the new leader fires two of them.
            deposed_at = time.time()
            await eventually(lambda: _ticks_after(redis, namespace, deposed_at, 2), what="2 ticks")
            paused.send_signal(signal.SIGCONT)  # wakes believing it leads, with due ticks
            output = _Output(paused)
            await eventually(lambda: _true("lost cron leadership" in output.read()), what="it steps down")
            resumed_at = time.time()
            await eventually(lambda: _ticks_after(redis, namespace, resumed_at, 1), what="a tick after")

            async def settled() -> tuple[dict[str, str], dict[str, Any]] | None:
                ticks = await redis.hgetall(ticks_key(namespace))
                stats = await app.stats()
                return (ticks, stats) if stats["ticks"]["enqueued"] == len(ticks) else None

            # Ticks keep coming: compare the two counts at a moment every enqueued tick has run.
            ticks, stats = await eventually(settled, what="every enqueued tick run once")
        assert stats["ticks"]["enqueued"] == len(ticks)
        assert all(int(v) == 1 for v in ticks.values())
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            stop_process(proc)


class _Output:
    """What a worker process has printed so far, read without blocking."""

    def __init__(self, proc: Any) -> None:
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.text = ""

    def read(self) -> str:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, 65536):
                self.text += chunk.decode(errors="replace")
        return self.text


async def _leader_changed(redis: object, key: str, old: str) -> bool:
    value = await redis.get(key)  # type: ignore[attr-defined]
    return value is not None and value != old


async def test_cron_list_command(redis_url: str, namespace: str) -> None:
    import json

    from tests.test_cli import run

    app = Engine(redis_url, namespace=namespace, cron_lease=2.0)

    @app.cron("0 0 1 * *", tz="Asia/Jakarta", name="monthly_report", timeout=60)
    async def monthly_report(ctx: JobContext) -> None: ...

    async with app, worker_running(app) as worker:
        await eventually(lambda: _true(bool(worker.scheduler and worker.scheduler.leading)), what="leading")
        result = run(
            "-m", "engine", "cron", "list", "--json", "--redis-url", redis_url, "--namespace", namespace
        )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["name"] == "monthly_report" and row["expr"] == "0 0 1 * *" and row["tz"] == "Asia/Jakarta"
    assert row["next_run"].endswith("17:00:00+00:00")  # midnight in Jakarta
    assert row["leader"] == worker.id and row["last_run"] is None
