"""Reliability on real servers: retries, dead letters, reclaim, poison, idempotency,
cancellation, bounded memory and Redis outages."""

from __future__ import annotations

import itertools
import signal
import time
from typing import Any

import anyio
import pytest

from engine import (
    Backoff,
    ConfigurationError,
    Engine,
    JobContext,
    JobFailed,
    Retry,
    Status,
    UnrecoverableError,
)
from engine.core.keys import GROUP
from engine.embedded import EmbeddedRedis
from engine.testing import worker_running
from tests.helpers import enqueue_by_spec, eventually, start_worker_process, stop_process, task_announced

NO_JITTER = Backoff(initial=0.1, factor=4.0, max=10.0, jitter=0.0)


@pytest.mark.cluster_too
async def test_fails_twice_then_succeeds_with_growing_gaps(app: Engine) -> None:
    starts: list[float] = []

    @app.task(timeout=5, max_attempts=5, backoff=NO_JITTER)
    async def flaky(ctx: JobContext) -> str:
        starts.append(time.monotonic())
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return "ok"

    async with worker_running(app):
        job = await flaky.enqueue()
        assert await job.result(timeout=20) == "ok"
    info = await job.info()
    assert info is not None and info.status == Status.COMPLETED and info.attempts == 3
    assert info.error == "RuntimeError: boom 2"  # the last failure stays visible
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.4  # initial * factor ** (attempt - 1)


@pytest.mark.cluster_too
async def test_always_failing_job_goes_to_the_dlq_and_replays(app: Engine) -> None:
    attempts: list[int] = []
    heal = False

    @app.task(timeout=5, max_attempts=3, backoff=NO_JITTER)
    async def broken(ctx: JobContext, order: int) -> str:
        attempts.append(ctx.attempt)
        await ctx.log(f"try {ctx.attempt}")
        if not heal:
            raise ValueError(f"order {order} is broken")
        return "fixed"

    async with worker_running(app):
        job = await broken.enqueue(7)
        with pytest.raises(JobFailed, match="order 7 is broken"):
            await job.result(timeout=20)
        assert attempts == [1, 2, 3]
        dead = await app.dlq("default").list()
        assert [d.id for d in dead] == [job.id]
        assert dead[0].status == Status.FAILED and dead[0].attempts == 3 and dead[0].args == [7]
        assert dead[0].traceback is not None and "ValueError: order 7 is broken" in dead[0].traceback
        assert "test_reliability.py" in dead[0].traceback
        assert (await app.stats())["default"]["dlq"] == 1

        heal = True
        assert await app.dlq("default").replay(job.id) is True
        assert await job.result(timeout=10) == "fixed"
        assert await app.dlq("default").list() == []
        assert await app.dlq("default").replay(job.id) is False  # not failed any more


