"""The job log under failure: outbox leases between shippers (a dead shipper's entries are
taken over within about a visibility timeout, a live one's not while it renews them), and
deletions (a job deleted, a dead-letter queue purged) reaching PostgreSQL and staying
there whatever order the job's events are shipped in, against real servers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import asyncpg
import pytest

from engine import Backoff, Engine, JobContext, JobFailed
from engine.core.keys import outbox_extra
from engine.history import JobLog, parse_event
from engine.history.shipper import GROUP, Shipper, outbox_key
from engine.testing import Signals, worker_running
from tests.helpers import ROOT, eventually, free_port
from tests.integration.test_joblog import T0, completed, enqueued, logline, shipped_by, xadd_all

VT = 2.0  # a short visibility timeout, so that leases lapse within a test
FAST = Backoff(initial=0.05, factor=2.0, max=1.0, jitter=0.0)


async def count(store: JobLog, table: str) -> int:
    async with store.pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def owners(redis: Any, stream: str) -> dict[str, int]:
    """Consumer -> entries it holds (pending, not acknowledged)."""
    summary = await redis.xpending(stream, GROUP)
    return {c["name"]: int(c["pending"]) for c in summary["consumers"] or ()}


async def holds_for(duration: float, check: Callable[[], Awaitable[None]]) -> None:
    """Assert ``check`` all through ``duration`` seconds (a window to observe, not a wait for
    something to happen)."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        await check()
        await anyio.sleep(0.1)


# --- leases --------------------------------------------------------------------------------------


async def test_a_shipper_stuck_in_a_long_write_keeps_its_lease(
    joblog: JobLog, redis: Any, namespace: str, database_url: str
) -> None:
    stream = outbox_key(namespace, "default")
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_all(redis, stream, [enqueued(f"w{i}", 1, T0 + i) for i in range(20)])
    writer = Shipper(redis, joblog, [stream], "writer", visibility_timeout=VT, signals=Signals())
    idle = Shipper(redis, joblog, [stream], "idle", visibility_timeout=VT)
    blocker = await asyncpg.connect(database_url)
    try:
        # Every write to jobs waits while this transaction holds the table.
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute(f'LOCK TABLE "{joblog.schema}".jobs IN EXCLUSIVE MODE')
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            await eventually(lambda: _holds(redis, stream, "writer", 20), what="the writer holds the entries")
            tg.start_soon(idle.run)

            async def nobody_else() -> None:
                assert await owners(redis, stream) == {"writer": 20}
                assert idle.reclaimed == 0

            await holds_for(3 * VT, nobody_else)  # several timeouts: renewed, never taken
            await lock.rollback()
            await shipped_by(writer, 20)  # the writer's batch committed
            assert await redis.xlen(stream) == 0 and await count(joblog, "jobs") == 20
            tg.cancel_scope.cancel()
    finally:
        await blocker.close()
    assert (writer.shipped, writer.lost, idle.shipped, idle.reclaimed) == (20, 0, 0, 0)


async def _holds(redis: Any, stream: str, consumer: str, entries: int) -> bool:
    return (await owners(redis, stream)).get(consumer) == entries


async def test_a_stalled_shipper_that_lost_its_lease_leaves_the_entries_to_the_new_owner(
    joblog: JobLog, redis: Any, namespace: str, database_url: str
) -> None:
    stream = outbox_key(namespace, "default")
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_all(redis, stream, [enqueued(f"s{i}", 1, T0 + i) for i in range(10)])
    stalled = Shipper(redis, joblog, [stream], "stalled", visibility_timeout=VT, signals=Signals())
    blocker = await asyncpg.connect(database_url)
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute(f'LOCK TABLE "{joblog.schema}".jobs IN EXCLUSIVE MODE')
        async with anyio.create_task_group() as tg:
            tg.start_soon(stalled.run)
            await eventually(
                lambda: _holds(redis, stream, "stalled", 10), what="the shipper holds the entries"
            )
            # What another shipper does once the lease lapsed (here: at once).
            ids = [e["message_id"] for e in await redis.xpending_range(stream, GROUP, "-", "+", 100)]
            await redis.xclaim(stream, GROUP, "new-owner", 0, ids, justid=True)

            async def noticed() -> bool:
                return stalled.lost == 10

            await eventually(noticed, what="the renewal reports the lease lost")
            assert await owners(redis, stream) == {"new-owner": 10}  # not taken back
            await lock.rollback()
            await shipped_by(stalled, 10)  # the stalled shipper's write committed
            assert await redis.xlen(stream) == 0 and await count(joblog, "jobs") == 10
            tg.cancel_scope.cancel()
    finally:
        await blocker.close()
    # It wrote and acknowledged them anyway: harmless, the rows are the same.
    assert stalled.shipped == 10 and stalled.lost == 10
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


