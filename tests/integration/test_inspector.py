"""Read-only views used by the CLI and the dashboard: live job lists, workers, throughput,
and job deletion."""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest

from engine import Backoff, Engine, JobContext, JobRunning, Status
from engine.core.model import WorkerBeat
from engine.inspector import (
    InvalidCursor,
    encode_cursor,
    queue_jobs,
    queue_lags,
    scan_live,
    throughput,
    workers,
)
from engine.testing import FakeClock, worker_running
from tests.helpers import eventually


@pytest.mark.cluster_too
async def test_live_job_lists_page_through_each_status(app: Engine) -> None:
    gate = anyio.Event()

    @app.task(timeout=30, max_attempts=1)
    async def hold(ctx: JobContext, n: int) -> None:
        if n < 0:
            raise ValueError("negative")
        await gate.wait()

    async with app:
        waiting = await hold.enqueue_many([(i,) for i in range(7)])
        delayed = [await hold.with_options(delay=600).enqueue(100 + i) for i in range(3)]
        page, cursor = await queue_jobs(app, "default", "waiting", limit=5)
        assert [j.id for j in page] == [j.id for j in waiting[:5]] and cursor
        page2, cursor2 = await queue_jobs(app, "default", "waiting", limit=5, cursor=cursor)
        assert [j.id for j in page2] == [j.id for j in waiting[5:]] and cursor2 is None
        page, _ = await queue_jobs(app, "default", "delayed", limit=10)
        assert sorted(j.id for j in page) == sorted(j.id for j in delayed)
        with pytest.raises(ValueError, match="status"):
            await queue_jobs(app, "default", "nope")
        with pytest.raises(ValueError, match="cursor"):
            await queue_jobs(app, "default", "waiting", cursor="garbage")
        async with worker_running(app, concurrency=3) as worker:
            await eventually(lambda: _count(app, "active", 3), what="3 active")
            beats = await workers(app)
            await eventually(lambda: _beat_busy(app, worker.id), what="heartbeat")
            assert beats and beats[0].queues == ["default"]
            failing = await hold.enqueue(-1)
            gate.set()
            with pytest.raises(Exception, match="negative"):
                await failing.result(timeout=10)
            await eventually(lambda: _count(app, "waiting", 0), what="drained")
        failed, _ = await queue_jobs(app, "default", "failed")
        assert [j.id for j in failed] == [failing.id]
        assert await workers(app) == []  # a stopped worker forgets itself
        minutes = await throughput(app, "default", minutes=5)
        assert len(minutes) == 5 and sum(c for _, c, _ in minutes) == 7 and sum(f for *_, f in minutes) == 1


async def test_live_lists_skip_the_entries_finished_and_retried_attempts_leave(app: Engine) -> None:
    gate = anyio.Event()

    @app.task(timeout=30, max_attempts=3, backoff=Backoff(initial=0.0))
    async def work(ctx: JobContext, n: int) -> None:
        if n == 1 and ctx.attempt == 1:
            raise RuntimeError("once more")
        if n < 2:
            await gate.wait()

    async with app:
        # The first job runs on while the others end: every entry after its own lingers.
        held = await work.enqueue(0)
        retried = await work.enqueue(1)  # runs again from an entry of its own, and holds
        await work.enqueue_many([(n,) for n in range(2, 12)])
        async with worker_running(app, concurrency=5):
            await eventually(lambda: _count(app, "active", 2), what="2 active")
            await eventually(lambda: _completed(app, 10), what="10 completed")
            stream = app.gateway.keys.queue("default").stream
            assert await app.gateway.redis.xlen(stream) > 2  # entries linger behind the first
            active, _ = await queue_jobs(app, "default", "active", limit=100)
            assert sorted(j.id for j in active) == sorted([held.id, retried.id])
            page = await scan_live(app, ["default"], ["waiting", "active", "completed"], limit=100)
            assert sorted(j.id for j in page.jobs) == sorted([held.id, retried.id])
            stats = (await app.stats())["default"]
            assert (stats["waiting"], stats["active"]) == (0, 2)
            gate.set()
            await eventually(lambda: _completed(app, 12), what="all completed")
        assert await app.gateway.redis.xlen(stream) == 0


async def _completed(app: Engine, n: int) -> bool:
    return (await app.stats())["default"]["completed"] >= n


