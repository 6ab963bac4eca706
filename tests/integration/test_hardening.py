"""No input, load or fault takes a worker down: garbage bytes in entries and hashes, absurd
job options, jobs that kill their workers, more Redis calls at once than the pool holds."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Backoff, Engine, JobContext
from engine.broker.gateway import NewJob, runnable_entry
from engine.core.errors import ConfigurationError
from engine.core.keys import GROUP
from engine.core.limits import MAX_ATTEMPTS, MAX_PAYLOAD_DEPTH, MAX_WORKER_DEATHS
from engine.core.model import Status
from engine.testing import worker_running
from engine.worker.executor import Executor
from tests.helpers import enqueue_by_spec, eventually, start_worker_process, stop_process

# Bytes that are not UTF-8, in every field a worker reads: the job id, task, payload, options.
GARBAGE: list[dict[bytes, bytes]] = [
    {b"j": b"\xff\xfe\xfd", b"t": b"\x80task", b"p": b'{"args":["\xc3("]}'},
    {b"\xff\xff": b"\xfe", b"p": b"\xff"},
    {b"j": b"job-\xe9", b"t": b"noop", b"p": b"[]", b"o": b"\xff", b"m": b"1e9"},
    {b"garbage": b"\x00\xff not a job"},
]


def raw_client(app: Engine) -> aioredis.Redis:
    """A client that writes and reads bytes as they are, like a buggy or hostile producer."""
    return aioredis.Redis.from_url(app.redis_url)


async def _dead_letters(app: Engine, queue: str = "default") -> list[dict[str, str]]:
    gateway = app.gateway
    return [fields for _, fields in await gateway.dlq_entries(queue, newest_first=False)]


async def test_entries_of_any_bytes_are_dead_lettered_once_and_nothing_else_is_disturbed(
    redis_url: str, namespace: str
) -> None:
    # Fresh garbage read by a busy worker (start.lua's read), by an idle one (XREADGROUP),
    # and garbage left pending by a dead worker, reclaimed in one batch with real jobs.
    app = Engine(redis_url, namespace=namespace, visibility_timeout=1.0)

    @app.task(timeout=5)
    async def noop(ctx: JobContext, n: int) -> int:
        return n

    gateway = app.gateway
    qk = gateway.keys.queue("default")
    raw = raw_client(app)
    garbage_ids: list[bytes] = []
    async with app:
        await gateway.ensure_group("default")
        for fields in GARBAGE:
            garbage_ids.append(await raw.xadd(qk.stream, fields))  # type: ignore[arg-type]
        # A dead worker read garbage and real jobs together, and never finished them.
        orphans = await noop.enqueue_many([(i,) for i in range(20)])
        for fields in GARBAGE:
            garbage_ids.append(await raw.xadd(qk.stream, fields))  # type: ignore[arg-type]
        await raw.xreadgroup(GROUP, "dead-worker", {qk.stream: ">"})
        fresh = await noop.enqueue_many([(i,) for i in range(20, 40)])
        async with worker_running(app) as worker:
            assert [await j.result(timeout=15) for j in [*orphans, *fresh]] == list(range(40))
            # Idle now: garbage arriving is read by the blocking XREADGROUP.
            for fields in GARBAGE:
                garbage_ids.append(await raw.xadd(qk.stream, fields))  # type: ignore[arg-type]
            later = await noop.enqueue_many([(i,) for i in range(40, 60)])
            assert [await j.result(timeout=15) for j in later] == list(range(40, 60))

            async def all_buried() -> bool:
                return len(await _dead_letters(app)) >= len(garbage_ids)

            await eventually(all_buried, timeout=15, what="every garbage entry dead-lettered")
            assert not worker.stopped.is_set()
        dead = await _dead_letters(app)
        # Each garbage entry dead-lettered exactly once, with a reason; no real job there.
        assert sorted(d["entry"] for d in dead) == sorted(i.decode() for i in garbage_ids)
        assert all(d["error"] for d in dead)
        pending = await gateway.redis.xpending(qk.stream, GROUP)
        assert pending["pending"] == 0 and await gateway.redis.xlen(qk.stream) == 0
        for job in [*orphans, *fresh, *later]:
            info = await job.info()
            assert info is not None and info.status == Status.COMPLETED and info.attempts <= 2
        # The listing shows the garbage escaped, not as an exception.
        listed = await app.dlq().list(limit=100)
        assert len(listed) == len(garbage_ids)
        assert any("\\xff\\xfe\\xfd" in d.id for d in listed)
        json.dumps([d.id for d in listed])  # plain text: encodable anywhere
    await raw.aclose()


async def test_dead_letters_and_hashes_of_any_bytes_can_be_listed_and_read(app: Engine) -> None:
    gateway = app.gateway
    qk = gateway.keys.queue("default")
    raw = raw_client(app)
    async with app:
        await raw.xadd(qk.dlq, {b"j": b"\xff", b"error": b"\xfe\xff", b"attempts": b"x", b"at": b"1e99"})
        await raw.hset(
            qk.job("tampered"),
            mapping={
                b"status": b"\xff",
                b"attempts": b"many",
                b"payload": b"[" * 5000,
                b"created": b"99999999999999999999",
                b"progress": b"\xff",
                b"result": b"\xff",
            },
        )
        await raw.xadd(qk.dlq, {b"j": b"tampered", b"error": b"boom"})
        listed = await app.dlq().list()
        assert {d.id for d in listed} == {"\\xff", "tampered"}
        tampered = next(d for d in listed if d.id == "tampered")
        assert tampered.created_at is None and tampered.attempts == 0
        assert tampered.raw_payload is not None and tampered.raw_payload.startswith("[[[")
        info = await app.job("tampered", "default").info()
        assert info is not None and info.status == Status.FAILED
        await raw.rpush(qk.logs("tampered"), b"\xff", b"{not json", b'{"message": 1}')
        lines = await app.job("tampered", "default").logs()
        assert [line["message"] for line in lines] == ["\\xff", "{not json", '{"message": 1}']
    await raw.aclose()


# --- absurd options ----------------------------------------------------------------------


async def test_absurd_options_are_refused_at_enqueue_with_the_bound(app: Engine) -> None:
    @app.task(timeout=5)
    async def noop(ctx: JobContext, data: Any = None) -> None:
        return None

    deep: Any = []
    for _ in range(1000):
        deep = [deep]
    async with app:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"timeout": 1e12}, "timeout must be"),
            ({"timeout": float("nan")}, "timeout must be"),
            ({"max_attempts": 1_000_000}, "max_attempts must be"),
            ({"max_attempts": 0}, "max_attempts must be"),
            ({"delay": 1e12}, "delay must be"),
            ({"delay": timedelta(days=365 * 20)}, "delay must be"),
            ({"delay": float("inf")}, "delay must be"),
            ({"run_at": datetime(9999, 1, 1, tzinfo=UTC)}, "10 years"),
            ({"idempotency_key": "k", "idempotency_ttl": 1e12}, "idempotency_ttl"),
            ({"job_id": "x" * 5000}, "job_id must be"),
        ]
        for options, message in cases:
            with pytest.raises(ConfigurationError, match=message):
                await noop.with_options(**options).enqueue()
        with pytest.raises(TypeError, match=f"deeper than {MAX_PAYLOAD_DEPTH}"):
            await noop.enqueue(deep)
        with pytest.raises(TypeError, match="deeper than"):
            await app.enqueue("noop", deep)  # by name, as the CLI and HTTP API do
        with pytest.raises(ConfigurationError, match="timeout must be"):
            await app.with_options("noop", timeout=1e12).enqueue()
        with pytest.raises(TypeError, match="unknown enqueue option"):
            app.with_options("noop", timeout_s=5)
        with pytest.raises(ConfigurationError, match="max_attempts"):
            app.task(name="many", max_attempts=MAX_ATTEMPTS + 1)(noop.fn)
        with pytest.raises(ConfigurationError, match="timeout"):
            app.task(name="long", timeout=1e12)(noop.fn)
        with pytest.raises(ConfigurationError, match="Backoff"):
            Backoff(initial=1e12)
        # At the bounds themselves, and with the data nested as deep as allowed, it works.
        ok: Any = []
        for _ in range(MAX_PAYLOAD_DEPTH - 2):
            ok = [ok]
        await noop.with_options(timeout=30 * 86400, max_attempts=MAX_ATTEMPTS, delay=3600).enqueue(ok)
        by_name = await app.with_options("noop", delay=3600).with_options(max_attempts=2).enqueue(ok)
        assert (await app.stats())["default"]["delayed"] == 2
        info = await by_name.info()
        assert info is not None and info.max_attempts == 2 and info.status == "delayed"


async def test_a_worker_survives_absurd_options_it_reads_back_and_dead_letters_the_job(app: Engine) -> None:
    # Jobs written past the edge (an older build, a hand-made entry): the worker must not die.
    @app.task(timeout=5)
    async def noop(ctx: JobContext) -> str:
        return "ok"

    gateway = app.gateway
    async with app:
        absurd = [
            NewJob(id="huge-timeout", task="noop", payload=b"{}", timeout=1e12),
            NewJob(id="huge-attempts", task="noop", payload=b"{}", max_attempts=10**12),
            NewJob(id="nan-timeout", task="noop", payload=b"{}", timeout=float("nan")),
        ]
        for job in absurd:
            await gateway.enqueue("default", [job])
        deep = b'{"args":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        await gateway.enqueue("default", [NewJob(id="deep", task="noop", payload=deep)])
        good = await noop.enqueue_many([() for _ in range(10)])
        async with worker_running(app) as worker:
            assert [await j.result(timeout=10) for j in good] == ["ok"] * 10
            await eventually(lambda: _count_dlq(app, 4), what="4 dead letters")
            assert not worker.stopped.is_set()
        errors = {d.id: d.error or "" for d in await app.dlq().list()}
        assert set(errors) == {"huge-timeout", "huge-attempts", "nan-timeout", "deep"}
        assert all(
            errors[i].startswith("InvalidJob") for i in ("huge-timeout", "huge-attempts", "nan-timeout")
        )
        assert "PayloadError" in errors["deep"]
        # Its page data (the API's and the dashboard's source) reads without error.
        for job_id in errors:
            assert (await app.job(job_id).info()) is not None


async def _count_dlq(app: Engine, n: int) -> bool:
    return await app.dlq().count() >= n


async def test_an_exception_while_preparing_a_job_dead_letters_it_and_the_worker_goes_on(
    app: Engine,
) -> None:
    # The second wall: whatever goes wrong in the engine's own code around an attempt.
    @app.task(timeout=5)
    async def noop(ctx: JobContext) -> str:
        return "ok"

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message for you")

    @app.task(timeout=5, max_attempts=1)
    async def odd(ctx: JobContext) -> str:
        raise Unprintable()

    @app.task(timeout=5, max_attempts=1)
    async def surrogate(ctx: JobContext) -> str:
        raise ValueError("lone surrogate \udc80 in the message")

    async with app:
        job = await odd.enqueue()
        bad = await surrogate.enqueue()
        fine = await noop.enqueue()
        executor_run = Executor._run

        async def broken_once(self: Executor, started: Any) -> Any:
            if started.job_id == fine.id and started.attempt == 1:
                raise RuntimeError("a bug in the engine")
            return await executor_run(self, started)

        Executor._run = broken_once  # type: ignore[method-assign]
        try:
            async with worker_running(app) as worker:
                await eventually(lambda: _count_dlq(app, 3), what="3 dead letters")
                assert not worker.stopped.is_set()
        finally:
            Executor._run = executor_run  # type: ignore[method-assign]
        errors = {d.id: d.error or "" for d in await app.dlq().list()}
        assert errors[fine.id].startswith("InternalError: the worker could not run this job")
        assert errors[job.id].startswith("Unprintable: <the exception's message could not be read>")
        assert "\\udc80" in errors[bad.id]


async def test_a_job_that_kills_its_worker_is_dead_lettered_after_a_few_deaths(
    redis_url: str, namespace: str
) -> None:
    # max_attempts=1000: only the count of worker deaths can stop it.
    from tests.apps.counting import crash_often, runs_key

    env = {"TEST_VISIBILITY_TIMEOUT": "0.5"}
    app = Engine(redis_url, namespace=namespace)
    async with app:
        (job,) = await enqueue_by_spec(app, crash_often, [((), {})])
        deaths = 0
        proc = None
        try:
            for _ in range(MAX_WORKER_DEATHS + 3):  # a supervisor restarting each dead worker
                proc = start_worker_process("tests.apps.counting:app", redis_url, namespace, env=env)

                async def died_or_dead_lettered(proc: Any = proc) -> bool:
                    return proc.poll() is not None or await job.status() == Status.FAILED

                await eventually(died_or_dead_lettered, timeout=30, what="worker death or dead letter")
                if proc.poll() is not None:
                    deaths += 1
                if await job.status() == Status.FAILED:
                    break
                stop_process(proc)
        finally:
            if proc is not None:
                stop_process(proc)
        info = await job.info()
        assert info is not None and info.error is not None and "PoisonJob" in info.error
        runs = await app.gateway.redis.hget(runs_key(namespace), job.id)
        assert int(runs) == MAX_WORKER_DEATHS == deaths


# --- load: more calls at once than the pool's connections --------------------------------


async def test_concurrency_400_with_logs_and_progress_and_500_concurrent_reads(app: Engine) -> None:
    running = 0
    peak = 0
    gate = anyio.Event()

    @app.task(timeout=60)
    async def chatty(ctx: JobContext, n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running >= 400:
            gate.set()
        with anyio.move_on_after(10):
            await gate.wait()  # all 400 at once, then every one talks to Redis together
        await ctx.log(f"job {n} started")
        await ctx.progress(0.5)
        await ctx.log(f"job {n} halfway")
        running -= 1
        return n

    async with app:
        jobs = await chatty.enqueue_many([(i,) for i in range(2000)])
        async with worker_running(app, concurrency=400):
            results = [await j.result(timeout=120) for j in jobs]
        assert results == list(range(2000))
        assert peak == 400
        stats = (await app.stats())["default"]
        assert stats["completed"] == 2000 and stats["failed"] == 0 and stats["retried"] == 0
        infos = await gather([j.info() for j in jobs[:500]])
        assert all(i is not None and i.status == Status.COMPLETED for i in infos)


async def gather(calls: list[Any]) -> list[Any]:
    out: list[Any] = [None] * len(calls)

    async def one(i: int, call: Any) -> None:
        out[i] = await call

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    return out


async def test_unreachable_redis_error_masks_a_query_password() -> None:
    from engine.core.errors import ConnectionFailed
    from tests.helpers import free_port

    app = Engine(f"redis://127.0.0.1:{free_port()}/0?password=s3cret", connect_timeout=1)
    with pytest.raises(ConnectionFailed) as raised:
        await app.connect()
    assert "s3cret" not in str(raised.value) and "password=***" in str(raised.value)
    await app.close()


# --- fuzz: whatever an entry and its job hash hold ---------------------------------------

_FIELD = st.sampled_from([b"j", b"t", b"p", b"o", b"m", b"k", b"x", b"\xff"])
_VALUE = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"noop", b"1", b"-1", b"1e12", b"nan", b"inf", b"{}", b'{"args":[1]}']),
)
_HASH = st.dictionaries(
    st.sampled_from(
        [
            *(b"status", b"task", b"payload", b"attempts", b"timeout", b"max_attempts", b"tick", b"created"),
            *(b"v", b"exp", b"ck", b"pr", b"ran", b"worker"),
        ]
    ),
    _VALUE,
    max_size=14,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entry=st.dictionaries(_FIELD, _VALUE, min_size=1, max_size=7), job_hash=_HASH)
def test_fuzz_any_entry_and_hash_is_started_or_dead_lettered_without_an_exception(
    redis_url: str, fuzz_namespaces: Iterator[str], entry: dict[bytes, bytes], job_hash: dict[bytes, bytes]
) -> None:
    anyio.run(_one_fuzz_case, redis_url, next(fuzz_namespaces), entry, job_hash)


@pytest.fixture
def fuzz_namespaces(redis_url: str) -> Iterator[Iterator[str]]:
    """A fresh namespace for each example, all under one prefix, deleted in one scan at the
    end (a scan per example crawls a keyspace the rest of the suite has filled)."""
    prefix = f"fz{os.urandom(4).hex()}n"
    yield (f"{prefix}{n}" for n in itertools.count())

    async def delete() -> None:
        raw = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in raw.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 500):
            await raw.delete(*keys[start : start + 500])
        await raw.aclose()

    anyio.run(delete)


async def _one_fuzz_case(
    redis_url: str, namespace: str, entry: dict[bytes, bytes], job_hash: dict[bytes, bytes]
) -> None:
    app = Engine(redis_url, namespace=namespace)

    @app.task(timeout=5)
    async def noop(ctx: JobContext, *args: Any) -> list[Any]:
        return list(args)

    gateway = app.gateway
    qk = gateway.keys.queue("default")
    raw = raw_client(app)
    try:
        await gateway.ensure_group("default")
        if job_hash:
            entry = {**entry, b"j": b"fuzzed"}
            await raw.hset(qk.job("fuzzed"), mapping=job_hash)  # type: ignore[arg-type]
        await raw.xadd(qk.stream, entry)  # type: ignore[arg-type]
        executor = Executor(app, anyio.CapacityLimiter(1))
        read = await gateway.read(["default"], "fuzzer", 10, None)
        assert len(read) == 1
        fresh = runnable_entry(*read[0])  # must not raise, whatever it holds
        started = await gateway.start_entries("fuzzer", read)
        if fresh is not None:
            assert (await executor.run(fresh)).kind in ("completed", "failed")
        for job in started:
            outcome = await executor.run(job)
            # Cancelled only as expired: an "exp" in the past (a job not started in time).
            assert outcome.kind in ("completed", "failed") or (job.expired and outcome.value == "expired")
            await gateway.finish([outcome], app.retention)
        pending = await gateway.redis.xpending(qk.stream, GROUP)
        assert pending["pending"] == 0, "an entry was left pending: it would loop"
        await app.dlq().list()
        await app.job("fuzzed", "default").info()
    finally:
        await raw.aclose()
        await app.close()


async def test_the_pool_waits_for_a_free_connection_then_gives_up_clearly(redis_url: str) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from engine.broker.pool import WaitingConnectionPool

    pool = WaitingConnectionPool.from_url(redis_url, max_connections=2, wait_timeout=5.0)
    client = aioredis.Redis.from_pool(pool)
    # 50 calls that each hold a connection for 20 ms, through 2 connections: all succeed.
    replies = await gather([client.blpop(["engine-test-never"], timeout=0.02) for _ in range(50)])
    assert replies == [None] * 50
    await client.aclose()

    pool = WaitingConnectionPool.from_url(redis_url, max_connections=1, wait_timeout=0.2)
    client = aioredis.Redis.from_pool(pool)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.blpop, ["engine-test-never"], 1)

        async def taken() -> bool:  # the blocking call holds the only connection
            return len(pool._in_use_connections) == 1

        await eventually(taken, what="the only connection in use")
        with pytest.raises(RedisConnectionError, match=r"no Redis connection free within 0\.2s"):
            await client.ping()
    assert await client.ping()  # and the pool works again once it is released
    await client.aclose()
