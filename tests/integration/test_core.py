"""The core path on a real Redis: enqueue -> stream -> worker -> outcome."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import ConfigurationError, ConnectionFailed, Engine, JobContext, JobFailed, Status
from engine.embedded import EmbeddedRedis
from engine.inspector import queue_jobs
from engine.testing import worker_running
from tests.helpers import enqueue_by_spec, eventually, start_worker_process, stop_process, task_announced


@pytest.mark.cluster_too
async def test_one_job_result(app: Engine) -> None:
    @app.task(timeout=5)
    async def add(ctx: JobContext, a: int, b: int) -> int:
        assert ctx.attempt == 1 and ctx.task == "add" and ctx.queue == "default"
        return a + b

    async with worker_running(app):
        job = await add.enqueue(2, 3)
        assert await job.result(timeout=10) == 5
        info = await job.info()
    assert info is not None
    assert info.status == Status.COMPLETED
    assert info.attempts == 1
    assert info.args == [2, 3]
    assert info.result == 5
    assert info.created_at and info.processed_at and info.finished_at
    assert info.created_at <= info.processed_at <= info.finished_at


async def test_waiting_and_cancelled_jobs_show_their_arguments(app: Engine) -> None:
    # A waiting job's payload lives in its stream entry (see enqueue.lua): every reader must
    # still see it, and cancelling the job must not lose it.
    @app.task(timeout=5)
    async def greet(ctx: JobContext, name: str, *, loud: bool = False) -> str:
        return name

    job = await greet.enqueue("ada", loud=True)
    info = await job.info()
    assert info is not None and info.status == Status.WAITING
    assert (info.args, info.kwargs) == (["ada"], {"loud": True})
    listed, _ = await queue_jobs(app, "default", "waiting")
    assert [(j.id, j.args) for j in listed] == [(job.id, ["ada"])]
    assert await job.cancel() is True
    info = await job.info()
    assert info is not None and info.status == Status.CANCELLED
    assert (info.args, info.kwargs) == (["ada"], {"loud": True})


@pytest.mark.cluster_too
async def test_context_fields_and_kwargs(app: Engine) -> None:
    seen: dict[str, object] = {}

    @app.task(queue="reports", timeout=7.5, max_attempts=4)
    async def inspect_ctx(ctx: JobContext, *, name: str) -> str:
        seen.update(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            max_attempts=ctx.max_attempts,
            queue=ctx.queue,
            time_left=ctx.time_left(),
            scheduled_at=ctx.scheduled_at,
        )
        await ctx.log("hello from the task", level="warning")
        await ctx.progress(0.5)
        return f"hi {name}"

    async with worker_running(app, queues=["reports"]):
        job = await inspect_ctx.enqueue(name="ada")
        assert await job.result(timeout=10) == "hi ada"
    assert seen["job_id"] == job.id
    assert seen["attempt"] == 1 and seen["max_attempts"] == 4 and seen["queue"] == "reports"
    assert 0 < float(seen["time_left"]) <= 7.5  # type: ignore[arg-type]
    assert seen["scheduled_at"] is None
    info = await app.job(job.id).info()  # a handle from a bare id finds the queue
    assert info is not None and info.queue == "reports" and info.progress == 0.5
    assert info.kwargs == {"name": "ada"}
    logs = await job.logs()
    assert [(line["level"], line["message"]) for line in logs] == [("warning", "hello from the task")]


async def test_sync_task_runs_in_a_thread(app: Engine) -> None:
    import threading

    main_thread = threading.get_ident()

    @app.task(timeout=5)
    def multiply(ctx: JobContext, a: int, b: int) -> dict[str, int]:
        return {"product": a * b, "other_thread": int(threading.get_ident() != main_thread)}

    async with worker_running(app):
        job = await multiply.enqueue(6, 7)
        assert await job.result(timeout=10) == {"product": 42, "other_thread": 1}


async def test_task_without_context_parameter(app: Engine) -> None:
    @app.task(timeout=5)
    async def plain(x: int) -> int:
        return x * 2

    async with worker_running(app):
        assert await (await plain.enqueue(21)).result(timeout=10) == 42


async def test_signature_mismatch_is_refused_and_nothing_enqueued(app: Engine) -> None:
    @app.task
    async def needs_two(ctx: JobContext, a: int, b: int) -> None: ...

    async with app:
        with pytest.raises(TypeError, match="needs_two"):
            await needs_two.enqueue(1)
        with pytest.raises(TypeError, match="needs_two"):
            await needs_two.enqueue(1, 2, c=3)
        with pytest.raises(TypeError, match="needs_two"):
            await app.enqueue("needs_two", 1, 2, 3)
        with pytest.raises(TypeError, match="needs_two"):
            await needs_two.enqueue_many([(1, 2), (1,)])
        stats = await app.stats()
    assert stats["default"]["waiting"] == 0 and stats["default"]["enqueued"] == 0


async def test_unencodable_and_oversized_arguments_are_clear_errors(redis_url: str, namespace: str) -> None:
    app = Engine(redis_url, namespace=namespace, max_payload_bytes=1000)

    @app.task
    async def take(ctx: JobContext, value: object) -> None: ...

    async with app:
        with pytest.raises(TypeError, match="cannot be encoded as JSON"):
            await take.enqueue(object())
        from engine import PayloadTooLarge

        with pytest.raises(PayloadTooLarge, match="over the limit"):
            await take.enqueue("x" * 2000)
        assert (await app.stats())["default"]["enqueued"] == 0


def test_timeout_none_is_refused(app: Engine) -> None:
    with pytest.raises(ConfigurationError, match="timeout=None"):

        @app.task(timeout=None)  # type: ignore[arg-type]
        async def forever(ctx: JobContext) -> None: ...

    for bad in (0, -1, float("inf"), float("nan"), "10"):
        with pytest.raises(ConfigurationError, match="timeout"):
            app.task(name=f"bad{id(bad)}", timeout=bad)(lambda ctx: None)


def test_bad_names_and_settings_are_refused(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="queue name"):
        Engine(redis_url).task(name="ok", queue="has{brace}")(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="Redis URL"):
        Engine("http://localhost:6379")
    with pytest.raises(ConfigurationError, match="Redis URL"):
        Engine("redis://localhost:notaport")
    app = Engine(redis_url)

    @app.task
    async def once(ctx: JobContext) -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):
        app.task(name="once")(lambda ctx: None)


async def test_timeout_fails_the_job_with_a_timeout_error(app: Engine) -> None:
    @app.task(timeout=0.2, max_attempts=1)
    async def sleepy(ctx: JobContext) -> None:
        await anyio.sleep(30)

    async with worker_running(app):
        job = await sleepy.enqueue()
        with pytest.raises(JobFailed, match=r"timed out after 0\.2s"):
            await job.result(timeout=10)
    info = await job.info()
    assert info is not None and info.status == Status.FAILED
    assert info.error is not None and info.error.startswith("JobTimeout")


async def test_a_timeout_error_the_task_raises_is_its_own_failure(app: Engine) -> None:
    @app.task(timeout=30, max_attempts=1)
    async def calls_out(ctx: JobContext) -> None:
        raise TimeoutError("the partner API did not answer")

    async with worker_running(app):
        job = await calls_out.enqueue()
        with pytest.raises(JobFailed, match="the partner API did not answer"):
            await job.result(timeout=10)
    info = await job.info()
    assert info is not None and info.error is not None and info.error.startswith("TimeoutError")


@pytest.mark.cluster_too
async def test_result_wakes_promptly_after_completion(app: Engine) -> None:
    release = anyio.Event()

    @app.task(timeout=10)
    async def gated(ctx: JobContext) -> str:
        await release.wait()
        return "done"

    async with worker_running(app):
        job = await gated.enqueue()
        await eventually(lambda: _status_is(job, Status.ACTIVE), what="job active")
        # The waiter subscribes, then reads the job once: once that read is back (still
        # active), it blocks on the notification without another checkpoint.
        gateway = app.gateway
        read_job_hash, checked = gateway.job_hash, anyio.Event()

        async def job_hash_then_signal(*args: Any, **kwargs: Any) -> Any:
            found = await read_job_hash(*args, **kwargs)
            checked.set()
            return found

        gateway.job_hash = job_hash_then_signal  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            finished_at: list[float] = []

            async def waiter() -> None:
                assert await job.result(timeout=10) == "done"
                finished_at.append(time.monotonic())

            tg.start_soon(waiter)
            await checked.wait()  # the waiter subscribed and blocks before the job ends
            released = time.monotonic()
            release.set()
        # Notification, not the 5 s re-check fallback, woke it.
        assert finished_at[0] - released < 1.0


async def _status_is(job: object, status: Status) -> bool:
    return await job.status() == status  # type: ignore[attr-defined,no-any-return]


async def test_result_timeout_and_unknown_job(app: Engine) -> None:
    @app.task
    async def never_run(ctx: JobContext) -> None: ...

    async with app:
        job = await never_run.enqueue()
        with pytest.raises(TimeoutError):
            await job.result(timeout=0.2)
        from engine import JobNotFound

        with pytest.raises(JobNotFound):
            await app.job("no-such-job").result(timeout=1)
        assert await app.job("no-such-job").info() is None


@pytest.mark.cluster_too
async def test_cancel_a_waiting_job(app: Engine) -> None:
    ran: list[int] = []

    @app.task
    async def work(ctx: JobContext, n: int) -> None:
        ran.append(n)

    async with app:
        doomed = await work.enqueue(1)
        assert await doomed.cancel() is True
        assert await doomed.status() == Status.CANCELLED
        assert await doomed.cancel() is False  # already final
    async with worker_running(app):
        survivor = await work.enqueue(2)
        await survivor.result(timeout=10)
        with pytest.raises(JobFailed, match="cancelled"):
            await doomed.result(timeout=1)
    assert ran == [2]


async def test_unknown_task_name_is_a_clear_error(app: Engine) -> None:
    from engine import UnknownTaskError

    async with app:
        with pytest.raises(UnknownTaskError, match="no_such_task"):
            await app.enqueue("no_such_task", 1)


@pytest.mark.cluster_too
async def test_producer_without_the_code_enqueues_by_name(app: Engine, redis_url: str) -> None:
    @app.task(queue="exports", timeout=9)
    async def export(ctx: JobContext, user_id: int) -> str:
        return f"exports/{user_id}.csv"

    producer = Engine(redis_url, namespace=app.namespace)  # knows no tasks
    async with worker_running(app), producer:
        job = await producer.enqueue("export", 42)
        assert job.queue == "exports"
        with pytest.raises(TypeError, match="export"):  # the announced signature is checked
            await producer.enqueue("export", 1, 2)
        assert await job.result(timeout=10) == "exports/42.csv"


@pytest.mark.cluster_too
async def test_enqueue_many_in_one_call(app: Engine) -> None:
    from engine import call

    @app.task
    async def echo(ctx: JobContext, a: int, b: int = 0) -> int:
        return a + b

    async with worker_running(app, concurrency=20):
        jobs = await echo.enqueue_many([(1,), (2, 3), {"a": 4, "b": 5}, call(6, b=1)])
        assert [await j.result(timeout=10) for j in jobs] == [1, 5, 9, 7]
        many = await echo.enqueue_many([(i,) for i in range(2500)])  # more than one chunk
        assert len({j.id for j in many}) == 2500
        assert await many[-1].result(timeout=30) == 2499


@pytest.mark.cluster_too
async def test_concurrent_single_enqueues_share_round_trips_and_keep_their_own_results(
    tmp_path: Path, namespace: str
) -> None:
    # Enqueues issued while another is on its way go together in one pipelined round trip
    # (one script call per run of equal task/options); each caller still gets its own job.
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        app = Engine(server.url, namespace=namespace)

        @app.task(queue="mail")
        async def send(ctx: JobContext, to: str) -> None: ...

        @app.task(queue="reports")
        async def report(ctx: JobContext, n: int) -> None: ...

        async with app:
            redis = app.gateway.redis
            await send.enqueue("warm-up")  # scripts loaded, queues known
            before = (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
            handles: dict[str, Any] = {}

            async def one(i: int) -> None:
                if i % 3 == 0:
                    handles[f"r{i}"] = await report.enqueue(i)
                elif i % 50 == 1:  # the same key twice: one job, both callers get its id
                    handles[f"k{i}"] = await send.with_options(idempotency_key="once").enqueue(f"k{i}")
                else:
                    handles[f"s{i}"] = await send.with_options(delay=60 if i % 7 == 0 else None).enqueue(
                        f"s{i}"
                    )

            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(one, i)
            calls = (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"] - before
            assert calls < 100, f"{calls} script calls for 300 concurrent enqueues: not coalesced"
            keyed = {name: h for name, h in handles.items() if name.startswith("k")}
            assert len({h.id for h in keyed.values()}) == 1
            for name, handle in handles.items():
                if name.startswith("k"):
                    continue
                info = await handle.info()
                assert info is not None, name
                expected = int(name[1:]) if name.startswith("r") else name
                assert (info.queue, info.args) == ("reports" if name.startswith("r") else "mail", [expected])
                delayed = name.startswith("s") and int(name[1:]) % 7 == 0
                assert info.status == (Status.DELAYED if delayed else Status.WAITING), name
            stats = await app.stats()
            assert stats["mail"]["enqueued"] + stats["reports"]["enqueued"] == 1 + 300 - len(keyed) + 1
            server.stop()  # a failed round trip reaches every caller of its batch, none hangs
            results = []

            async def failing(i: int) -> None:
                try:
                    await send.enqueue(f"lost {i}")
                except Exception as exc:
                    results.append(type(exc).__name__)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(failing, i)
            assert len(results) == 20
    finally:
        server.stop()


async def test_unreachable_redis_fails_fast_naming_the_url() -> None:
    from tests.helpers import free_port

    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    app = Engine(url)
    with anyio.fail_after(5):
        with pytest.raises(ConnectionFailed, match=r"127\.0\.0\.1") as caught:
            await app.connect()
    assert "sekrit" not in str(caught.value)

    @app.task
    async def t(ctx: JobContext) -> None: ...

    with anyio.fail_after(5), pytest.raises(ConnectionFailed):
        await t.enqueue()


async def test_a_server_that_never_answers_does_not_hang_the_caller() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        app = Engine(f"redis://127.0.0.1:{port}/0", connect_timeout=1.0)
        with anyio.fail_after(5), pytest.raises(ConnectionFailed, match="no answer within 1s"):
            await app.connect()
        await app.close()


@pytest.mark.cluster_too
async def test_two_worker_processes_run_each_job_exactly_once(redis_url: str, namespace: str) -> None:
    from tests.apps.counting import count, runs_key

    app = Engine(redis_url, namespace=namespace)
    procs = [
        start_worker_process("tests.apps.counting:app", redis_url, namespace, "--concurrency", "50")
        for _ in range(2)
    ]
    try:
        async with app:
            await eventually(lambda: _workers_announced(app), timeout=20, what="workers up")
            jobs = await enqueue_by_spec(app, count, [((i,), {}) for i in range(2000)])
            await eventually(lambda: _completed(app, 2000), timeout=60, interval=0.1, what="2000 done")
            runs = await app.gateway.redis.hgetall(runs_key(namespace))
        assert len(runs) == 2000
        assert {j.id for j in jobs} == set(runs)
        assert set(runs.values()) == {"1"}
    finally:
        for proc in procs:
            stop_process(proc)


async def test_sigterm_lets_running_jobs_finish_and_exits_zero(redis_url: str, namespace: str) -> None:
    from tests.apps.counting import count

    app = Engine(redis_url, namespace=namespace)
    proc = start_worker_process("tests.apps.counting:app", redis_url, namespace, "--concurrency", "10")
    try:
        async with app:
            await eventually(lambda: _workers_announced(app), timeout=20, what="worker up")
            jobs = await enqueue_by_spec(app, count, [((i, 1.0), {}) for i in range(5)])
            await eventually(lambda: _all_status(jobs, Status.ACTIVE), timeout=10, what="jobs running")
            proc.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(proc.wait, 20) == 0
            for job in jobs:
                assert await job.status() == Status.COMPLETED
    finally:
        stop_process(proc)


async def _workers_announced(app: Engine) -> bool:
    return await task_announced(app, "count")


async def _completed(app: Engine, n: int) -> bool:
    return (await app.stats())["default"]["completed"] >= n


async def _all_status(jobs: list, status: Status) -> bool:  # type: ignore[type-arg]
    return all([await j.status() == status for j in jobs])
