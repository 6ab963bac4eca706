"""Read-only views used by the CLI and the dashboard: live job lists, workers, throughput,
and job deletion."""

from __future__ import annotations

import anyio
import pytest

from engine import Engine, JobContext, JobRunning, Status
from engine.inspector import queue_jobs, throughput, workers
from engine.testing import worker_running
from tests.helpers import eventually


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


async def _count(app: Engine, status: str, n: int) -> bool:
    jobs, _ = await queue_jobs(app, "default", status, limit=100)
    return len(jobs) == n


async def _beat_busy(app: Engine, worker_id: str) -> bool:
    return any(b.id == worker_id and b.busy == 3 and len(b.running) == 3 for b in await workers(app))


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
            with pytest.raises(JobRunning):
                await running.delete()
            await running.cancel()
            await eventually(lambda: _status(running, Status.CANCELLED), what="cancelled")
        assert await running.delete() is True
        assert (await app.stats())["default"]["delayed"] == 0


async def _status(job: object, status: Status) -> bool:
    return await job.status() == status  # type: ignore[attr-defined,no-any-return]