async def test_unrecoverable_error_skips_retries(app: Engine) -> None:
    attempts: list[int] = []

    @app.task(timeout=5, max_attempts=5)
    async def hopeless(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        raise UnrecoverableError("bad input")

    async with worker_running(app):
        job = await hopeless.enqueue()
        with pytest.raises(JobFailed, match="bad input"):
            await job.result(timeout=10)
    assert attempts == [1]
    assert [d.id for d in await app.dlq().list()] == [job.id]


async def test_retry_exception_sets_the_delay(app: Engine) -> None:
    starts: list[float] = []

    @app.task(timeout=5, max_attempts=3, backoff=Backoff(initial=60, jitter=0))
    async def later(ctx: JobContext) -> int:
        starts.append(time.monotonic())
        if ctx.attempt == 1:
            raise Retry(delay=0.3)
        return ctx.attempt

    async with worker_running(app):
        assert await (await later.enqueue()).result(timeout=10) == 2
    assert starts[1] - starts[0] >= 0.3  # not the 60 s backoff


@pytest.mark.cluster_too
async def test_delay_and_run_at(app: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    ran: dict[str, float] = {}

    @app.task(timeout=5)
    async def mark(ctx: JobContext, name: str) -> None:
        ran[name] = time.time()

    async with worker_running(app):
        t0 = time.time()
        delayed = await mark.with_options(delay=0.5).enqueue("delay")
        by_delta = await mark.with_options(delay=timedelta(seconds=0.4)).enqueue("timedelta")
        at = await mark.with_options(run_at=datetime.now(UTC) + timedelta(seconds=0.3)).enqueue("at")
        assert await delayed.status() == Status.DELAYED and await by_delta.status() == Status.DELAYED
        for job in (delayed, by_delta, at):
            await job.result(timeout=10)
        with pytest.raises(ConfigurationError, match="delay must be"):
            await mark.with_options(delay=timedelta(seconds=-1)).enqueue("never")
    assert ran["delay"] - t0 >= 0.5 and ran["timedelta"] - t0 >= 0.4 and ran["at"] - t0 >= 0.3


@pytest.mark.cluster_too
async def test_cancel_delayed_and_running_jobs(app: Engine) -> None:
    started = anyio.Event()
    runs: list[int] = []

    @app.task(timeout=30, max_attempts=5)
    async def long_job(ctx: JobContext, n: int) -> None:
        runs.append(n)
        started.set()
        await anyio.sleep(30)

    async with worker_running(app):
        delayed = await long_job.with_options(delay=60).enqueue(1)
        assert await delayed.cancel() is True
        assert await delayed.status() == Status.CANCELLED
        running = await long_job.enqueue(2)
        await started.wait()
        # An idle worker runs a job before start.lua has recorded its start; cancelled in
        # between, it records no attempt (that race has its own test below): wait for the start.
        await eventually(lambda: _is_active(running), what="the start recorded")
        assert await running.cancel() is True
        with pytest.raises(JobFailed, match="cancelled"):
            await running.result(timeout=10)
    info = await running.info()
    assert info is not None and info.status == Status.CANCELLED and info.attempts == 1
    assert runs == [2]  # cancelled, not retried
    assert (await app.stats())["default"]["delayed"] == 0


async def test_job_cancelled_after_an_idle_worker_read_it_is_stopped(app: Engine) -> None:
    # An idle worker runs a fresh job straight from the entry it read and confirms the start
    # meanwhile; a cancel landing between the read and that confirmation must still win.
    runs: list[int] = []
    finished: list[int] = []

    @app.task(timeout=30)
    async def long_job(ctx: JobContext, n: int) -> None:
        runs.append(n)
        await anyio.sleep(30)
        finished.append(n)

    gateway = await app.ready()
    real_read = gateway.read
    reading, cancelled = anyio.Event(), anyio.Event()

    async def read_then_cancel(*args: Any, **kwargs: Any) -> list[tuple[str, str, dict[str, str]]]:
        reading.set()
        entries = await real_read(*args, **kwargs)
        for _queue, _entry, fields in entries:
            assert await app.job(fields["j"]).cancel() is True  # still waiting: cancelled outright
            cancelled.set()  # the worker hands the job over before the test task resumes
        return entries

    gateway.read = read_then_cancel  # type: ignore[method-assign]
    async with worker_running(app) as worker:
        await reading.wait()
        job = await long_job.enqueue(1)
        await cancelled.wait()
        await eventually(lambda: _anyio_true(worker.busy == 0), timeout=10, what="the job stopped")
    info = await job.info()
    assert info is not None and info.status == Status.CANCELLED and info.args == [1]
    assert finished == []
    stats = (await app.stats())["default"]
    assert stats.get("completed", 0) == 0 and stats.get("failed", 0) == 0
    assert (await gateway.redis.xpending(gateway.keys.queue("default").stream, "workers"))["pending"] == 0


async def test_poison_entries_go_to_the_dlq_and_normal_jobs_flow(app: Engine) -> None:
    from engine.producer import Options, TaskSpec

    @app.task(timeout=5)
    async def fine(ctx: JobContext, n: int) -> int:
        return n

    gateway = app.gateway
    qk = gateway.keys.queue("default")
    async with app:
        # raw garbage written straight into the stream, as a buggy producer might
        await gateway.ensure_group("default")
        await gateway.redis.xadd(qk.stream, {"garbage": "\x00\xff not a job"})
        await gateway.redis.xadd(qk.stream, {"j": "no-such-job"})
        # a job hash whose payload cannot be decoded
        await gateway.redis.hset(
            qk.job("bad-payload"), mapping={"task": "fine", "payload": "{nope", "status": "waiting"}
        )
        await gateway.redis.xadd(qk.stream, {"j": "bad-payload"})
        # a job naming a task no worker knows
        ghost = TaskSpec(name="ghost", queue="default", timeout=5, max_attempts=3, backoff=Backoff())
        (unknown,) = await app._enqueue(ghost, [((), {})], Options())
        good = await fine.enqueue_many([(i,) for i in range(50)])
    async with worker_running(app):
        assert [await j.result(timeout=10) for j in good] == list(range(50))
        await eventually(lambda: _dlq_len(app, 4), what="4 dead letters")
        with pytest.raises(JobFailed, match="no task named 'ghost'"):
            await unknown.result(timeout=5)
    errors = sorted(d.error or "" for d in await app.dlq().list())
    assert any("no job id" in e for e in errors)
    assert any("job data missing" in e for e in errors)
    assert any("PayloadError" in e for e in errors)
    assert any("UnknownTaskError" in e for e in errors)
    assert (await app.stats())["default"]["waiting"] == 0
    assert await app.dlq().purge() == 4
    assert await app.dlq().list() == [] and await app.job(unknown.id).info() is None


async def _dlq_len(app: Engine, n: int) -> bool:
    return await app.dlq().count() >= n


async def test_renewal_reports_only_leases_another_worker_took(app: Engine) -> None:
    # An entry this worker's own finish call acknowledged while the renewal was on its way
    # is not a lost lease; one another worker reclaimed is.
    gateway = await app.ready()
    await gateway.ensure_group("default")
    stream = gateway.keys.queue("default").stream
    entries = [await gateway.redis.xadd(stream, {"j": f"job{i}"}) for i in range(3)]
    assert len(await gateway.read(["default"], "me", 10, None)) == 3
    finished, taken, mine = entries
    await gateway.redis.xack(stream, GROUP, finished)
    await gateway.redis.xclaim(stream, GROUP, "other", 0, [taken], justid=True)
    assert await gateway.renew("me", {"default": entries}) == [("default", taken)]
    pending = await gateway.redis.xpending_range(stream, GROUP, "-", "+", 10)
    assert {(p["message_id"], p["consumer"]) for p in pending} == {(taken, "other"), (mine, "me")}


@pytest.mark.cluster_too
async def test_idempotency_key_under_concurrent_producers(app: Engine, redis_url: str) -> None:
    runs: list[str] = []

    @app.task(timeout=5)
    async def charge(ctx: JobContext, amount: int) -> None:
        runs.append(ctx.job_id)

    other = Engine(redis_url, namespace=app.namespace)
    other.task(name="charge", timeout=5)(charge.fn)
    ids: list[str] = []
    async with app, other:

        async def enqueue(producer: Engine) -> None:
            task = producer.tasks["charge"]
            job = await task.with_options(idempotency_key="order-1").enqueue(100)
            ids.append(job.id)

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(enqueue, app)
                tg.start_soon(enqueue, other)
        assert len(ids) == 200 and len(set(ids)) == 1
        async with worker_running(app):
            await app.job(ids[0]).result(timeout=10)
        # after completion the key still answers with the first job
        again = await charge.with_options(idempotency_key="order-1").enqueue(100)
        assert again.id == ids[0]
        assert (await app.stats())["default"]["enqueued"] == 1
    assert runs == [ids[0]]


async def test_long_job_on_a_live_worker_is_not_stolen(redis_url: str, namespace: str) -> None:
    runs: list[str] = []
    vt = 1.0
    running, release = anyio.Event(), anyio.Event()

    def make() -> Engine:
        engine = Engine(redis_url, namespace=namespace, visibility_timeout=vt)

        @engine.task(name="long", timeout=10)
        async def long(ctx: JobContext) -> None:
            runs.append(ctx.job_id)
            running.set()
            await release.wait()  # until the idle worker has scanned well past a lapse

        return engine

    a, b = make(), make()
    scans: list[float] = []  # when each reclaim pass that came back had started

    for engine in (a, b):
        real_reclaim = engine.gateway.reclaim

        async def reclaim_noted(*args: Any, real: Any = real_reclaim, **kwargs: Any) -> Any:
            began = time.monotonic()
            found = await real(*args, **kwargs)
            scans.append(began)
            return found

        engine.gateway.reclaim = reclaim_noted  # type: ignore[method-assign]

    async with a, b, worker_running(a, concurrency=1), worker_running(b, concurrency=1) as wb:
        job = await a.tasks["long"].enqueue()
        await running.wait()
        since = time.monotonic()
        # Without renewals its lease would lapse one timeout in, and the idle worker's next
        # scan (four per timeout) would take the job: wait for a scan two timeouts in.
        await eventually(
            lambda: _anyio_true(any(t > since + 2 * vt for t in scans)),
            timeout=15,
            what="a reclaim scan two visibility timeouts into the job",
        )
        release.set()
        await job.result(timeout=15)
        assert wb.reclaimed == 0
    assert runs == [job.id]


@pytest.mark.cluster_too
async def test_sigkill_a_worker_mid_run_loses_nothing(redis_url: str, namespace: str) -> None:
    from tests.apps.counting import count, runs_key

    env = {"TEST_VISIBILITY_TIMEOUT": "2"}
    app = Engine(redis_url, namespace=namespace)
    args = ("--concurrency", "20")
    procs = [
        start_worker_process("tests.apps.counting:app", redis_url, namespace, *args, env=env)
        for _ in range(2)
    ]
    try:
        async with app:
            await eventually(lambda: task_announced(app, "count"), timeout=20, what="workers up")
            jobs = await enqueue_by_spec(app, count, [((i, 0.05), {}) for i in range(1000)])
            await eventually(lambda: _completed_at_least(app, 200), timeout=30, what="200 done")
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            procs.append(
                start_worker_process("tests.apps.counting:app", redis_url, namespace, *args, env=env)
            )
            await eventually(
                lambda: _completed_at_least(app, 1000), timeout=60, interval=0.1, what="all done"
            )
            runs = await app.gateway.redis.hgetall(runs_key(namespace))
            assert {j.id for j in jobs} == set(runs)
            for job in jobs[::50]:
                assert await job.status() == Status.COMPLETED
            twice = sum(1 for v in runs.values() if int(v) > 1)
            reclaimed = (await app.stats())["default"]["reclaimed"]
            print(f"\n[sigkill] 1000 jobs completed; {reclaimed} reclaimed, {twice} ran twice")
            assert reclaimed > 0  # the kill really interrupted jobs
            assert twice <= 20  # at most what the killed worker had in flight
    finally:
        for proc in procs:
            stop_process(proc)


async def _completed_at_least(app: Engine, n: int) -> bool:
    from redis.exceptions import ConnectionError

    try:
        return (await app.stats())["default"]["completed"] >= n
    except ConnectionError:  # the check itself may hit the restart window
        return False


async def test_job_that_keeps_killing_its_worker_becomes_poison(redis_url: str, namespace: str) -> None:
    from tests.apps.counting import crash, runs_key

    env = {"TEST_VISIBILITY_TIMEOUT": "0.5"}
    app = Engine(redis_url, namespace=namespace)
    async with app:
        (job,) = await enqueue_by_spec(app, crash, [((), {})])
        procs = []
        try:
            for _ in range(6):  # each delivery kills the worker; a supervisor restarts it
                proc = start_worker_process("tests.apps.counting:app", redis_url, namespace, env=env)
                procs.append(proc)

                async def crashed_or_dead(proc: Any = proc) -> bool:
                    return proc.poll() is not None or await job.status() == Status.FAILED

                await eventually(crashed_or_dead, timeout=30, what="worker crash or dead letter")
                if await job.status() == Status.FAILED:
                    break
            else:
                pytest.fail("the crashing job was never dead-lettered")
        finally:
            for proc in procs:
                stop_process(proc)
        info = await job.info()
        assert info is not None and info.error is not None and "PoisonJob" in info.error
        runs = await app.gateway.redis.hget(runs_key(namespace), job.id)
        assert int(runs) == 2  # max_attempts deliveries, then no more
        assert [d.id for d in await app.dlq().list()] == [job.id]


async def test_worker_survives_a_redis_restart_without_losing_jobs(tmp_path: Any, namespace: str) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        app = Engine(server.url, namespace=namespace, visibility_timeout=2.0)
        runs: dict[int, int] = {}

        @app.task(timeout=5)
        async def work(ctx: JobContext, n: int) -> None:
            await anyio.sleep(0.01)
            runs[n] = runs.get(n, 0) + 1

        async with app, worker_running(app, concurrency=10) as worker:
            jobs = await work.enqueue_many([(i,) for i in range(300)])
            await eventually(lambda: _anyio_true(len(runs) >= 60), what="some progress")
            await anyio.to_thread.run_sync(server.restart)
            await eventually(lambda: _anyio_true(len(runs) == 300), timeout=60, interval=0.1, what="all ran")
            await eventually(lambda: _completed_at_least(app, 300), timeout=30, what="all recorded")
            assert not worker.stopped.is_set()
            statuses = {await j.status() for j in jobs}
        assert statuses == {Status.COMPLETED}
        print(f"\n[redis restart] 300 jobs completed; {sum(v > 1 for v in runs.values())} ran twice")
    finally:
        server.stop()


async def _anyio_true(value: bool) -> bool:
    return value


async def test_memory_returns_to_baseline_after_a_drain(tmp_path: Any, namespace: str) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        app = Engine(server.url, namespace=namespace, result_ttl=0.5)

        @app.task(timeout=5)
        async def noop(ctx: JobContext, n: int) -> None:
            return None

        async with app:
            redis = app.gateway.redis

            async def drain(n: int, total: int) -> None:
                await noop.enqueue_many([(i,) for i in range(n)])
                async with worker_running(app, concurrency=50):
                    await eventually(lambda: _completed_at_least(app, total), timeout=60, what="drained")
                # finished jobs expire after result_ttl: only the queue's fixed keys remain
                await eventually(lambda: _keys_at_most(redis, namespace, 4), timeout=20, what="keys expired")

            # A first small round warms up what Redis keeps once (compiled scripts, tables).
            await drain(200, 200)
            baseline = (await redis.info("memory"))["used_memory"]
            await noop.enqueue_many([(i,) for i in range(5000)])
            loaded = (await redis.info("memory"))["used_memory"]
            async with worker_running(app, concurrency=50):
                await eventually(lambda: _completed_at_least(app, 5200), timeout=60, what="drained")
            await eventually(lambda: _keys_at_most(redis, namespace, 4), timeout=20, what="keys expired")

            async def settled() -> int | None:
                # Redis shrinks its key table incrementally after mass expiry: give it time.
                used = int((await redis.info("memory"))["used_memory"])
                return used if used - baseline < 50_000 else None  # < 10 B per drained job

            after = await eventually(settled, timeout=30, interval=0.2, what="memory back to baseline")
        per_job = (loaded - baseline) / 5000
        print(f"\n[memory] {per_job:.0f} B per waiting job; after drain {after - baseline:+,} B vs baseline")
    finally:
        server.stop()


async def _keys_at_most(redis: Any, namespace: str, n: int) -> bool:
    # Per-minute throughput counters (a handful, expiring after two hours) are not per job.
    keys = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=1000) if ":tput:" not in k]
    return len(keys) <= n