async def _count(app: Engine, status: str, n: int) -> bool:
    jobs, _ = await queue_jobs(app, "default", status, limit=100)
    return len(jobs) == n


async def _beat_busy(app: Engine, worker_id: str) -> bool:
    return any(b.id == worker_id and b.busy == 3 and len(b.running) == 3 for b in await workers(app))


@pytest.mark.cluster_too
async def test_delete_a_job(app: Engine) -> None:
    started = anyio.Event()

    @app.task(timeout=30)
    async def slow(ctx: JobContext) -> None:
        started.set()
        await anyio.sleep(30)

    async with app:
        waiting = await slow.enqueue()
        await waiting.cancel()
        later = await slow.with_options(delay=60).enqueue()
        assert await later.delete() is True and await later.info() is None
        assert await app.job("missing").delete() is False
        async with worker_running(app):
            running = await slow.enqueue()
            await started.wait()
            # An idle worker runs a job while its start is being recorded (the fast path):
            # until the record lands, the job still reads as waiting and may be deleted.
            await eventually(lambda: _status(running, Status.ACTIVE), what="start recorded")
            with pytest.raises(JobRunning):
                await running.delete()
            await running.cancel()
            await eventually(lambda: _status(running, Status.CANCELLED), what="cancelled")
        assert await running.delete() is True
        assert (await app.stats())["default"]["delayed"] == 0


async def _status(job: object, status: Status) -> bool:
    return await job.status() == status  # type: ignore[attr-defined,no-any-return]


async def test_the_read_side_tells_time_by_the_engines_clock(redis_url: str, namespace: str) -> None:
    """Heartbeat ages, lags and throughput minutes are measured on ``engine.clock``."""
    clock = FakeClock(time.time() + 3 * 86400)  # three days on, in the engine's view
    app = Engine(redis_url, namespace=namespace, clock=clock)

    @app.task(timeout=5)
    async def noop(ctx: JobContext) -> None:
        return None

    try:
        async with app:
            gateway = app.gateway
            beat = WorkerBeat("w1", "host", 1, ["default"], 1, clock.time() - 60, clock.time() - 10, 0, 0, [])
            await gateway.write_beat("w1", msgspec.json.encode(beat))
            assert [b.id for b in await workers(app)] == ["w1"]
            clock.advance(6)
            assert await workers(app) == []  # 16 s since its last beat, by the engine's clock

            await noop.enqueue()  # its stream entry id is Redis's own (real) time
            lag = (await queue_lags(app, ["default"]))["default"]
            assert 3 * 86400 - 60 < lag < 3 * 86400 + 60
            minutes = await throughput(app, "default", minutes=3)
            assert [m for m, _, _ in minutes][-1] == int(clock.time() // 60) * 60

            sessions = gateway.reads.sessions
            assert not await sessions.is_revoked("s1")
            await sessions.revoke("s1", ttl_s=30)
            assert await sessions.is_revoked("s1") and not await sessions.is_revoked("s2")
            assert 0 < await gateway.redis.ttl(gateway.keys.revoked_session("s1")) <= 30
    finally:
        await app.close()


async def test_queue_jobs_and_the_dashboard_share_one_scan(app: Engine) -> None:
    """A page cursor of queue_jobs is the live scan's; a dead letter whose job data is gone
    is listed from its entry."""

    @app.task(timeout=5)
    async def noop(ctx: JobContext) -> None:
        return None

    async with app:
        jobs = await noop.with_options(delay=600).enqueue_many([() for _ in range(3)])
        page, cursor = await queue_jobs(app, "default", "delayed", limit=2)
        rest, end = await queue_jobs(app, "default", "delayed", limit=2, cursor=cursor)
        assert sorted(j.id for j in page + rest) == sorted(j.id for j in jobs) and end is None
        with pytest.raises(InvalidCursor, match="another listing"):
            await queue_jobs(app, "default", "delayed", cursor=encode_cursor("history", [1]))
        gateway = app.gateway
        await gateway.redis.xadd(gateway.keys.queue("default").dlq, {"j": "01GONE", "error": "lost"})
        failed, _ = await queue_jobs(app, "default", "failed")
        assert [(j.id, j.status, j.error) for j in failed] == [("01GONE", Status.FAILED, "lost")]
