"""The PostgreSQL job history, end to end through real workers: rows, error rows, log
lines, an outage of PostgreSQL mid-run, queries and pruning."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from engine import Backoff, Engine, JobContext, JobFailed
from engine.dashboard import metrics
from engine.embedded import EmbeddedPostgres
from engine.history import JobLog
from engine.history.shipper import Shipper
from engine.testing import worker_running
from tests.helpers import eventually, fresh_database

FAST = Backoff(initial=0.05, factor=2.0, max=1.0, jitter=0.0)


async def rows(app: Engine, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(app.database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.mark.cluster_too
async def test_a_run_lands_in_jobs_and_job_logs(logged_app: Engine) -> None:
    app = logged_app

    @app.task(timeout=5, max_attempts=3, backoff=FAST)
    async def flaky(ctx: JobContext, order: int) -> str:
        await ctx.log(f"attempt {ctx.attempt} for order {order}")
        if ctx.attempt < 3:
            raise RuntimeError(f"gateway timeout {ctx.attempt}")
        await ctx.log("charged", level="warning")
        return "ok"

    @app.task(timeout=5, max_attempts=2, backoff=FAST)
    async def doomed(ctx: JobContext) -> None:
        raise ValueError("never works")

    @app.task(timeout=5)
    async def fine(ctx: JobContext, n: int) -> int:
        return n * 2

    async with app, worker_running(app):
        a = await flaky.enqueue(7)
        b = await doomed.enqueue()
        many = await fine.enqueue_many([(i,) for i in range(20)])
        assert await a.result(timeout=20) == "ok"
        with pytest.raises(JobFailed):
            await b.result(timeout=20)
        await many[-1].result(timeout=20)
        ids = [a.id, b.id, *(j.id for j in many)]
        await eventually(lambda: _rows_final(app, ids), timeout=30, what="history rows")

    jobs = {r["id"]: r for r in await rows(app, "SELECT * FROM jobs")}
    assert len(jobs) == 22
    assert jobs[a.id]["status"] == "completed" and jobs[a.id]["attempts"] == 3
    assert jobs[a.id]["task_name"] == "flaky" and jobs[a.id]["queue_name"] == "default"
    assert '"args": [7]' in jobs[a.id]["payload"] and jobs[a.id]["result"] == '"ok"'
    assert jobs[b.id]["status"] == "failed" and jobs[b.id]["attempts"] == 2
    assert jobs[b.id]["error"] == "ValueError: never works"
    assert all(jobs[j.id]["status"] == "completed" for j in many)
    assert jobs[a.id]["created_at"] <= jobs[a.id]["processed_at"] <= jobs[a.id]["finished_at"]

    logs = await app.job_logs(a.id)
    assert [(line.level, line.content.splitlines()[0]) for line in logs] == [
        ("info", "attempt 1 for order 7"),
        ("error", "RuntimeError: gateway timeout 1"),
        ("info", "attempt 2 for order 7"),
        ("error", "RuntimeError: gateway timeout 2"),
        ("info", "attempt 3 for order 7"),
        ("warning", "charged"),
    ]
    assert "Traceback (most recent call last)" in logs[1].content
    failed_logs = await app.job_logs(b.id)
    assert [line.level for line in failed_logs] == ["error", "error"]  # one per failed attempt

    page = await app.history(status="failed")
    assert [j.id for j in page.jobs] == [b.id]
    assert [j.id for j in (await app.history(search="never works")).jobs] == [b.id]  # error text
    assert [j.id for j in (await app.history(search=a.id)).jobs] == [a.id]
    found = await app.history(task="fine", limit=15)
    assert len(found.jobs) == 15 and found.next_cursor
    rest = await app.history(task="fine", limit=15, cursor=found.next_cursor)
    assert len(rest.jobs) == 5 and {j.id for j in found.jobs} | {j.id for j in rest.jobs} == {
        j.id for j in many
    }


async def _rows_final(app: Engine, ids: list[str]) -> bool:
    found = await rows(app, "SELECT status FROM jobs WHERE id = ANY($1)", ids)
    return len(found) == len(ids) and all(r["status"] in ("completed", "failed") for r in found)


async def test_postgres_outage_mid_run_loses_no_row(tmp_path: Any, redis_url: str, namespace: str) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", fast=True)
    server.start()
    try:
        app = Engine(redis_url, database_url=server.url, namespace=namespace)

        @app.task(timeout=5, max_attempts=2, backoff=FAST)
        async def work(ctx: JobContext, n: int) -> int:
            await anyio.sleep(0.005)
            if n % 50 == 0:
                raise ValueError(f"bad {n}")
            return n

        async with app, worker_running(app, concurrency=20) as worker:
            first = await work.enqueue_many([(i,) for i in range(1, 251)])
            await eventually(lambda: _completed_at_least(app, 100), timeout=30, what="some done")
            await anyio.to_thread.run_sync(server.stop)
            second = await work.enqueue_many([(i,) for i in range(251, 501)])
            await eventually(
                lambda: _completed_at_least(app, 480), timeout=60, what="jobs done while PG is down"
            )
            shipper = worker.shipper
            assert shipper is not None

            async def retried() -> bool:  # PostgreSQL stays down until the shipper failed twice
                return shipper.failures >= 2

            await eventually(retried, timeout=30, what="the shipper retrying against the outage")
            await anyio.to_thread.run_sync(server.start)
            ids = [j.id for j in first + second]
            await eventually(lambda: _history_complete(app, ids), timeout=30, interval=0.2, what="every row")
        found = {r["id"]: r["status"] for r in await rows(app, "SELECT id, status FROM jobs")}
        assert len(found) == 500
        expected = {j.id for n, j in enumerate(first + second, start=1) if n % 50 == 0}
        assert {i for i, status in found.items() if status == "failed"} == expected
        await app.close()
    finally:
        server.stop()


async def _completed_at_least(app: Engine, n: int) -> bool:
    s = (await app.stats())["default"]
    return s["completed"] + s["failed"] >= n


async def _history_complete(app: Engine, ids: list[str]) -> bool:
    try:
        found = await rows(app, "SELECT status FROM jobs WHERE id = ANY($1)", ids)
    except (OSError, asyncpg.PostgresError):
        return False
    return len(found) == len(ids) and all(r["status"] in ("completed", "failed") for r in found)


async def test_prune_keeps_failed_jobs(logged_app: Engine) -> None:
    app = logged_app

    @app.task(timeout=5, max_attempts=1)
    async def maybe(ctx: JobContext, ok: bool) -> None:
        if not ok:
            raise ValueError("no")

    async with app, worker_running(app):
        jobs = await maybe.enqueue_many([(True,), (True,), (False,)])
        await eventually(lambda: _rows_final(app, [j.id for j in jobs]), timeout=30, what="rows")
    assert await app.prune(completed_older_than=timedelta(0)) == 2
    left = await rows(app, "SELECT status FROM jobs")
    assert [r["status"] for r in left] == ["failed"]
    assert await app.prune(completed_older_than=timedelta(0), failed_older_than=timedelta(0)) == 1


def test_history_needs_a_database_url(app: Engine) -> None:
    from engine import ConfigurationError

    with pytest.raises(ConfigurationError, match="ENGINE_DATABASE_URL"):
        app.job_log()


async def test_migrate_command(database_url: str) -> None:
    from tests.integration.test_cli import run

    url = await fresh_database(database_url)
    for _ in range(2):  # idempotent
        result = run("-m", "engine", "migrate", "--database-url", url)
        assert result.returncode == 0 and "version 1" in result.stdout, result.stderr
    tables = {r["tablename"] for r in await rows(Engine(database_url=url), "SELECT tablename FROM pg_tables")}
    assert {"jobs", "job_logs"} <= tables
    bad = run("-m", "engine", "migrate", "--database-url", "postgresql://nobody:secret@127.0.0.1:1/x")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "secret" not in bad.stderr


async def test_a_batch_of_jobs_is_one_outbox_entry_counted_in_events(logged_app: Engine) -> None:
    app = logged_app

    @app.task(timeout=5)
    async def export(ctx: JobContext, n: int) -> int:
        return n

    async with app:
        gateway = await app.ready()
        qk = gateway.keys.queue("default")
        handles = await export.enqueue_many([(i,) for i in range(50)])
        assert await gateway.redis.xlen(qk.outbox) == 1  # one entry for the whole batch
        assert await gateway.redis.get(qk.outbox_extra) == "49"
        text = await metrics.render(app)
        assert 'engine_outbox_length{queue="default"} 50' in text

        joblog = JobLog(app.database_url, migrate_on_connect=True)
        shipper = Shipper(gateway.redis, joblog, [qk.outbox], "s1")
        try:
            assert await shipper.run_once() == 1
            assert (shipper.shipped, shipper.backlog) == (50, 0)
        finally:
            await joblog.close()
        assert await gateway.redis.xlen(qk.outbox) == 0
        assert await gateway.redis.exists(qk.outbox_extra) == 0
        found = await rows(app, "SELECT id, status, payload FROM jobs ORDER BY id")
        assert [r["id"] for r in found] == sorted(h.id for h in handles)
        assert {r["status"] for r in found} == {"waiting"}  # nobody ran them: written at once


async def test_enqueue_events_of_jobs_that_moved_on_are_not_written_twice(logged_app: Engine) -> None:
    # A shipper behind its workers finds the enqueue of a job that is done: the job's newer
    # event carries its payload and creation time too, so the row is made once, exactly.
    app = logged_app

    @app.task(timeout=5)
    async def export(ctx: JobContext, n: int) -> int:
        return n * 2

    async with app:
        gateway = await app.ready()
        qk = gateway.keys.queue("default")
        done = await export.enqueue_many([(i,) for i in range(30)])
        cancelled = await export.enqueue(99)
        waiting = await export.with_options(delay=timedelta(hours=1)).enqueue(100)
        assert await cancelled.cancel()
        async with worker_running(app, shipper=False):
            for handle in done:
                await handle.result(timeout=20)
        created = {h.id: int(await gateway.redis.hget(qk.job(h.id), "created")) for h in [*done, cancelled]}

        joblog = JobLog(app.database_url, migrate_on_connect=True)
        # An entry at a time: the enqueues are not in the batch of the events that supersede them.
        shipper = Shipper(gateway.redis, joblog, [qk.outbox], "s1", batch=1)
        try:
            while await shipper.run_once():
                pass
        finally:
            await joblog.close()
        # 32 enqueued (31 superseded), 30 completed, 1 cancelled.
        assert (shipper.superseded, shipper.shipped, shipper.skipped) == (31, 63, 0)
        found = {
            r["id"]: r
            for r in await rows(
                app, "SELECT id, status, payload, created_at, result, last_event, version FROM jobs"
            )
        }
        assert len(found) == 32
        for n, handle in enumerate(done):
            row = found[handle.id]
            assert (row["status"], row["last_event"], row["version"]) == ("completed", "completed", 2)
            assert json.loads(row["payload"]) == {"args": [n], "kwargs": {}}
            assert json.loads(row["result"]) == n * 2
        for handle in [*done, cancelled]:
            assert found[handle.id]["created_at"] == datetime.fromtimestamp(created[handle.id] / 1000, UTC)
        assert found[cancelled.id]["status"] == "cancelled"
        assert json.loads(found[cancelled.id]["payload"]) == {"args": [99], "kwargs": {}}
        assert found[waiting.id]["status"] == "delayed"
