"""What runs around jobs: start-up state, shut-down, middleware on the success and failure
paths, failure hooks, and meta carried from producer to worker."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Backoff, ConfigurationError, Engine, JobContext, JobFailed
from engine.testing import worker_running

FAST = Backoff(initial=0.01, factor=1.0, max=0.01, jitter=0.0)


async def test_startup_state_reaches_every_job_and_shutdown_runs_once(app: Engine) -> None:
    calls: list[str] = []

    @app.on_startup
    async def open_pool(state: dict[str, Any]) -> None:
        calls.append("startup")
        state["db"] = {"connected": True}

    @app.on_shutdown
    def close_pool(state: dict[str, Any]) -> None:  # a plain def works too
        calls.append(f"shutdown {state['db']}")

    @app.task
    async def query(ctx: JobContext) -> bool:
        return bool(ctx.state["db"]["connected"])

    async with worker_running(app), worker_running(app):  # two workers, one process
        assert await (await query.enqueue()).result(timeout=10) is True
        assert calls == ["startup"]
    assert calls == ["startup", "shutdown {'connected': True}"]
    assert app.state == {"db": {"connected": True}}


async def test_a_failing_startup_hook_stops_the_worker_before_any_job(app: Engine) -> None:
    @app.on_startup
    def broken(state: dict[str, Any]) -> None:
        raise RuntimeError("database unreachable")

    @app.task
    async def noop() -> None:
        return None

    await noop.enqueue()
    with pytest.raises(RuntimeError, match="database unreachable"):
        await app.worker(handle_signals=False).run()
    assert (await app.stats())["default"]["waiting"] == 1


async def test_middleware_wraps_every_attempt_on_both_paths(app: Engine) -> None:
    app.default_backoff = FAST
    seen: list[tuple[str, str, Any]] = []

    async def outer(ctx: JobContext, call_next: Any) -> Any:
        seen.append(("outer in", ctx.task, ctx.attempt))
        try:
            result = await call_next()
        except Exception as exc:
            seen.append(("outer saw", ctx.task, type(exc).__name__))
            raise
        seen.append(("outer out", ctx.task, result))
        return result

    async def inner(ctx: JobContext, call_next: Any) -> Any:
        seen.append(("inner in", ctx.task, ctx.attempt))
        result = await call_next()
        return result * 10 if isinstance(result, int) else result

    app.add_middleware(outer)
    app.add_middleware(inner)
    with pytest.raises(ConfigurationError, match="middleware must be an async function"):
        app.add_middleware(lambda ctx, call_next: None)

    @app.task
    async def five() -> int:
        return 5

    @app.task(max_attempts=2)
    async def flaky(ctx: JobContext) -> str:
        raise ValueError(f"attempt {ctx.attempt}")

    async with worker_running(app):
        assert await (await five.enqueue()).result(timeout=10) == 50
        failing = await flaky.enqueue()
        with pytest.raises(JobFailed, match="attempt 2"):
            await failing.result(timeout=10)
    assert seen[:4] == [
        ("outer in", "five", 1),
        ("inner in", "five", 1),
        ("outer out", "five", 50),
        ("outer in", "flaky", 1),
    ]
    assert ("outer saw", "flaky", "ValueError") in seen
    assert [s for s in seen if s[0] == "outer in" and s[1] == "flaky"] == [
        ("outer in", "flaky", 1),
        ("outer in", "flaky", 2),
    ]


async def test_failure_hooks_see_each_failed_attempt_and_cannot_change_the_outcome(app: Engine) -> None:
    app.default_backoff = FAST
    failures: list[tuple[str, int, str]] = []

    @app.on_failure
    async def report(ctx: JobContext, exc: BaseException) -> None:
        failures.append((ctx.job_id, ctx.attempt, str(exc)))

    @app.on_failure
    def broken_reporter(ctx: JobContext, exc: BaseException) -> None:
        raise RuntimeError("the error tracker is down")

    @app.task(max_attempts=2)
    async def boom(n: int) -> None:
        raise ValueError(f"boom {n}")

    async with worker_running(app):
        job = await boom.enqueue(7)
        with pytest.raises(JobFailed):
            await job.result(timeout=10)
    assert failures == [(job.id, 1, "boom 7"), (job.id, 2, "boom 7")]
    info = await job.info()
    assert info is not None and info.attempts == 2 and info.error == "ValueError: boom 7"


async def test_meta_travels_from_producer_to_worker_and_shows_in_info(app: Engine) -> None:
    got: list[dict[str, Any]] = []

    @app.on_enqueue
    def add_request_id(task: str, meta: dict[str, Any]) -> None:
        meta.setdefault("request_id", f"req-for-{task}")

    @app.task
    async def traced(ctx: JobContext) -> None:
        got.append(dict(ctx.meta))

    async with worker_running(app):
        job = await traced.with_options(meta={"trace": "00-abc-01"}).enqueue()
        await job.result(timeout=10)
        plain = await traced.enqueue()
        await plain.result(timeout=10)
    assert got == [{"trace": "00-abc-01", "request_id": "req-for-traced"}, {"request_id": "req-for-traced"}]
    info = await job.info()
    assert info is not None and info.meta == {"trace": "00-abc-01", "request_id": "req-for-traced"}
    for bad, message in [
        ({1: "x"}, "string keys"),
        ("trace", "a dict with string keys"),
        ({"x": object()}, "JSON-encodable"),
        ({"x": "y" * 20_000}, "over the limit of 16,384"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            await traced.with_options(meta=bad).enqueue()


async def test_a_job_without_meta_stores_no_meta(app: Engine) -> None:
    @app.task
    async def plain(n: int) -> int:
        return n

    job = await plain.enqueue(1)
    raw = await app.gateway.job_hash(str(job.queue), job.id)
    assert raw is not None and raw["payload"] == '{"args":[1],"kwargs":{}}'
