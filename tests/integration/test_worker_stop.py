"""Stopping a worker strands no entry: a read in flight when stop() is called finishes and
what it delivered runs on the stopping worker, instead of sitting in the consumer's pending
list until a reclaim (about 1.25 visibility timeouts later).

Every app here has a visibility timeout far longer than any deadline, so a reclaim cannot
hide a stranded entry: an entry left pending on a stopped consumer fails the test.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import anyio
import pytest
import redis as sync_redis
from redis.cluster import RedisCluster
from structlog.testing import capture_logs

from engine import Engine, JobContext, Status
from engine.broker.connection import blocked_reads
from engine.broker.scripts import bindings
from engine.core.keys import GROUP
from engine.embedded import EmbeddedRedis
from engine.worker import Worker
from engine.worker.fetcher import STOP_TIMEOUT_S
from tests.helpers import eventually

# Far past every deadline below: only a stranded entry's reclaim could take that long.
VISIBILITY_TIMEOUT_S = 120.0
ROUNDS = 12
STUCK = "fetching did not end"  # the warning of the stuck-read cancel


def _app(redis_url: str, namespace: str) -> tuple[Engine, Any]:
    app = Engine(redis_url, namespace=namespace, visibility_timeout=VISIBILITY_TIMEOUT_S)

    @app.task(queue="stops", timeout=30)
    async def noop(ctx: JobContext, i: int) -> int:
        return i

    return app, noop


def _worker(app: Engine, name: str) -> Worker:
    return app.worker(queues=["stops"], concurrency=10, name=name, handle_signals=False, cron=False)


async def _pending_by_consumer(redis: Any, stream: str) -> dict[str, int]:
    summary = await redis.xpending(stream, GROUP)
    return {str(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}


async def _blocked_reads(redis: Any, stream: str) -> int:
    """Clients blocked in XREADGROUP on the stream's node (flag ``b``)."""
    if hasattr(redis, "get_node_from_key"):
        await redis.initialize()  # the slot map, before the first command
        clients = await redis.client_list(target_nodes=redis.get_node_from_key(stream))
    else:
        clients = await redis.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", ""))


async def _all_completed(jobs: list[Any]) -> bool:
    for job in jobs:
        if await job.status() != Status.COMPLETED:
            return False
    return True


@pytest.mark.cluster_too
async def test_stopping_a_worker_blocked_in_its_read_runs_what_the_read_delivered(
    redis_url: str, namespace: str, redis: Any
) -> None:
    """The worst moment, made certain: the worker idles in XREADGROUP BLOCK, a job reaches
    the stream (the server delivers its entry to this consumer at once) and stop() comes
    before the worker's event loop has seen the reply. The job is put in the stream by a
    *synchronous* client, which holds the event loop until the server has answered, and
    stop() follows without an await in between: the reply is then certainly unread."""
    app, noop = _app(redis_url, namespace)
    sync = _sync_client(redis_url)
    async with app:
        qk = app.gateway.keys.queue("stops")
        await app.gateway.ensure_group("stops")
        promote = app.gateway.scripts.script("promote")
        jobs = []
        stranded: dict[str, int] = {}
        for i in range(ROUNDS):
            # Delayed far into the future: no promoter moves it; the sync call below does.
            jobs.append(await noop.with_options(delay=3600).enqueue(i))
            worker = _worker(app, f"{namespace}-stopper-{i}")
            baseline = await _blocked_reads(redis, qk.stream)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await worker.started.wait()
                await eventually(
                    lambda baseline=baseline: _more_than(redis, qk.stream, baseline),
                    what="the worker blocked in its read",
                )
                call = bindings.promote(
                    delayed=qk.delayed,
                    stream=qk.stream,
                    job_prefix=qk.job_prefix,
                    now_ms=int(time.time() * 1000) + 7200_000,
                    limit=10,
                )
                moved, _ = sync.eval(promote.source, len(call.keys), *call.keys, *call.args)
                worker.stop()  # no await since the promotion: the worker has not run
                assert moved == 1
            left = (await _pending_by_consumer(redis, qk.stream)).get(worker.id, 0)
            if left:
                stranded[worker.id] = left
        sync.close()
        assert stranded == {}, f"entries left pending on stopped consumers: {stranded}"
        # A second worker finds nothing it would have to wait a reclaim for.
        async with anyio.create_task_group() as tg:
            second = _worker(app, f"{namespace}-second")
            tg.start_soon(second.run)
            await eventually(lambda: _all_completed(jobs), timeout=10, what="every job completed")
            second.stop()
        assert await _pending_by_consumer(redis, qk.stream) == {}


def _sync_client(url: str) -> Any:
    """A synchronous client on the test's server (a cluster client on the cluster), connected."""
    with sync_redis.Redis.from_url(url) as plain:
        info = plain.info("cluster")
    if str(info.get("cluster_enabled", 0)) == "1":
        client: Any = RedisCluster.from_url(url, decode_responses=True)
    else:
        client = sync_redis.Redis.from_url(url, decode_responses=True)
    client.ping()
    return client


async def _more_than(redis: Any, stream: str, baseline: int) -> bool:
    return await _blocked_reads(redis, stream) > baseline


