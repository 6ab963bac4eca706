"""Operating cron schedules on a real Redis: pause (skipped ticks, recorded; no catch-up after
resume), run now (one job, not a tick) and recent runs, from the app and the dashboard API.
The scheduler runs one cycle at a time on a FakeClock: no sleeps, no waiting on real time."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from engine import Engine, JobContext
from engine.cron import Scheduler
from engine.dashboard import create_app
from engine.testing import FakeClock


def make(redis_url: str, namespace: str, clock: FakeClock, queue: str = "default") -> Engine:
    app = Engine(redis_url, namespace=namespace, clock=clock)
    if queue != "default":
        app.queue(queue, partitions=3)

    @app.cron("* * * * * *", name="tick", timeout=5, queue=queue)
    async def tick(ctx: JobContext) -> None: ...

    return app


def tick_ids(clock: FakeClock, *seconds_ago: int) -> set[str]:
    return {f"cron-tick-{int((clock.time() - s) * 1000)}" for s in seconds_ago}


async def waiting(app: Engine, queue: str = "default") -> int:
    return (await app.stats())[queue]["waiting"]


async def step(scheduler: Scheduler, clock: FakeClock, seconds: float = 1.0) -> None:
    clock.advance(seconds)
    await scheduler.run_once()


@pytest.mark.cluster_too
@pytest.mark.parametrize("queue", ["default", "events"])
async def test_a_paused_schedule_skips_its_ticks_and_resumes_without_catching_up(
    redis_url: str, namespace: str, queue: str
) -> None:
    clock = FakeClock()
    app = make(redis_url, namespace, clock, queue)
    async with app:
        scheduler = Scheduler(app, "w1")
        await scheduler.run_once()  # elected; nothing due yet
        await step(scheduler, clock)
        assert scheduler.fired == 1 and await waiting(app, queue) == 1

        await app.pause_schedule("tick")
        assert await app.is_schedule_paused("tick")
        for _ in range(3):
            await step(scheduler, clock)
        assert scheduler.fired == 1 and await waiting(app, queue) == 1
        kinds = [run.kind for run in await app.schedule_runs("tick")]
        assert kinds == ["skipped", "skipped", "skipped", "tick"]

        # Another process (a fresh engine, as after a restart) sees the pause and leads on.
        other_app = make(redis_url, namespace, clock, queue)
        async with other_app:
            assert await other_app.is_schedule_paused("tick")
            await scheduler.release()
            other = Scheduler(other_app, "w2")
            await other.run_once()
            await step(other, clock)
            assert other.fired == 0 and await waiting(app, queue) == 1

            # Ticks pass while paused; then it is resumed between two ticks.
            clock.advance(2.5)
            await other_app.resume_schedule("tick")
            assert not await app.is_schedule_paused("tick")
            await other.run_once()
            assert other.fired == 0  # the ticks due before the resume: none caught up
            await step(other, clock, 0.5)
            assert other.fired == 1 and await waiting(app, queue) == 2
            assert await app.job(next(iter(tick_ids(clock, 0)))).info() is not None
            await step(other, clock)
            assert other.fired == 2
        kinds = [run.kind for run in await app.schedule_runs("tick", limit=20)]
        assert kinds[:3] == ["tick", "tick", "skipped"] and "manual" not in kinds


@pytest.mark.cluster_too
async def test_run_now_enqueues_once_and_is_not_a_tick(redis_url: str, namespace: str) -> None:
    clock = FakeClock()
    app = make(redis_url, namespace, clock)
    async with app:
        scheduler = Scheduler(app, "w1")
        await scheduler.run_once()
        await step(scheduler, clock)
        last = await app.gateway.cron_last_fired_ms("default", "tick")
        clock.advance(0.4)

        job = await app.run_schedule("tick")
        assert await waiting(app) == 2 and job.id.startswith("cron-tick-now-")
        info = await job.info()
        assert info is not None and info.task == "tick"
        assert await app.gateway.cron_last_fired_ms("default", "tick") == last  # not a tick
        await scheduler.run_once()
        assert scheduler.fired == 1  # nothing skipped, nothing repeated

        await step(scheduler, clock, 0.6)  # the next real tick
        assert scheduler.fired == 2 and await waiting(app) == 3
        runs = await app.schedule_runs("tick")
        assert [r.kind for r in runs] == ["tick", "manual", "tick"]
        assert runs[1].job_id == job.id and runs[1].tick_ms is None

        # A paused schedule can still be run by hand.
        await app.pause_schedule("tick")
        again = await app.run_schedule("tick")
        assert again.id != job.id and await waiting(app) == 4

        with pytest.raises(Exception, match="unknown schedule 'nope'"):
            await app.run_schedule("nope")


async def test_resuming_a_schedule_that_is_not_paused_changes_nothing(redis_url: str, namespace: str) -> None:
    clock = FakeClock()
    app = make(redis_url, namespace, clock)
    async with app:
        scheduler = Scheduler(app, "w1")
        await scheduler.run_once()
        clock.advance(1.0)  # a tick is due, not fired yet
        await app.resume_schedule("tick")
        await scheduler.run_once()
        assert scheduler.fired == 1 and await app.job(next(iter(tick_ids(clock, 0)))).info() is not None


async def test_the_runs_list_is_capped(redis_url: str, namespace: str) -> None:
    clock = FakeClock()
    app = make(redis_url, namespace, clock)
    async with app:
        scheduler = Scheduler(app, "w1")
        await scheduler.run_once()
        await app.pause_schedule("tick")
        for _ in range(25):
            await step(scheduler, clock)
        key = f"{app.gateway.keys.queue('default').prefix}cron:runs:tick"
        assert await app.gateway.redis.llen(key) == 20
        assert len(await app.schedule_runs("tick", limit=50)) == 20


def client(asgi: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://localhost")  # type: ignore[arg-type]


async def test_cron_operations_through_the_api(redis_url: str, namespace: str) -> None:
    clock = FakeClock()
    app = make(redis_url, namespace, clock)
    async with app, client(create_app(app)) as c:
        scheduler = Scheduler(app, "w1")
        await scheduler.announce()
        await scheduler.run_once()
        csrf = {"X-CSRF-Token": (await c.get("/api/csrf")).json()["csrf_token"]}

        paused = await c.post("/api/cron/tick/pause", headers=csrf)
        assert paused.status_code == 200 and paused.json() == {"schedule": "tick", "paused": True}
        listed = (await c.get("/api/cron")).json()["schedules"]
        assert [(s["name"], s["paused"]) for s in listed] == [("tick", True)]
        paused_at = datetime.fromisoformat(listed[0]["paused_at"])
        assert paused_at == datetime.fromtimestamp(clock.time(), tz=UTC)
        await step(scheduler, clock)

        ran = await c.post("/api/cron/tick/run", headers=csrf)
        assert ran.status_code == 200 and ran.json()["queue"] == "default"
        detail = (await c.get("/api/cron/tick", params={"limit": "5"})).json()
        assert detail["paused"] is True
        assert [(r["kind"], r["status"]) for r in detail["runs"]] == [
            ("manual", "waiting"),
            ("skipped", None),
        ]
        assert detail["runs"][0]["job_id"] == ran.json()["id"] and detail["runs"][1]["tick"]

        resumed = await c.post("/api/cron/tick/resume", headers=csrf)
        assert resumed.json() == {"schedule": "tick", "paused": False}
        await step(scheduler, clock)
        assert scheduler.fired == 1

        assert (await c.post("/api/cron/nope/run", headers=csrf)).status_code == 404
        assert (await c.get("/api/cron/nope")).status_code == 404
        assert (await c.post("/api/cron/tick/pause")).status_code == 403  # no CSRF token
        page = (await c.get("/cron")).text
        assert "Run now" in page and 'data-kind="tick"' in page

        async with client(create_app(app, read_only=True)) as ro:
            csrf = {"X-CSRF-Token": (await ro.get("/api/csrf")).json()["csrf_token"]}
            assert (await ro.post("/api/cron/tick/run", headers=csrf)).status_code == 403
            assert "Run now" not in (await ro.get("/cron")).text
