"""Redis Sentinel: a ``redis+sentinel://`` URL finds the master, and a worker rides out the
master's SIGKILL and the replica's promotion without losing an acknowledged job."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from engine import ConfigurationError, Engine, JobContext
from engine.broker import RedisError
from engine.core.errors import ConnectionFailed
from engine.embedded import EmbeddedSentinel
from engine.testing import worker_running
from tests.helpers import eventually


def test_bad_sentinel_urls_are_clear_errors() -> None:
    for url, words in (
        ("redis+sentinel://127.0.0.1:26379", "no master name"),
        ("redis+sentinel://127.0.0.1:x/mymaster", "is not host:port"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/zero", "is not master_name"),
    ):
        with pytest.raises(ConfigurationError, match=words):
            Engine(url)


async def test_a_sentinel_url_reaches_the_master(sentinel_url: str, namespace: str) -> None:
    app = Engine(sentinel_url, namespace=namespace)

    @app.task(timeout=5)
    async def double(ctx: JobContext, n: int) -> int:
        return 2 * n

    async with app, worker_running(app):
        assert not app.gateway.cluster
        assert await (await double.enqueue(21)).result(timeout=10) == 42


async def test_a_worker_rides_out_a_sentinel_failover(sentinel: Any, namespace: str) -> None:
    if not isinstance(sentinel, EmbeddedSentinel):
        pytest.skip("needs the embedded Sentinel set, to kill its master")
    app = Engine(sentinel.url, namespace=namespace)
    runs: dict[str, int] = {}

    @app.task(timeout=10, max_attempts=20)
    async def record(ctx: JobContext, n: int) -> int:
        runs[ctx.job_id] = runs.get(ctx.job_id, 0) + 1
        return n

    acknowledged: list[str] = []
    refused = 0
    stop = anyio.Event()

    async def produce() -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            try:
                acknowledged.append((await record.enqueue(n)).id)
            except (RedisError, ConnectionFailed, OSError):
                refused += 1  # no master for a moment: not acknowledged
            n += 1
            await anyio.sleep(0.002)

    killed = None
    try:
        async with app, worker_running(app, concurrency=50) as worker:
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                await eventually(lambda: _true(len(acknowledged) >= 200), timeout=30, what="200 enqueued")
                killed = sentinel.kill_master()
                promoted = await anyio.to_thread.run_sync(sentinel.wait_for_failover, killed)
                mark = len(acknowledged)
                await eventually(
                    lambda: _true(len(acknowledged) >= mark + 200),
                    timeout=30,
                    what="enqueues on the new master",
                )
                stop.set()
            assert promoted != killed

            async def all_ran() -> bool:
                return set(acknowledged) <= set(runs)

            await eventually(all_ran, timeout=60, what="every acknowledged job run")
            assert not worker.stopped.is_set(), "the worker exited"
        lost = [job_id for job_id in acknowledged if job_id not in runs]
        print(f"\n[sentinel] {len(acknowledged)} acknowledged, {refused} refused, {len(lost)} lost")
        assert lost == []
    finally:
        stop.set()
        if killed is not None:
            await anyio.to_thread.run_sync(sentinel.restart_node, killed)


async def _true(value: bool) -> bool:
    return value