@pytest.mark.cluster_too
async def test_workers_stopped_over_and_over_under_a_producer_lose_no_time(
    redis_url: str, namespace: str, redis: Any
) -> None:
    """A producer enqueues without pause while workers are started and stopped one after
    another; every job completes within seconds (no reclaim needed) and no entry is left
    pending on any stopped consumer."""
    app, noop = _app(redis_url, namespace)
    async with app:
        stream = app.gateway.keys.queue("stops").stream
        await app.gateway.ensure_group("stops")
        jobs: list[Any] = []
        producing = True

        async def produce() -> None:
            i = 0
            while producing:
                jobs.append(await noop.enqueue(i))  # one at a time: paced by its round trips
                i += 1

        names = []
        async with anyio.create_task_group() as outer:
            outer.start_soon(produce)
            for i in range(ROUNDS):
                worker = _worker(app, f"{namespace}-churn-{i}")
                names.append(worker.id)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    await worker.started.wait()
                    # Stop it while it runs jobs (it reads some as the producer adds them).
                    await eventually(lambda worker=worker: _ran_some(worker), what="the worker running jobs")
                    worker.stop()
            producing = False
        pending = await _pending_by_consumer(redis, stream)
        assert {name: n for name, n in pending.items() if name in names and n} == {}
        async with anyio.create_task_group() as tg:
            second = _worker(app, f"{namespace}-second")
            tg.start_soon(second.run)
            await eventually(lambda: _all_completed(jobs), timeout=15, what="every job completed")
            second.stop()
        assert jobs, "the producer enqueued nothing"


async def _ran_some(worker: Worker) -> bool:
    return worker.processed > 0


async def test_stopping_an_idle_worker_takes_at_most_about_one_read(
    redis_url: str, namespace: str, redis: Any
) -> None:
    """stop() lets the read in flight end by itself: an idle worker stops within its BLOCK
    time (plus round trips), not instantly, and never needs the stuck-read cancel."""
    app, _ = _app(redis_url, namespace)
    async with app:
        stream = app.gateway.keys.queue("stops").stream
        await app.gateway.ensure_group("stops")
        worker = _worker(app, f"{namespace}-idle")
        baseline = await _blocked_reads(redis, stream)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await worker.started.wait()
                await eventually(lambda: _more_than(redis, stream, baseline), what="the worker in its read")
                began = time.monotonic()
                worker.stop()
                await worker.stopped.wait()
                took = time.monotonic() - began
        assert took < STOP_TIMEOUT_S, f"an idle worker took {took:.2f}s to stop"
        assert not [e for e in logs if str(e.get("event", "")).startswith(STUCK)]


async def test_a_stop_while_the_server_hangs_gives_up_on_the_read_in_time(namespace: str) -> None:
    """A server that stops answering (SIGSTOP: no error, no reply) cannot hold a stopping
    worker: its read is cancelled STOP_TIMEOUT_S after the stop, as every read was before."""
    server = EmbeddedRedis()
    server.start()
    assert server.pid is not None
    try:
        app, _ = _app(server.url, namespace)
        async with app:
            client: Any = app.gateway.redis
            stream = app.gateway.keys.queue("stops").stream
            worker = _worker(app, f"{namespace}-hung")
            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    await worker.started.wait()
                    await eventually(
                        lambda: _blocked_reads(client, stream), what="the worker blocked in its read"
                    )
                    os.kill(server.pid, signal.SIGSTOP)
                    try:
                        began = time.monotonic()
                        worker.stop()

                        async def gave_up() -> bool:
                            return any(str(e.get("event", "")).startswith(STUCK) for e in logs)

                        await eventually(gave_up, timeout=STOP_TIMEOUT_S + 5, what="the read cancelled")
                        took = time.monotonic() - began
                    finally:
                        os.kill(server.pid, signal.SIGCONT)  # the rest of the shutdown talks to it
                    with anyio.fail_after(10):
                        await worker.stopped.wait()
            assert STOP_TIMEOUT_S - 0.5 < took < STOP_TIMEOUT_S + 2, f"gave up after {took:.2f}s"
    finally:
        server.stop()


@pytest.mark.cluster_too
async def test_a_stop_ends_the_blocked_reads_at_once_instead_of_waiting_out_block(
    redis_url: str, namespace: str
) -> None:
    """CLIENT UNBLOCK ends this process's blocked XREADGROUPs as if BLOCK ran out: they
    return nothing, so nothing is delivered and stranded, and the worker need not wait."""
    app, _noop = _app(redis_url, namespace)
    async with app:
        worker = app.worker(handle_signals=False, concurrency=5)
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await worker.started.wait()

            async def blocked() -> bool:
                return await _own_blocked_reads(app) >= 1

            await eventually(blocked)
            # Ended from outside, a read returns empty and the loop reads again (nothing lost).
            assert await app.gateway.unblock_reads() >= 1
            await eventually(blocked)
            job = await _noop.enqueue(7)
            assert await job.result(timeout=10) == 7
            worker.stop()
        assert await _own_blocked_reads(app) == 0


async def _own_blocked_reads(app: Engine) -> int:
    return len(await blocked_reads(app.gateway.redis))
