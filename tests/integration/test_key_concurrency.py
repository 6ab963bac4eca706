"""Per-key concurrency: ``app.queue(q, key_concurrency=N)`` with ``with_options(concurrency_key=)``.

start.lua holds a slot per running job in its key's sorted set, so the limit holds across
worker processes as the queue-wide one does; a job whose key is full stays pending to the
worker that read it and starts when a slot frees, while other keys' jobs go on.
"""

from __future__ import annotations

import time

import anyio
import pytest

from engine import ConfigurationError, Engine, JobContext
from engine.dashboard.overview import queue_summary
from engine.testing import worker_running
from tests.helpers import peak_overlap


@pytest.mark.cluster_too
async def test_jobs_of_one_key_never_overlap_and_other_keys_run_meanwhile(
    redis_url: str, namespace: str
) -> None:
    app = Engine(redis_url, namespace=namespace)
    app.queue("billing", key_concurrency=1)
    runs: dict[str, list[tuple[float, float]]] = {}

    @app.task(queue="billing", timeout=10)
    async def charge(ctx: JobContext, customer: str) -> None:
        began = time.monotonic()
        await anyio.sleep(0.15)
        runs.setdefault(customer, []).append((began, time.monotonic()))

    async with app, worker_running(app, concurrency=10):
        jobs = []
        for _ in range(4):
            for customer in ("a", "b", "c"):
                jobs.append(await charge.with_options(concurrency_key=customer).enqueue(customer))
        unkeyed = [await charge.enqueue("free") for _ in range(4)]
        with anyio.fail_after(30):
            for job in [*jobs, *unkeyed]:
                await job.result(timeout=30)
    for customer in ("a", "b", "c"):
        assert len(runs[customer]) == 4
        assert peak_overlap(runs[customer]) == 1, (customer, runs[customer])
    everything = [interval for key in ("a", "b", "c") for interval in runs[key]]
    assert peak_overlap(everything) >= 2  # keys ran side by side
    assert peak_overlap(runs["free"]) >= 2  # jobs without a key are not limited by it


async def test_a_key_allowed_two_runs_two_at_a_time(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    app.queue("q", key_concurrency=2)
    runs: list[tuple[float, float]] = []

    @app.task(queue="q", timeout=10)
    async def work(ctx: JobContext) -> None:
        began = time.monotonic()
        await anyio.sleep(0.1)
        runs.append((began, time.monotonic()))

    async with app, worker_running(app, concurrency=10):
        jobs = await work.with_options(concurrency_key="k").enqueue_many([()] * 8)
        with anyio.fail_after(30):
            for job in jobs:
                await job.result(timeout=30)
        gateway = await app.ready()
        running = gateway.keys.queue("q").running
        # Every slot was given back with its outcome.
        assert await gateway.redis.zcard(running + ":k") == 0
        assert await gateway.redis.hlen(running + ":keys") == 0
        # Published by the worker, shown by the dashboard.
        assert (await queue_summary(app, "q"))["key_concurrency"] == 2
    assert peak_overlap(runs) == 2


@pytest.mark.parametrize("bad", [0, -1, "1", True, 1.5])
def test_a_bad_key_concurrency_is_refused(bad: object) -> None:
    app = Engine("redis://127.0.0.1:1", namespace="never-used")
    with pytest.raises(ConfigurationError, match=f"key_concurrency={bad!r}"):
        app.queue("q", key_concurrency=bad)  # type: ignore[arg-type]


async def test_a_bad_concurrency_key_is_refused(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(queue="q", timeout=10)
    async def noop(ctx: JobContext) -> None:
        pass

    async with app:
        for bad in ("", 42, "x" * 2000):
            with pytest.raises(ConfigurationError, match="concurrency_key must be a non-empty string"):
                await noop.with_options(concurrency_key=bad).enqueue()
