"""Cron on real servers: exactly-once firing with several schedulers, a killed leader and a
paused (deposed) one (the tick maths are in tests/unit/test_cron_ticks.py)."""

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

from engine import Engine, JobContext
from engine.cron import Scheduler, next_tick
from engine.testing import FakeClock, worker_running
from tests.helpers import eventually, start_worker_process, stop_process


@pytest.mark.cluster_too
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


@pytest.mark.cluster_too
async def test_a_deposed_leader_cannot_enqueue(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace, cron_lease=1.0)

    # Yearly, so that electing (run_once) fires nothing of its own: only the fire() calls count.
    @app.cron("0 0 1 1 *", name="tick", timeout=5)
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
        tick_at = next_tick("0 0 1 1 *", ZoneInfo("UTC"), datetime.now(UTC))
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

    from tests.integration.test_cli import run

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
