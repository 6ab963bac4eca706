"""The test signals and the FakeClock driving a real worker: tests wait on what happened
instead of sleeping, and fake time moves delayed jobs on at once."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from engine import Engine, JobContext, Status
from engine.testing import FakeClock, worker_running


@pytest.mark.cluster_too
async def test_worker_drained_fires_once_its_running_job_has_finished(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace)
    started, release = anyio.Event(), anyio.Event()

    @app.task(timeout=30)
    async def slow(ctx: JobContext) -> str:
        started.set()
        await release.wait()
        return "done"

    async with app:
        job = await slow.enqueue()
        async with worker_running(app) as worker:
            await started.wait()
            worker.stop()
            await anyio.lowlevel.checkpoint()  # let the stop take effect: the job is still running
            assert app.signals.worker_drained.count == 0
            release.set()
            assert await app.signals.worker_drained.wait(1, timeout_s=10) == worker.id
            assert await job.status() == Status.COMPLETED
        assert app.signals.worker_drained.count == 1


@pytest.mark.cluster_too
async def test_reclaimer_reclaimed_fires_for_a_dead_workers_job(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace, visibility_timeout=0.4)
    ran: list[str] = []

    @app.task(queue="orphans", timeout=5)
    async def work(ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    async with app:
        job = await work.enqueue()
        gateway = await app.ready()
        await gateway.ensure_group("orphans")
        (taken,) = await gateway.fetch(["orphans"], "a-worker-that-died", 1)  # and never finishes
        assert taken.job_id == job.id and await job.status() == Status.ACTIVE
        async with worker_running(app, queues=["orphans"]):
            assert await app.signals.reclaimer_reclaimed.wait(1, timeout_s=10) == 1
            assert await job.result(timeout=10) is None
        assert ran == [job.id]


@pytest.mark.cluster_too
async def test_a_fake_clock_moves_a_delayed_job_on_at_once(redis_url: str, namespace: str) -> None:
    clock = FakeClock()
    app = Engine(redis_url, namespace=namespace, clock=clock)

    @app.task(queue="later", timeout=5)
    async def report(ctx: JobContext) -> str:
        return "sent"

    async with app, worker_running(app, queues=["later"]):
        job = await report.with_options(delay=6 * 3600).enqueue()  # six hours from now
        assert await job.status() == Status.DELAYED
        clock.advance(6 * 3600 - 1)
        await anyio.sleep(0.05)
        assert await job.status() == Status.DELAYED  # not due a second early
        clock.advance(1)
        assert await job.result(timeout=10) == "sent"
