"""Priorities (0 first, 9 last, 5 by default) and job expiry, on real servers.

A priority other than the default puts the job in its queue's lane of that priority (a
stream of its own under the queue's hash tag); start.lua reads a queue's lanes lowest
number first, so a job of a lower number starts before every waiting job of a higher one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from engine import ConfigurationError, Engine, JobContext, JobFailed, inspector
from engine.testing import worker_running
from tests.helpers import eventually


@pytest.mark.cluster_too
async def test_urgent_jobs_enqueued_behind_a_backlog_start_first(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    order: list[str] = []

    @app.task(queue="work", timeout=10)
    async def job(ctx: JobContext, kind: str) -> None:
        order.append(kind)

    async with app:
        await job.with_options(priority=9).enqueue_many([("backlog",)] * 200)
        urgent = await job.with_options(priority=0).enqueue_many([("urgent",)] * 10)
        stats = (await app.stats())["work"]
        assert stats["waiting"] == 210
        async with worker_running(app, concurrency=5):
            with anyio.fail_after(20):
                for handle in urgent:
                    await handle.result(timeout=20)
            await eventually(lambda: _async(len(order) == 210), what="the backlog drains")
    assert set(order[:20]) >= {"urgent"} and order[:20].count("urgent") == 10, order[:20]


async def _async(value: object) -> object:
    return value


async def test_a_busy_worker_takes_a_later_urgent_job_before_the_rest_of_its_backlog(
    redis_url: str, namespace: str
) -> None:
    app = Engine(redis_url, namespace=namespace)
    order: list[str] = []

    @app.task(queue="work", timeout=10)
    async def job(ctx: JobContext, kind: str) -> None:
        order.append(kind)
        await anyio.sleep(0.01)

    async with app, worker_running(app, concurrency=2):
        # Default priority (5): the queue's own stream; the urgent one arrives mid-drain.
        backlog = await job.enqueue_many([("backlog",)] * 150)
        await eventually(lambda: _async(len(order) >= 10), what="the drain has begun")
        urgent = await job.with_options(priority=1).enqueue("urgent")
        with anyio.fail_after(20):
            await urgent.result(timeout=20)
            position = order.index("urgent")
            for handle in backlog:
                await handle.result(timeout=20)
    # Started within a couple of fetches of its arrival, not after the other ~140.
    assert position < 40, position


async def test_the_task_default_and_the_enqueue_option(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    order: list[str] = []

    @app.task(queue="q", timeout=10, priority=2)
    async def important(ctx: JobContext) -> None:
        order.append("important")

    @app.task(queue="q", timeout=10)
    async def ordinary(ctx: JobContext) -> None:
        order.append("ordinary")

    async with app:
        await ordinary.enqueue_many([()] * 5)
        await important.enqueue_many([()] * 2)
        await ordinary.with_options(priority=0).enqueue()
        async with worker_running(app, concurrency=1):
            await eventually(lambda: _async(len(order) == 8), what="all ran")
    assert order == ["ordinary", "important", "important"] + ["ordinary"] * 5


async def test_a_queue_without_priorities_gets_no_lane(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="plain", timeout=10)
    async def noop(ctx: JobContext) -> None:
        pass

    async with app:
        await noop.enqueue()
        await noop.with_options(priority=5).enqueue()
        gateway = await app.ready()
        qk = gateway.keys.queue("plain")
        assert await gateway.redis.exists(qk.lanes) == 0
        assert await gateway.redis.xlen(qk.stream) == 2


async def test_retried_delayed_cancelled_and_replayed_jobs_keep_their_lane(
    redis_url: str, namespace: str
) -> None:
    app = Engine(redis_url, namespace=namespace)
    runs: dict[str, int] = {}

    @app.task(queue="q", timeout=10, max_attempts=2)
    async def flaky(ctx: JobContext, name: str) -> str:
        runs[name] = runs.get(name, 0) + 1
        if name == "fails" or (name == "retried" and ctx.attempt == 1):
            raise RuntimeError("boom")
        return name

    async with app:
        gateway = await app.ready()
        qk = gateway.keys.queue("q")
        lane = gateway.keys.queue("q!0").stream
        waiting = await flaky.with_options(priority=0).enqueue("cancelled")
        assert await gateway.redis.xlen(lane) == 1
        assert await waiting.cancel()
        assert await gateway.redis.xlen(lane) == 0  # its entry went with it

        delayed = await flaky.with_options(priority=0, delay=0.3).enqueue("delayed")
        retried = await flaky.with_options(priority=0).enqueue("retried")
        fails = await flaky.with_options(priority=0).enqueue("fails")
        async with worker_running(app, concurrency=4):
            assert await delayed.result(timeout=10) == "delayed"
            assert await retried.result(timeout=10) == "retried"
            with pytest.raises(JobFailed):
                await fails.result(timeout=10)
        assert runs == {"delayed": 1, "retried": 2, "fails": 2}
        assert await app.dlq("q").replay(fails.id)
        msg = (await gateway.redis.hgetall(qk.job(fails.id)))["msg"]
        assert await gateway.redis.xrange(lane, msg, msg)
        assert not await gateway.redis.xrange(qk.stream, msg, msg)
        assert await gateway.redis.smembers(qk.lanes) == {"0"}


async def test_a_new_lane_reaches_an_idle_worker(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="q", timeout=10)
    async def echo(ctx: JobContext, n: int) -> int:
        return n

    async with app, worker_running(app, concurrency=4):
        assert await echo.enqueue(1) is not None
        # The worker started knowing no lane of "q": the first job of one is announced.
        job = await echo.with_options(priority=7).enqueue(7)
        assert await job.result(timeout=10) == 7


@pytest.mark.parametrize("bad", [-1, 10, 1.5, "0", True, None])
async def test_a_bad_priority_is_refused_naming_it(redis_url: str, namespace: str, bad: object) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="q", timeout=10)
    async def noop(ctx: JobContext) -> None:
        pass

    async with app:
        if bad is None:  # None means "the task's", at enqueue; at declaration it is refused
            with pytest.raises(ConfigurationError, match="priority must be an integer from 0"):
                app.task(name="other", priority=bad)(lambda: None)  # type: ignore[arg-type]
            return
        with pytest.raises(ConfigurationError, match=f"not {bad!r}"):
            await noop.with_options(priority=bad).enqueue()
        assert (await app.stats()).get("q", {}).get("enqueued", 0) == 0


# -- expiry ---------------------------------------------------------------------------------


async def test_a_job_not_started_before_it_expires_is_cancelled_as_expired(
    redis_url: str, namespace: str
) -> None:
    app = Engine(redis_url, namespace=namespace)
    ran: list[str] = []

    @app.task(queue="q", timeout=10)
    async def work(ctx: JobContext, name: str) -> str:
        ran.append(name)
        return name

    async with app:
        stale = await work.with_options(expires=0.2).enqueue("stale")
        fresh = await work.with_options(expires=timedelta(minutes=5)).enqueue("fresh")
        later = await work.with_options(expires=datetime.now(UTC) + timedelta(minutes=5), delay=0.1).enqueue(
            "later"
        )
        # Time itself is what the stale job waits for (no worker runs meanwhile).
        await anyio.sleep(0.3)
        async with worker_running(app, concurrency=4):
            assert await fresh.result(timeout=10) == "fresh"
            assert await later.result(timeout=10) == "later"
            with pytest.raises(JobFailed):
                await stale.result(timeout=10)
        info = await stale.info()
        assert info is not None and (info.status, info.error, info.attempts) == ("cancelled", "expired", 0)
        assert sorted(ran) == ["fresh", "later"]
        assert (await app.stats())["q"]["cancelled"] == 1


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        (-1, "expires must be a number of seconds"),
        ("soon", "expires must be a number of seconds"),
        (datetime(2030, 1, 1), "time-zone-aware"),
        (datetime(2000, 1, 1, tzinfo=UTC), "not after the job is due"),
    ],
)
async def test_a_bad_expiry_is_refused(redis_url: str, namespace: str, expires: object, message: str) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="q", timeout=10)
    async def noop(ctx: JobContext) -> None:
        pass

    async with app:
        with pytest.raises(ConfigurationError, match=message):
            await noop.with_options(expires=expires).enqueue()
        with pytest.raises(ConfigurationError, match="not after the job is due"):
            await noop.with_options(expires=5, delay=10).enqueue()


async def test_the_read_side_sees_jobs_in_every_lane(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="q", timeout=10)
    async def noop(ctx: JobContext) -> None:
        pass

    async with app:
        plain = await noop.enqueue()
        urgent = await noop.with_options(priority=0).enqueue()
        late = await noop.with_options(priority=9).enqueue()
        jobs, _ = await inspector.queue_jobs(app, "q", "waiting")
        # In the order they would run, each shown in its queue.
        assert [(job.id, job.queue) for job in jobs] == [(urgent.id, "q"), (plain.id, "q"), (late.id, "q")]
        assert all(job.args == [] and job.status == "waiting" for job in jobs)
        lags = await inspector.queue_lags(app, ["q"])
        assert lags["q"] >= 0
        info = await urgent.info()
        assert info is not None and info.queue == "q"
