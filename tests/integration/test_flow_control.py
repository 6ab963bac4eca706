"""Flow control held in Redis: pause/resume, queue-wide concurrency, rate limits.

Every limit is enforced by start.lua, atomically with the start, so it holds across worker
processes: the concurrency tests run two worker processes, and kill one.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio
import pytest

from engine import ConfigurationError, Engine, JobContext
from engine.testing import worker_running
from tests.helpers import (
    enqueue_by_spec,
    eventually,
    peak_overlap,
    start_worker_process,
    stop_process,
    task_announced,
)


@pytest.mark.cluster_too
async def test_a_paused_queue_starts_nothing_until_resumed(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    started: list[int] = []

    @app.task(queue="emails", timeout=10)
    async def send(ctx: JobContext, n: int) -> int:
        started.append(n)
        return n

    async with app, worker_running(app, concurrency=10):
        # The worker is idle, blocked reading the queue, when the pause lands.
        await app.pause("emails")
        assert await app.is_paused("emails")
        jobs = await send.enqueue_many([(n,) for n in range(20)])
        await anyio.sleep(3.0)  # the window in which nothing may start
        assert started == []
        stats = (await app.stats())["emails"]
        assert stats["paused"] == 1 and stats["waiting"] + stats["active"] == 20
        assert stats["throttled"] == stats["waiting"]

        # The pause is held in Redis: another process sees it.
        async with Engine(redis_url, namespace=namespace) as other:
            assert await other.is_paused("emails")

        await app.resume("emails")
        with anyio.fail_after(10):
            results = [await job.result(timeout=10) for job in jobs]
        assert sorted(results) == list(range(20))
        assert not await app.is_paused("emails")
        assert (await app.stats())["emails"]["paused"] == 0


async def test_running_jobs_finish_and_retries_wait_while_paused(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    release = anyio.Event()
    began = anyio.Event()
    runs: list[str] = []

    @app.task(queue="q", timeout=10)
    async def slow(ctx: JobContext) -> str:
        runs.append(ctx.job_id)
        began.set()
        await release.wait()
        return "done"

    async with app, worker_running(app, concurrency=5):
        running = await slow.enqueue()
        await began.wait()
        await app.pause("q")
        waiting = await slow.enqueue()
        release.set()
        assert await running.result(timeout=10) == "done"  # a running job is not stopped
        await anyio.sleep(1.5)
        assert runs == [running.id]
        await app.resume("q")
        assert await waiting.result(timeout=10) == "done"


async def test_pausing_an_unknown_queue_is_refused(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="emails")
    async def send() -> None: ...

    async with app:
        with pytest.raises(ConfigurationError, match="unknown queue 'emials'"):
            await app.pause("emials")
        with pytest.raises(ConfigurationError, match="invalid queue name"):
            await app.resume("no spaces")
        gateway = await app.ready()
        assert await gateway.redis.exists(gateway.keys.queue("emials").flow) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limit": "abc"}, "rate_limit='abc' is not a rate"),
        ({"rate_limit": "0/s"}, "rate_limit='0/s' must allow between 1"),
        ({"rate_limit": "10/d"}, "rate_limit='10/d' is not a rate"),
        ({"rate_limit": 10}, "rate_limit=10 is not a rate"),
        ({"concurrency": 0}, "concurrency=0 must be a whole number"),
        ({"concurrency": -1}, "concurrency=-1 must be a whole number"),
        ({"concurrency": 2.5}, "concurrency=2.5 must be a whole number"),
        ({"concurrency": True}, "concurrency=True must be a whole number"),
        ({"concurrency": 2, "partitions": 4}, "concurrency is split over its 4 partitions"),
    ],
)
def test_bad_limits_are_refused_at_declaration(options: dict[str, Any], message: str) -> None:
    app = Engine("redis://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        app.queue("partner_api", **options)
    assert "partner_api" not in app.limits and "partner_api" not in app.layout.declared


async def test_a_rate_limit_spaces_the_starts(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    app.queue("partner_api", rate_limit="10/s")
    starts: list[float] = []

    @app.task(queue="partner_api", timeout=10)
    async def call(ctx: JobContext, n: int) -> None:
        starts.append(time.monotonic())

    async with app:
        jobs = await call.enqueue_many([(n,) for n in range(40)])
        async with worker_running(app, concurrency=20):
            with anyio.fail_after(30):
                for job in jobs:
                    await job.result(timeout=30)
    assert len(starts) == 40
    assert starts[-1] - starts[0] >= 2.5, f"40 starts at 10/s took {starts[-1] - starts[0]:.2f}s"
    busiest = max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts)
    assert busiest <= 12, f"{busiest} starts within one second at 10/s"


async def test_limits_are_published_by_the_worker_and_lifted_when_undeclared(
    redis_url: str, namespace: str
) -> None:
    app = Engine(redis_url, namespace=namespace)
    app.queue("api", concurrency=4, rate_limit="50/s")

    @app.task(queue="api")
    async def noop() -> None: ...

    async with app:
        async with worker_running(app):
            settings = (await app.gateway.flow_settings(["api"]))["api"]
            assert settings["concurrency"] == "4" and settings["rate"] == "50/s"
        plain = Engine(redis_url, namespace=namespace)
        plain.task(queue="api", name=noop.name)(lambda: None)
        async with plain, worker_running(plain):
            assert (await plain.gateway.flow_settings(["api"]))["api"] == {}
            assert (await plain.stats())["api"]["concurrency"] == 0


@pytest.mark.cluster_too
async def test_queue_concurrency_holds_across_worker_processes(redis_url: str, namespace: str) -> None:
    from tests.apps.limited import hold, runs_key

    app = Engine(redis_url, namespace=namespace)
    procs = [
        start_worker_process("tests.apps.limited:app", redis_url, namespace, "--concurrency", "20")
        for _ in range(2)
    ]
    try:
        async with app:
            await eventually(lambda: task_announced(app, "hold"), timeout=20, what="workers up")
            await eventually(lambda: _limit_published(app), timeout=20, what="limit published")
            jobs = await enqueue_by_spec(app, hold, [((0.3,), {}) for _ in range(30)])
            for job in jobs:
                await job.result(timeout=60)
            runs = await app.gateway.redis.lrange(runs_key(namespace), 0, -1)
    finally:
        for proc in procs:
            stop_process(proc)
    intervals = [(float(r.split()[0]), float(r.split()[1])) for r in runs]
    assert len(intervals) == 30
    peak = peak_overlap(intervals)
    assert 2 <= peak <= 3, f"peak overlap {peak} with concurrency=3"


async def test_a_killed_workers_slots_come_back_with_its_lease(redis_url: str, namespace: str) -> None:
    from tests.apps.limited import hold, runs_key

    env = {"TEST_VISIBILITY_TIMEOUT": "2"}
    app = Engine(redis_url, namespace=namespace)
    first = start_worker_process("tests.apps.limited:app", redis_url, namespace, env=env)
    procs = [first]
    try:
        async with app:
            await eventually(lambda: _limit_published(app), timeout=20, what="first worker up")
            long = await enqueue_by_spec(app, hold, [((3.0,), {}) for _ in range(3)])
            await eventually(lambda: _running(app, 3), timeout=10, what="three slots taken")
            procs.append(start_worker_process("tests.apps.limited:app", redis_url, namespace, env=env))
            await eventually(lambda: _workers(app, 2), timeout=20, what="second worker up")
            quick = await enqueue_by_spec(app, hold, [((0.0,), {}) for _ in range(3)])
            await anyio.sleep(1.0)
            assert await app.gateway.redis.llen(runs_key(namespace)) == 0  # no slot free
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = time.monotonic()
            for job in quick + long:
                await job.result(timeout=30)
            # The quick jobs waited for the dead worker's leases (2 s), not longer.
            assert time.monotonic() - killed_at < 15
            runs = await app.gateway.redis.lrange(runs_key(namespace), 0, -1)
    finally:
        for proc in procs:
            stop_process(proc)
    assert peak_overlap([(float(r.split()[0]), float(r.split()[1])) for r in runs]) <= 3


async def _limit_published(app: Engine) -> bool:
    return (await app.gateway.flow_settings(["limited"]))["limited"].get("concurrency") == "3"


async def _running(app: Engine, n: int) -> bool:
    return (await app.stats()).get("limited", {}).get("running") == n


async def _workers(app: Engine, n: int) -> bool:
    from engine.inspector.fleet import workers

    return len(await workers(app)) >= n