async def test_scripts_lost_by_the_server_are_reloaded_and_run_once(tmp_path: Any, namespace: str) -> None:
    # A restart without persistence or a SCRIPT FLUSH empties the script cache; pipelined
    # calls (bulk enqueue, start, finish) must reload them without running anything twice.
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        app = Engine(server.url, namespace=namespace)
        runs: dict[int, int] = {}

        @app.task(timeout=5)
        async def work(ctx: JobContext, n: int) -> None:
            runs[n] = runs.get(n, 0) + 1
            if n % 500 == 0:
                await _redis(app).script_flush()

        async with app:
            await _redis(app).script_flush()
            jobs = await work.enqueue_many([(i,) for i in range(2500)])  # several script calls
            assert len({j.id for j in jobs}) == 2500
            assert await _redis(app).xlen(app.gateway.keys.queue("default").stream) == 2500
            async with worker_running(app, concurrency=20):
                await eventually(lambda: _completed_at_least(app, 2500), timeout=60, what="all recorded")
        assert sorted(runs) == list(range(2500)) and set(runs.values()) == {1}
    finally:
        server.stop()


def _redis(app: Engine) -> Any:
    return app.gateway.redis


async def _is_active(job: Any) -> bool:
    return bool(await job.status() == Status.ACTIVE)