# A shipper in a process of its own: PostgreSQL is unreachable from it, so it holds what it
# reads, retrying, until it is killed.
_DOOMED_SHIPPER = """
import sys
import anyio
import redis.asyncio as aioredis
from engine.history import JobLog
from engine.history.shipper import Shipper

async def main() -> None:
    client = aioredis.Redis.from_url(sys.argv[1], decode_responses=True)
    store = JobLog(sys.argv[2], connect_timeout=1.0)
    await Shipper(client, store, [sys.argv[3]], "doomed", visibility_timeout=float(sys.argv[4])).run()

anyio.run(main)
"""


@pytest.mark.parametrize("death", ["cancelled", "sigkill"])
async def test_a_dead_shippers_entries_ship_within_about_a_visibility_timeout(
    joblog: JobLog, redis: Any, redis_url: str, namespace: str, death: str
) -> None:
    stream = outbox_key(namespace, "default")
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_all(redis, stream, [enqueued(f"d{i}", 1, T0 + i) for i in range(30)])
    unreachable = f"postgresql://engine@127.0.0.1:{free_port()}/engine"
    survivor = Shipper(redis, joblog, [stream], "survivor", visibility_timeout=VT, signals=Signals())
    proc: anyio.abc.Process | None = None
    doomed_scope = anyio.CancelScope()

    async def doomed() -> None:
        with doomed_scope:
            await Shipper(
                redis, JobLog(unreachable, connect_timeout=1.0), [stream], "doomed", visibility_timeout=VT
            ).run()

    try:
        async with anyio.create_task_group() as tg:
            if death == "sigkill":
                proc = await anyio.open_process(
                    [sys.executable, "-c", _DOOMED_SHIPPER, redis_url, unreachable, stream, str(VT)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            else:
                tg.start_soon(doomed)
            await eventually(
                lambda: _holds(redis, stream, "doomed", 30), what="the doomed shipper holds them"
            )
            tg.start_soon(survivor.run)

            async def kept() -> None:
                # Alive and retrying through its outage: its lease holds.
                assert await owners(redis, stream) == {"doomed": 30}

            await holds_for(2 * VT, kept)
            detail = await redis.xpending_range(stream, GROUP, "-", "+", 100, consumername="doomed")
            since_renewal = min(int(e["time_since_delivered"]) for e in detail) / 1000
            if proc is not None:
                proc.send_signal(signal.SIGKILL)
            else:
                doomed_scope.cancel()
            died = time.monotonic()
            # Woken by the survivor's commits (signalled once acknowledged), not by polling.
            await shipped_by(survivor, 30, timeout=3 * VT)
            lag = time.monotonic() - died
            assert await count(joblog, "jobs") == 30 and await redis.xlen(stream) == 0
            tg.cancel_scope.cancel()
    finally:
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    renewal = lag + since_renewal
    print(f"\n[takeover/{death}] shipped {lag:.2f}s after the death, {renewal:.2f}s after its last renewal")
    assert survivor.reclaimed == 30 and survivor.shipped == 30
    assert lag < 3 * VT


# --- deletions -----------------------------------------------------------------------------------


def deleted(job: str, t: int = T0) -> dict[str, str]:
    return {"e": "deleted", "j": job, "q": "default", "t": str(t)}


def at(entry_id: str, fields: dict[str, Any]) -> Any:
    event = parse_event(entry_id, fields)
    assert event is not None, fields
    return event


async def test_a_deletion_wins_over_the_jobs_earlier_events_whenever_they_arrive(joblog: JobLog) -> None:
    before = [
        at(f"{T0}-1", enqueued("x", 1, T0)),
        at(f"{T0}-2.0", logline("x", T0 + 1, "working")),
        at(f"{T0}-3", completed("x", 2, T0 + 2)),
    ]
    deletion = at(f"{T0 + 5}-0", deleted("x", T0 + 5))
    await joblog.write(before)
    assert await count(joblog, "jobs") == 1 and await count(joblog, "job_logs") == 1
    await joblog.write([deletion])
    assert await count(joblog, "jobs") == 0 and await count(joblog, "job_logs") == 0
    # The same events again, late (a shipper behind the one that shipped the deletion), in
    # one batch with it, or in any order: nothing comes back.
    for batch in (before, [*reversed(before), deletion], [before[1], deletion, before[2]], [deletion]):
        await joblog.write(batch)
        assert await count(joblog, "jobs") == 0 and await count(joblog, "job_logs") == 0, batch
    # Only an event from after the deletion in the outbox writes the job.
    await joblog.write([at(f"{T0 + 5}-1", completed("x", 1, T0 + 6))])
    job = await joblog.job("x")
    assert job is not None and job.status == "completed"
    # A deleted event is only garbage without a job or queue.
    assert parse_event("1-0", {"e": "deleted", "q": "default", "t": "1"}) is None


async def test_a_write_in_flight_when_a_job_is_deleted_cannot_bring_it_back(
    joblog: JobLog, database_url: str
) -> None:
    # The hard case: one shipper is writing the job's earlier events (they are past the
    # tombstone check, waiting on a lock) while another ships its deletion.
    late = [at(f"{T0}-1", enqueued("y", 1, T0)), at(f"{T0}-2", completed("y", 2, T0 + 1))]
    deletion = at(f"{T0 + 5}-0", deleted("y", T0 + 5))
    blocker, watcher = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute(f'LOCK TABLE "{joblog.schema}".jobs IN EXCLUSIVE MODE')
        async with anyio.create_task_group() as tg:
            tg.start_soon(joblog.write, late)
            await eventually(lambda: _waiting(watcher, 1), what="the late write waits")
            tg.start_soon(joblog.write, [deletion])
            await eventually(lambda: _waiting(watcher, 2), what="the deletion waits too")
            await lock.rollback()
    finally:
        await blocker.close()
        await watcher.close()
    assert await count(joblog, "jobs") == 0 and await count(joblog, "deleted_jobs") == 1


async def _waiting(conn: asyncpg.Connection, sessions: int) -> bool:
    """Whether that many sessions wait on a lock (asked outside a transaction: within one,
    PostgreSQL keeps showing the activity as it first saw it)."""
    found = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    return int(found) == sessions


async def test_late_entries_of_a_deleted_job_reclaimed_from_a_dead_shipper_write_nothing(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_all(redis, stream, [enqueued("z"), logline("z", T0 + 1, "hi"), completed("z", 2, T0 + 2)])
    await redis.xreadgroup(GROUP, "dead", {stream: ">"})  # read, then its shipper died
    await xadd_all(redis, stream, [deleted("z", T0 + 9), enqueued("other")])
    alive = Shipper(redis, joblog, [stream], "alive", reclaim_idle_ms=0)
    assert await alive.run_once() == 2  # the deletion first
    assert await alive.reclaim() == 3
    assert await alive.run_once() == 3
    assert [j.id for j in (await joblog.history()).jobs] == ["other"]
    assert await count(joblog, "job_logs") == 0
    assert await redis.xlen(stream) == 0


async def _history_rows(app: Engine, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(app.database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_deleting_a_shipped_job_deletes_its_history(logged_app: Engine) -> None:
    app = logged_app

    @app.task(timeout=5)
    async def export(ctx: JobContext, n: int) -> int:
        await ctx.log(f"exporting {n}")
        return n

    async with app, worker_running(app):
        gone, kept = await export.enqueue(1), await export.enqueue(2)
        assert await gone.result(timeout=20) == 1 and await kept.result(timeout=20) == 2

        async def shipped() -> bool:
            found = await _history_rows(app, "SELECT id FROM jobs WHERE status = 'completed'")
            lines = await _history_rows(app, "SELECT job_id FROM job_logs")
            return len(found) == 2 and len(lines) == 2

        await eventually(shipped, timeout=20, what="both jobs and their log lines in PostgreSQL")
        assert await gone.delete()

        async def forgotten() -> bool:
            return [r["id"] for r in await _history_rows(app, "SELECT id FROM jobs")] == [kept.id]

        await eventually(forgotten, timeout=20, what="the deleted job gone from PostgreSQL")
    assert await app.job_logs(gone.id) == []
    assert [line.content for line in await app.job_logs(kept.id)] == ["exporting 2"]


async def test_purging_the_dead_letters_deletes_the_failed_jobs_history(logged_app: Engine) -> None:
    app = logged_app

    @app.task(timeout=5, max_attempts=2, backoff=FAST)
    async def doomed(ctx: JobContext, n: int) -> None:
        await ctx.log(f"trying {n}")
        raise ValueError(f"never works {n}")

    @app.task(timeout=5)
    async def fine(ctx: JobContext) -> str:
        return "ok"

    async with app:
        gateway = await app.ready()
        qk = gateway.keys.queue("default")
        async with worker_running(app) as worker:
            dead = await doomed.enqueue_many([(i,) for i in range(5)])
            ok = await fine.enqueue()
            for handle in dead:
                with pytest.raises(JobFailed):
                    await handle.result(timeout=20)
            await ok.result(timeout=20)

            async def shipped() -> bool:
                found = await _history_rows(app, "SELECT status FROM jobs")
                return sorted(r["status"] for r in found) == ["completed"] + ["failed"] * 5

            await eventually(shipped, timeout=20, what="every job in PostgreSQL")
            # Two log lines and two error rows per failed job.
            assert len(await _history_rows(app, "SELECT id FROM job_logs")) == 20
            assert worker.shipper is not None
            before = worker.shipper.shipped
            assert await app.dlq("default").purge() == 5

            async def purged() -> bool:
                found = await _history_rows(app, "SELECT id FROM jobs")
                lines = await _history_rows(app, "SELECT id FROM job_logs")
                return [r["id"] for r in found] == [ok.id] and not lines

            await eventually(purged, timeout=20, what="the failed jobs gone from PostgreSQL")
            # One entry for the five deletions, counted as five events, and drained.
            assert worker.shipper.shipped - before == 5
            assert await gateway.redis.xlen(qk.outbox) == 0
            assert await gateway.redis.exists(outbox_extra(qk.outbox)) == 0


async def test_delete_and_purge_write_deleted_events_only_while_the_job_log_is_on(app: Engine) -> None:
    # The events as the scripts write them: one entry per deletion, one per purge call.
    @app.task(timeout=5, max_attempts=1)
    async def doomed(ctx: JobContext) -> None:
        raise ValueError("no")

    async with app:
        gateway = await app.ready()
        qk = gateway.keys.queue("default")
        async with worker_running(app):
            handles = await doomed.enqueue_many([() for _ in range(4)])
            for handle in handles:
                with pytest.raises(JobFailed):
                    await handle.result(timeout=20)
        assert await handles[0].delete()
        assert await gateway.redis.xlen(qk.outbox) == 0  # no job log: nothing written
        await gateway.redis.set(qk.joblog_flag, "1")
        assert await handles[1].delete()
        assert await app.dlq("default").purge() == 2
        entries = await gateway.redis.xrange(qk.outbox)
        assert len(entries) == 2
        assert {k: v for k, v in entries[0][1].items() if k != "t"} == {
            "e": "deleted",
            "j": handles[1].id,
            "q": "default",
        }
        batch = entries[1][1]
        assert (batch["q"], batch["n"]) == ("default", "2")
        assert sorted(e["j"] for e in json.loads(batch["b"])) == sorted(h.id for h in handles[2:])
        assert await gateway.redis.get(qk.outbox_extra) == "1"
