"""The PostgreSQL job log and the outbox shipper, against real PostgreSQL and Redis servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from structlog.testing import capture_logs

from engine.broker import scripts
from engine.core.errors import ConfigurationError, ConnectionFailed
from engine.core.keys import Keys, outbox_extra, outbox_job_prefix
from engine.embedded import EmbeddedPostgres
from engine.history import SCHEMA_VERSION, Event, JobLog, parse_event
from engine.history.pruner import Pruner
from engine.history.shipper import ALARM_INTERVAL_S, GROUP, Shipper, outbox_key, queue_outboxes
from engine.testing import FakeClock, Signals
from tests.helpers import eventually, free_port

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# --- fixtures ----------------------------------------------------------------------------------


# --- event builders (the fields the Lua scripts write) ----------------------------------------


def enqueued(job: str, v: int = 1, t: int = T0, *, args: Any = (1,), task: str = "export", **kw: Any) -> dict:
    fields = {
        "e": "enqueued",
        "j": job,
        "q": "default",
        "task": task,
        "t": str(t),
        "v": str(v),
        "payload": json.dumps({"args": list(args), "kwargs": {"user": job}}),
        "status": "waiting",
        "created": str(t),
    }
    return {**fields, **kw}


def retry(job: str, v: int, t: int, attempts: int, error: str, tb: str = "Traceback...", **kw: Any) -> dict:
    fields = {
        "e": "retry",
        "j": job,
        "q": "default",
        "task": "export",
        "t": str(t),
        "v": str(v),
        "attempts": str(attempts),
        "error": error,
        "traceback": tb,
        "processed": str(t - 10),
        "due": str(t + 1000),
    }
    return {**fields, **kw}


def completed(job: str, v: int, t: int, attempts: int = 1, result: Any = "ok", **kw: Any) -> dict:
    fields = {
        "e": "completed",
        "j": job,
        "q": "default",
        "task": "export",
        "t": str(t),
        "v": str(v),
        "attempts": str(attempts),
        "result": json.dumps(result),
        "processed": str(t - 10),
        "finished": str(t),
    }
    return {**fields, **kw}


def failed(job: str, v: int, t: int, attempts: int, error: str, tb: str = "Traceback...") -> dict:
    return {
        "e": "failed",
        "j": job,
        "q": "default",
        "task": "export",
        "t": str(t),
        "v": str(v),
        "attempts": str(attempts),
        "error": error,
        "traceback": tb,
        "processed": str(t - 10),
        "finished": str(t),
    }


def cancelled(job: str, v: int, t: int, reason: str = "") -> dict:
    return {
        "e": "cancelled",
        "j": job,
        "q": "default",
        "task": "export",
        "t": str(t),
        "v": str(v),
        "attempts": "0",
        "error": reason,
        "finished": str(t),
    }


def replayed(job: str, v: int, t: int) -> dict:
    return {"e": "replayed", "j": job, "q": "default", "task": "export", "t": str(t), "v": str(v)}


def logline(job: str, t: int, message: str, level: str = "info") -> dict:
    # log.lua writes no task and no version
    return {"e": "log", "j": job, "q": "default", "t": str(t), "level": level, "message": message}


_seq = 0


def events(*entries: dict) -> list[Event]:
    """Events with fresh outbox entry ids, as the shipper would parse them."""
    global _seq
    out = []
    for fields in entries:
        _seq += 1
        event = parse_event(f"{T0}-{_seq}", fields)
        assert event is not None, fields
        out.append(event)
    return out


async def dump(store: JobLog) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    async with store.pool.acquire() as conn:
        jobs = await conn.fetch("SELECT * FROM jobs ORDER BY id")
        logs = await conn.fetch("SELECT * FROM job_logs ORDER BY id")
    return [tuple(r) for r in jobs], [tuple(r) for r in logs]


async def row(store: JobLog, job_id: str) -> asyncpg.Record:
    async with store.pool.acquire() as conn:
        record = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert record is not None, job_id
    return record


async def count(store: JobLog, table: str) -> int:
    async with store.pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


# --- schema and connection ---------------------------------------------------------------------


async def test_migrate_twice_is_fine(joblog: JobLog) -> None:
    assert await joblog.migrate() == SCHEMA_VERSION
    assert await joblog.migrate() == SCHEMA_VERSION
    async with joblog.pool.acquire() as conn:
        versions = await conn.fetch("SELECT version FROM engine_schema_version")
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    assert [r["version"] for r in versions] == [SCHEMA_VERSION]
    assert {r["table_name"] for r in tables} >= {"jobs", "job_logs", "engine_schema_version"}


async def test_migrate_drops_the_retention_index_of_earlier_versions(joblog: JobLog) -> None:
    """Retention walks the queue/status index now; the index of its own that earlier versions
    made cost every write and goes."""
    old = "jobs_status_finished_idx"
    async with joblog.pool.acquire() as conn:
        await conn.execute(f"CREATE INDEX {old} ON jobs (status, finished_at) WHERE finished_at IS NOT NULL")
    assert await joblog.migrate() == SCHEMA_VERSION
    async with joblog.pool.acquire() as conn:
        indexes = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs' AND schemaname = current_schema()"
            )
        }
    assert old not in indexes and "jobs_queue_status_created_idx" in indexes


async def test_unreachable_database_names_the_url_with_password_masked() -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/app"
    store = JobLog(url, connect_timeout=2.0)
    with pytest.raises(ConnectionFailed) as info:
        await store.connect()
    assert "127.0.0.1" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert "app:***@" in str(info.value)


@pytest.mark.parametrize("url", ["", "mysql://user:pw@host/db", "postgresql://h:notaport/db"])
def test_invalid_database_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        JobLog(url)
    assert "pw" not in str(info.value)


# --- writes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("one_batch", [True, False])
async def test_retries_then_completed(joblog: JobLog, one_batch: bool) -> None:
    batch = events(
        enqueued("j1", 1, T0, args=(7, "x")),
        retry("j1", 2, T0 + 100, 1, "ValueError: first", "Traceback (first)"),
        retry("j1", 3, T0 + 2000, 2, "ValueError: second", "Traceback (second)"),
        completed("j1", 4, T0 + 5000, 3, {"path": "exports/7.csv"}),
    )
    if one_batch:
        await joblog.write(batch)
    else:
        for event in batch:
            await joblog.write([event])
    job = await joblog.job("j1")
    assert job is not None
    assert (job.status, job.attempts, job.queue, job.task) == ("completed", 3, "default", "export")
    assert job.args == [7, "x"] and job.kwargs == {"user": "j1"}
    assert job.result == {"path": "exports/7.csv"}
    assert job.created_at == at(T0)
    assert job.processed_at == at(T0 + 4990)
    assert job.finished_at == at(T0 + 5000)
    assert job.error is None and job.traceback is None  # each failed attempt's are in the logs
    logs = await joblog.logs("j1")
    assert [(line.level, line.content) for line in logs] == [
        ("error", "ValueError: first\n\nTraceback (first)"),
        ("error", "ValueError: second\n\nTraceback (second)"),
    ]
    assert logs[0].logged_at == at(T0 + 100)
    assert (await row(joblog, "j1"))["version"] == 4


async def test_failed_cancelled_replayed_and_log_lines(joblog: JobLog) -> None:
    await joblog.write(
        events(
            enqueued("f", 1, T0),
            logline("f", T0 + 5, "starting", "info"),
            failed("f", 2, T0 + 10, 1, "boom", "Traceback (boom)"),
            enqueued("c", 1, T0 + 1),
            cancelled("c", 2, T0 + 20, "user asked"),
        )
    )
    job = await joblog.job("f")
    assert job is not None and (job.status, job.attempts, job.error) == ("failed", 1, "boom")
    assert job.finished_at == at(T0 + 10)
    assert [(x.level, x.content) for x in await joblog.logs("f")] == [
        ("info", "starting"),
        ("error", "boom\n\nTraceback (boom)"),
    ]
    job = await joblog.job("c")
    assert job is not None and (job.status, job.error) == ("cancelled", "user asked")

    await joblog.write(events(replayed("f", 3, T0 + 100)))
    job = await joblog.job("f")
    assert job is not None and (job.status, job.attempts, job.finished_at) == ("waiting", 0, None)
    await joblog.write(events(completed("f", 4, T0 + 200, 1, 42)))
    job = await joblog.job("f")
    assert job is not None and (job.status, job.result) == ("completed", 42)


# Text the columns' array literals must carry exactly (the writes send them as literals).
AWKWARD = [
    "",
    "NULL",
    "null",
    'a "quoted" word',
    'back\\slash \\"',
    "{braces}, commas",
    " spaced ",
    "new\nline\ttab",
    "ünïcødé ✓ 𝄞",
]


async def test_any_text_lands_exactly_as_written(joblog: JobLog) -> None:
    batch = []
    for n, text in enumerate(AWKWARD):
        job = f"awkward-{n}"
        payload = json.dumps({"args": [text], "kwargs": {text: text}})
        batch.append(enqueued(job, 1, T0, task=text or "export", payload=payload))
        batch.append(logline(job, T0 + 1, text))
        batch.append(failed(job, 2, T0 + 10, 1, text, tb=text))
    await joblog.write(events(*batch))
    for n, text in enumerate(AWKWARD):
        job = await joblog.job(f"awkward-{n}")
        assert job is not None
        assert (job.task, job.args, job.kwargs) == (text or "export", [text], {text: text})
        assert (job.error, job.traceback) == (text or None, text or None)  # an empty error is none
        assert [(x.level, x.content) for x in await joblog.logs(f"awkward-{n}")] == [
            ("info", text),
            ("error", f"{text}\n\n{text}"),
        ]


async def test_out_of_order_never_moves_a_job_backwards(joblog: JobLog) -> None:
    # The completion arrives first: the row is created from what it carries.
    await joblog.write(events(completed("j", 4, T0 + 5000, 3, "done")))
    job = await joblog.job("j")
    assert job is not None
    assert (job.status, job.attempts, job.result, job.task) == ("completed", 3, "done", "export")
    assert job.args == [] and job.created_at <= at(T0 + 5000)

    # The enqueue event, late: fills in payload and the true creation time, status stays.
    await joblog.write(events(enqueued("j", 1, T0, args=(5,))))
    job = await joblog.job("j")
    assert job is not None
    assert (job.status, job.attempts, job.result) == ("completed", 3, "done")
    assert job.args == [5] and job.created_at == at(T0)

    # A retry after the completion changes no state, but its error line is kept.
    await joblog.write(events(retry("j", 2, T0 + 100, 1, "flaky", "Traceback (flaky)")))
    job = await joblog.job("j")
    assert job is not None and (job.status, job.attempts, job.error) == ("completed", 3, None)
    assert [x.content for x in await joblog.logs("j")] == ["flaky\n\nTraceback (flaky)"]
    assert (await row(joblog, "j"))["version"] == 4

    # Within one batch, reversed order, too.
    await joblog.write(
        events(completed("k", 3, T0 + 900, 2), retry("k", 2, T0 + 500, 1, "e"), enqueued("k", 1, T0 + 10))
    )
    job = await joblog.job("k")
    assert job is not None and (job.status, job.attempts, job.created_at) == ("completed", 2, at(T0 + 10))

    # A log line for a job never seen creates it; any state event then takes over.
    await joblog.write(events(logline("new", T0 + 50, "hello")))
    job = await joblog.job("new")
    assert job is not None and (job.status, job.queue) == ("active", "default")
    await joblog.write(events(failed("new", 3, T0 + 60, 2, "bad")))
    await joblog.write(events(enqueued("new", 1, T0 + 40)))
    job = await joblog.job("new")
    assert job is not None
    assert (job.status, job.task, job.attempts, job.created_at) == ("failed", "export", 2, at(T0 + 40))


async def test_the_same_batch_twice_changes_nothing(joblog: JobLog) -> None:
    batch = events(
        enqueued("a", 1, T0),
        logline("a", T0 + 1, "one"),
        retry("a", 2, T0 + 2, 1, "err", "tb"),
        completed("a", 3, T0 + 3, 2),
        enqueued("b", 1, T0 + 4),
        failed("b", 2, T0 + 5, 1, "dead", "tb"),
        completed("c", 9, T0 + 6),  # enqueue not seen yet
        logline("d", T0 + 7, "only a log line"),
        cancelled("e", 2, T0 + 8),
    )
    await joblog.write(batch)
    first = await dump(joblog)
    await joblog.write(batch)
    assert await dump(joblog) == first
    # And any part of it again, in another order.
    await joblog.write(list(reversed(batch[2:7])))
    assert await dump(joblog) == first
    assert len(first[0]) == 5 and len(first[1]) == 4


async def test_garbage_is_skipped_and_the_rest_lands(joblog: JobLog) -> None:
    garbage: list[dict[str, str]] = [
        {"e": "exploded", "j": "x", "q": "default", "t": str(T0), "v": "1", "task": "t"},
        {"e": "completed", "j": "x", "q": "default"},  # missing fields
        {**completed("x", 2, T0), "attempts": "three"},
        {**completed("x", 2, T0), "v": "-1"},
        {**completed("x", 2, T0), "t": "1e3"},
        {**completed("x", 2, T0), "finished": str(10**30)},
        {**completed("x", 2, T0), "attempts": str(2**40)},
        {**enqueued("x"), "status": "active"},
        {**enqueued("x"), "j": "x" * 5000},
        {**enqueued("x"), "t": 12},  # not a string
        {},
    ]
    with capture_logs() as logs:
        assert all(parse_event(f"1-{i}", fields) is None for i, fields in enumerate(garbage))
    assert len([entry for entry in logs if entry["log_level"] == "error"]) == len(garbage)

    # Invalid JSON and NUL characters are not garbage: kept, nothing lost.
    kept = events(
        enqueued("bad-json", payload="{'not': json"),
        completed("bad-json", 2, T0 + 1, result="[1, 2"),
        enqueued("nul", payload='{"args": ["\\u0000"], "kwargs": {}}'),
        failed("nul", 2, T0 + 1, 1, "zero \x00 byte", "tb \x00"),
    )
    await joblog.write(kept)
    job = await joblog.job("bad-json")
    assert job is not None and job.payload == "{'not': json" and job.result == "[1, 2"
    job = await joblog.job("nul")
    assert job is not None and job.payload == '{"args": ["\\u0000"], "kwargs": {}}'
    assert job.error == "zero \ufffd byte"


# --- the shipper -------------------------------------------------------------------------------


async def xadd_all(redis: Any, stream: str, entries: list[dict]) -> list[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for fields in entries:
            pipe.xadd(stream, fields)
        return list(await pipe.execute())


async def shipped_by(shipper: Shipper, events: int, timeout: float = 10.0) -> None:
    """Wait until ``shipper`` (running in this process, with signals) has shipped ``events``
    in all: woken by each commit, no polling."""
    assert shipper.signals is not None, "give the shipper signals=Signals() to wait on it"
    with anyio.fail_after(timeout):
        while shipper.shipped < events:
            await shipper.signals.shipper_committed.wait(timeout_s=timeout)


async def test_shipper_end_to_end(joblog: JobLog, redis: Any, namespace: str) -> None:
    default, reports = outbox_key(namespace, "default"), outbox_key(namespace, "reports")
    assert default == f"{namespace}:{{default}}:outbox"
    await redis.sadd(f"{namespace}:queues", "default", "reports")
    await xadd_all(redis, default, [enqueued(f"j{i}", 1, T0 + i) for i in range(30)])
    await xadd_all(redis, default, [completed(f"j{i}", 2, T0 + 100 + i) for i in range(30)])
    await xadd_all(
        redis,
        reports,
        [
            {**enqueued("r1"), "q": "reports"},
            {"e": "nonsense"},
            {**logline("r1", T0 + 1, "working"), "q": "reports"},
            {**failed("r1", 2, T0 + 2, 1, "broken"), "q": "reports"},
        ],
    )
    shipper = Shipper(redis, joblog, queue_outboxes(redis, namespace), "s1", batch=25)
    handled = 0
    while (n := await shipper.run_once()) > 0:
        assert n <= 25
        handled += n
    assert handled == 64
    assert (shipper.shipped, shipper.skipped, shipper.backlog) == (63, 1, 0)

    page = await joblog.history(queue="default", status="completed", limit=1000)
    assert len(page.jobs) == 30 and page.next_cursor is None
    job = await joblog.job("r1")
    assert job is not None and (job.queue, job.status) == ("reports", "failed")
    assert [x.level for x in await joblog.logs("r1")] == ["info", "error"]
    for stream in (default, reports):
        assert await redis.xlen(stream) == 0  # deleted
        assert (await redis.xpending(stream, GROUP))["pending"] == 0  # acknowledged


async def test_two_shippers_share_an_outbox(joblog: JobLog, redis: Any, namespace: str) -> None:
    # The group splits each job's events between them, in any order: the result is the same.
    stream = outbox_key(namespace, "default")
    entries: list[dict] = []
    for i in range(150):
        entries += [enqueued(f"s{i}", 1, T0 + i), logline(f"s{i}", T0 + i + 1, "go")]
        entries += [retry(f"s{i}", 2, T0 + i + 2, 1, "once"), completed(f"s{i}", 3, T0 + i + 3, 2, i)]
    await xadd_all(redis, stream, entries)
    shippers = [Shipper(redis, joblog, [stream], f"s{n}", batch=9) for n in range(2)]

    async def drain(shipper: Shipper) -> None:
        while await shipper.run_once() or await redis.xlen(stream):
            pass

    async with anyio.create_task_group() as tg:
        for shipper in shippers:
            tg.start_soon(drain, shipper)
    assert shippers[0].shipped > 0 and shippers[1].shipped > 0
    assert shippers[0].shipped + shippers[1].shipped == len(entries)
    page = await joblog.history(status="completed", limit=1000)
    assert len(page.jobs) == 150
    assert all(j.attempts == 2 and j.result == int(j.id[1:]) and j.args == [1] for j in page.jobs)
    assert await count(joblog, "job_logs") == 300


async def test_shipper_connects_its_joblog_when_needed(
    joblog: JobLog, database_url: str, redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    await xadd_all(redis, stream, [enqueued("lazy")])
    store = JobLog(database_url, schema=joblog.schema)  # not connected yet
    try:
        assert await Shipper(redis, store, [stream], "s1").run_once() == 1
        assert store.connected and await joblog.job("lazy") is not None
    finally:
        await store.close()


async def test_shipper_picks_up_its_own_pending_entries_and_reclaims_dead_ones(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_all(redis, stream, [enqueued("p1"), enqueued("p2"), enqueued("p3")])
    # Two shippers read entries, then crash before writing them.
    await redis.xreadgroup(GROUP, "crashed", {stream: ">"}, count=2)
    await redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=1)

    again = Shipper(redis, joblog, [stream], "crashed")
    assert await again.run_once() == 2  # its own pending entries, first
    assert {j.id for j in (await joblog.history()).jobs} == {"p1", "p2"}
    assert await again.run_once() == 0

    other = Shipper(redis, joblog, [stream], "alive", reclaim_idle_ms=0)
    assert await other.reclaim() == 1
    assert await other.run_once() == 1
    assert {j.id for j in (await joblog.history()).jobs} == {"p1", "p2", "p3"}
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_shipper_recreates_a_lost_group_and_reads_invalid_utf8(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    shipper = Shipper(redis, joblog, [stream], "s1")
    assert await shipper.run_once() == 0
    await redis.delete(stream)  # the group goes with it
    await xadd_all(
        redis, stream, [enqueued("u1"), {**logline("u1", T0 + 1, "x"), "message": b"caf\xe9 \xff"}]
    )
    assert await shipper.run_once() == 2
    lines = await joblog.logs("u1")
    assert [x.content for x in lines] == ["caf\ufffd \ufffd"]
    assert await redis.xlen(stream) == 0


async def test_a_batch_postgres_refuses_is_split_and_only_the_bad_event_set_aside(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    # Something the parser cannot foresee but PostgreSQL refuses (here: a CHECK constraint)
    # must not block the outbox forever.
    async with joblog.pool.acquire() as conn:
        await conn.execute("ALTER TABLE jobs ADD CONSTRAINT no_poison CHECK (task_name <> 'poison')")
    stream = outbox_key(namespace, "default")
    entries = [enqueued(f"ok{i}", 1, T0 + i) for i in range(10)]
    entries.insert(6, enqueued("bad", 1, T0, task="poison"))
    await xadd_all(redis, stream, entries)
    shipper = Shipper(redis, joblog, [stream], "s1")
    with capture_logs() as logs:
        assert await shipper.run_once() == 11
    assert (shipper.shipped, shipper.skipped) == (10, 1)
    assert await count(joblog, "jobs") == 10 and await joblog.job("bad") is None
    assert any(x["event"].startswith("skipping a job-log event PostgreSQL refuses") for x in logs)
    assert await redis.xlen(stream) == 0


def batched(events: list[dict], t: int = T0) -> dict:
    """An outbox entry of a script that changed a batch of jobs: the events share q and t."""
    inner = [{k: v for k, v in event.items() if k not in ("q", "t")} for event in events]
    return {"q": "default", "t": str(t), "n": str(len(events)), "b": json.dumps(inner)}


async def test_batched_entries_ship_and_their_garbage_is_set_aside(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    good = [enqueued(f"g{i}", 1, T0 + i) for i in range(3)]
    broken = {**batched([good[0], good[1]]), "b": "[not json"}
    mixed = batched([good[0], {"e": "enqueued", "j": 5}, good[1]])
    mixed["b"] = mixed["b"][:-1] + ', "nonsense"]'
    await xadd_all(redis, stream, [mixed, broken, batched([good[2]]), completed("g2", 2, T0 + 9)])
    await redis.set(outbox_extra(stream), 2 + 1)  # what the scripts add: n - 1 per entry
    shipper = Shipper(redis, joblog, [stream], "s1")
    with capture_logs() as logs:
        assert await shipper.run_once() == 4
    assert (shipper.shipped, shipper.skipped, shipper.backlog) == (4, 3, 0)
    assert sum(x["event"].startswith("skipping a garbage job-log") for x in logs) == 3
    jobs = {j.id: j for j in (await joblog.history()).jobs}
    assert {i: j.status for i, j in jobs.items()} == {"g0": "waiting", "g1": "waiting", "g2": "completed"}
    assert jobs["g1"].args == [1] and jobs["g1"].created_at == at(T0 + 1)
    assert await redis.xlen(stream) == 0 and await redis.exists(outbox_extra(stream)) == 0


async def test_acknowledging_twice_takes_batched_events_off_the_count_once(
    redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    extra = outbox_extra(stream)
    assert outbox_job_prefix(stream) == Keys(namespace).queue("default").job_prefix
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = await xadd_all(redis, stream, [{"n": "5", "b": "[]"}, {"n": "3", "b": "[]"}, {"e": "log"}])
    await redis.set(extra, 4 + 2)
    await redis.xreadgroup(GROUP, "c1", {stream: ">"})
    ack = redis.register_script(scripts.source("ack"))
    assert await ack(keys=[stream, extra], args=[GROUP, ids[0], 4]) == 1
    assert await ack(keys=[stream, extra], args=[GROUP, ids[0], 4]) == 0  # a retry after a lost reply
    assert await redis.get(extra) == "2"
    await redis.set(extra, 7)  # drift (someone deleted entries by hand): gone once the outbox is empty
    assert await ack(keys=[stream, extra], args=[GROUP, ids[1], 2, ids[2], 0]) == 2
    assert await redis.exists(extra) == 0


async def test_shipper_reloads_its_scripts_after_the_server_lost_them(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    shipper = Shipper(redis, joblog, [stream], "s1")
    await xadd_all(redis, stream, [batched([enqueued("f1"), enqueued("f2")])])
    assert await shipper.run_once() == 1
    await redis.script_flush()  # a restart or failover: the scripts are gone
    await xadd_all(redis, stream, [batched([enqueued("f3"), enqueued("f4")])])
    assert await shipper.run_once() == 1
    assert shipper.shipped == 4 and await count(joblog, "jobs") == 4
    assert await redis.xlen(stream) == 0 and (await redis.xpending(stream, GROUP))["pending"] == 0


async def test_backlog_alarm(joblog: JobLog, redis: Any, namespace: str) -> None:
    stream = outbox_key(namespace, "default")
    await xadd_all(redis, stream, [enqueued(f"b{i}") for i in range(10)])
    shipper = Shipper(redis, joblog, [stream], "s1", batch=2, alarm_length=5)
    with capture_logs() as logs:
        assert await shipper.run_once() == 2
        assert shipper.backlog == 8
        assert await shipper.run_once() == 2
        assert shipper.backlog == 6
    alarms = [x for x in logs if x["log_level"] == "error" and "backlog" in x["event"]]
    assert len(alarms) == 1 and alarms[0]["backlog"] == 8  # at most once every 30 s


async def test_the_alarm_repeats_on_the_engines_clock_and_each_commit_is_signalled(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    stream = outbox_key(namespace, "default")
    await xadd_all(redis, stream, [enqueued(f"c{i}") for i in range(6)] + [{"e": "nonsense"}])
    clock, signals = FakeClock(), Signals()
    shipper = Shipper(redis, joblog, [stream], "s1", batch=1, alarm_length=2, clock=clock, signals=signals)

    async def alarms_after(advance: float) -> int:
        clock.advance(advance)
        with capture_logs() as logs:
            assert await shipper.run_once() == 1
        return sum(x["log_level"] == "error" and "backlog" in x["event"] for x in logs)

    assert await alarms_after(0) == 1  # backlog 6
    assert await alarms_after(ALARM_INTERVAL_S - 0.5) == 0  # 5: not yet 30 s on this clock
    assert await alarms_after(0.5) == 1  # 4
    assert shipper.backlog == 4
    assert (signals.shipper_committed.count, signals.shipper_committed.last) == (3, 1)
    for _ in range(4):
        await shipper.run_once()
    # One signal per batch, with the events it wrote: none for the garbage entry.
    assert list(signals.shipper_committed.values) == [1] * 6 + [0]
    assert (shipper.shipped, shipper.skipped, shipper.backlog) == (6, 1, 0)


async def test_the_pruner_counts_back_from_the_engines_clock(
    joblog: JobLog, redis: Any, redis_url: str, namespace: str
) -> None:
    # (the redis fixture removes the namespace's keys afterwards: the pruner's lock)
    from engine.broker.gateway import Gateway

    recent = int(datetime.now(UTC).timestamp() * 1000)
    await joblog.write(events(enqueued("done", 1, recent), completed("done", 2, recent + 1)))
    clock = FakeClock(datetime.now(UTC) + timedelta(days=3))  # three days on, in the engine's view
    gateway = Gateway(redis_url, namespace)
    try:
        pruner = Pruner(gateway, joblog, timedelta(days=2), None, clock=clock)
        assert await pruner.run_once() == Pruner.INTERVAL_S
    finally:
        await gateway.close()
    assert await joblog.job("done") is None
    with pytest.raises(ValueError, match="timezone"):
        await joblog.prune(completed_older_than=timedelta(0), now=datetime(2026, 1, 1))


async def test_shipper_steps_aside_while_its_worker_is_saturated(
    joblog: JobLog, redis: Any, namespace: str
) -> None:
    # A burst waits in the outbox and ships once it is over; a backlog past half the alarm
    # length ships regardless, so sustained load cannot grow the outbox without end.
    stream = outbox_key(namespace, "default")
    await xadd_all(redis, stream, [enqueued(f"w{i}") for i in range(10)])
    saturated = True
    shipper = Shipper(
        redis, joblog, [stream], "s1", block_ms=50, alarm_length=40, busy=lambda: saturated, signals=Signals()
    )

    async def state(backlog: int, shipped: int) -> bool:
        return (shipper.backlog, shipper.shipped) == (backlog, shipped)

    async with anyio.create_task_group() as tg:
        tg.start_soon(shipper.run)
        await eventually(lambda: state(10, 0), what="backlog seen, nothing shipped")
        saturated = False
        await shipped_by(shipper, 10)  # the burst shipped once it was over
        assert await state(0, 10)
        saturated = True
        await xadd_all(redis, stream, [enqueued(f"x{i}") for i in range(25)])  # over 40 / 2
        await shipped_by(shipper, 35)  # a large backlog shipped while saturated
        assert await state(0, 35)
        tg.cancel_scope.cancel()
    assert await count(joblog, "jobs") == 35


async def test_postgres_outage_delays_the_log_and_loses_nothing(
    redis: Any, namespace: str, tmp_path: Path
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg" / "data", fast=True)
    await anyio.to_thread.run_sync(server.start)
    store = JobLog(server.url, connect_timeout=3.0, command_timeout=5.0)
    try:
        await store.connect()
        await store.migrate()
        stream = outbox_key(namespace, "default")
        shipper = Shipper(redis, store, [stream], "s1", batch=50, block_ms=50, signals=Signals())
        async with anyio.create_task_group() as tg:
            tg.start_soon(shipper.run)
            await xadd_all(redis, stream, [enqueued(f"a{i}", 1, T0 + i) for i in range(100)])
            await shipped_by(shipper, 100)  # the first events
            assert await redis.xlen(stream) == 0
            assert await count(store, "jobs") == 100

            await anyio.to_thread.run_sync(server.stop)
            failures = shipper.failures
            during = [completed(f"a{i}", 2, T0 + 1000 + i) for i in range(100)]
            during += [enqueued(f"b{i}", 1, T0 + 2000 + i) for i in range(100)]
            during += [logline(f"b{i}", T0 + 3000 + i, "hi") for i in range(100)]
            await xadd_all(redis, stream, during)

            async def retrying() -> bool:
                return shipper.failures >= failures + 3

            await eventually(retrying, timeout=20, what="the shipper retries while PostgreSQL is down")
            # Nothing was acknowledged or deleted without its commit.
            assert await redis.xlen(stream) == 300

            await anyio.to_thread.run_sync(server.start)  # same port, same data
            await shipped_by(shipper, 100 + len(during), timeout=30)  # the backlog, after the restart
            assert await redis.xlen(stream) == 0
            tg.cancel_scope.cancel()
        assert await count(store, "jobs") == 200
        assert await count(store, "job_logs") == 100
        page = await store.history(status="completed", limit=1000)
        assert len(page.jobs) == 100
        assert (await redis.xpending(stream, GROUP))["pending"] == 0
    finally:
        await store.close()
        await anyio.to_thread.run_sync(server.stop)


# --- reads -------------------------------------------------------------------------------------


async def test_history_filters_search_and_pages(joblog: JobLog) -> None:
    batch: list[dict] = []
    for i in range(25):
        job = f"job-{i:02d}"
        task = "export" if i % 2 else "import"
        queue = "default" if i < 20 else "reports"
        batch.append({**enqueued(job, 1, T0 + i * 1000, task=task, args=(f"user-{i}",)), "q": queue})
        if i % 5 == 0:
            outcome = failed(job, 2, T0 + i * 1000 + 500, 1, f"KeyError: missing_{i}")
        else:
            outcome = completed(job, 2, T0 + i * 1000 + 500)
        batch.append({**outcome, "q": queue, "task": task})
    await joblog.write(events(*batch))

    # Newest first, keyset pages, no overlap, no gap.
    seen: list[str] = []
    cursor = None
    while True:
        page = await joblog.history(limit=7, cursor=cursor)
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"job-{i:02d}" for i in reversed(range(25))]

    failed_default = await joblog.history(queue="default", status="failed")
    assert [j.id for j in failed_default.jobs] == ["job-15", "job-10", "job-05", "job-00"]
    assert failed_default.jobs[0].error == "KeyError: missing_15"
    assert [j.id for j in (await joblog.history(queue="reports", status="failed")).jobs] == ["job-20"]

    exports = await joblog.history(task="export", since=at(T0 + 10_000), until=at(T0 + 20_000))
    assert [j.id for j in exports.jobs] == ["job-19", "job-17", "job-15", "job-13", "job-11"]

    assert [j.id for j in (await joblog.history(search="missing_2")).jobs] == ["job-20"]  # error
    assert [j.id for j in (await joblog.history(search="USER-7")).jobs] == ["job-07"]  # payload
    assert [j.id for j in (await joblog.history(search="job-03")).jobs] == ["job-03"]  # id
    assert len((await joblog.history(search="IMPORT", limit=100)).jobs) == 13  # task
    assert (await joblog.history(search="100%_")).jobs == []  # LIKE wildcards are literal

    with pytest.raises(ValueError, match="limit"):
        await joblog.history(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await joblog.history(limit=1001)
    with pytest.raises(ValueError, match="cursor"):
        await joblog.history(cursor="not-a-cursor")
    with pytest.raises(ValueError, match="status"):
        await joblog.history(status="exploded")
    with pytest.raises(ValueError, match="timezone"):
        await joblog.history(since=datetime(2026, 1, 1))
    assert await joblog.job("nope") is None
    assert await joblog.logs("nope") == []


async def test_prune_keeps_failed_jobs_unless_asked(joblog: JobLog) -> None:
    old, now = T0 - 10 * 86_400_000, int(datetime.now(UTC).timestamp() * 1000)
    batch = []
    for i in range(12):
        batch += [enqueued(f"old-ok-{i}", 1, old), completed(f"old-ok-{i}", 2, old + 1)]
        batch += [logline(f"old-ok-{i}", old + 1, "line")]
    batch += [enqueued("old-bad", 1, old), failed("old-bad", 2, old + 1, 1, "boom")]
    batch += [enqueued("old-cancel", 1, old), cancelled("old-cancel", 2, old + 1)]
    batch += [enqueued("old-waiting", 1, old)]
    batch += [enqueued("new-ok", 1, now), completed("new-ok", 2, now + 1)]
    for queue in ("mail", "zz"):  # retention walks the queues one by one
        batch += [enqueued(f"{queue}-ok", 1, old, q=queue), completed(f"{queue}-ok", 2, old + 1, q=queue)]
        batch += [enqueued(f"{queue}-new", 1, now, q=queue), completed(f"{queue}-new", 2, now + 1, q=queue)]
    await joblog.write(events(*batch))

    deleted = await joblog.prune(completed_older_than=timedelta(days=1), batch=5)
    assert deleted == 15
    left = {j.id for j in (await joblog.history(limit=100)).jobs}
    assert left == {"old-bad", "old-waiting", "new-ok", "mail-new", "zz-new"}
    assert await count(joblog, "job_logs") == 1  # the failed job's error line

    assert (
        await joblog.prune(completed_older_than=timedelta(days=1), failed_older_than=timedelta(days=1)) == 1
    )
    assert {j.id for j in (await joblog.history(limit=100)).jobs} == {
        "old-waiting",
        "new-ok",
        "mail-new",
        "zz-new",
    }
    with pytest.raises(ValueError):
        await joblog.prune(completed_older_than=timedelta(days=-1))
