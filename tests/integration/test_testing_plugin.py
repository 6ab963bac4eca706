"""engine.testing for users: the pytest plugin (loaded by its entry point) and inline mode.

The sample user project (tests/user_suite/project) runs in a pytest subprocess, so its
fixtures are the ones a user gets by installing the package; the rest runs here, where the
plugin is active too (its fixtures are all named engine_*, beside tests/conftest.py's).
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import engine.testing.plugin
from engine import (
    ConfigurationError,
    Engine,
    JobContext,
    JobFailed,
    JobNotFound,
    JobRunning,
    JobTimeout,
    Status,
    Worker,
)
from engine.testing import FakeClock, inline_jobs, inline_mode, worker_running
from engine.testing.inline import MAX_NESTING, InlineJob
from engine.testing.plugin import AppFactory

pytest_plugins = ["pytester"]

PROJECT = Path(__file__).parents[1] / "user_suite" / "project"
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens: any connection attempt fails


def copy_project(pytester: pytest.Pytester) -> None:
    for path in PROJECT.iterdir():
        if path.is_file():
            shutil.copy(path, pytester.path / path.name)


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment of a user's run: no settings of ours leak into it, and the app's own
    Redis (ENGINE_REDIS_URL) is one that cannot be reached."""
    for name in (
        "ENGINE_TEST_REDIS_URL",
        "ENGINE_NAMESPACE",
        "PYTEST_ADDOPTS",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENGINE_REDIS_URL", UNREACHABLE)
    return monkeypatch


# -- the user's suite, in a subprocess ---------------------------------------------------------


def test_the_user_suite_runs_with_the_plugin_from_its_entry_point(
    pytester: pytest.Pytester, user_env: pytest.MonkeyPatch
) -> None:
    copy_project(pytester)
    assert "pytest_plugins" not in "".join(p.read_text() for p in PROJECT.glob("*.py"))
    # The plugin's own embedded Valkey serves the session (ENGINE_TEST_REDIS_URL is unset).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=90)
    result.stdout.fnmatch_lines(["plugins: *engine-*"])
    result.assert_outcomes(passed=9)


async def test_the_plugin_honours_engine_test_redis_url_and_cleans_up(
    pytester: pytest.Pytester, user_env: pytest.MonkeyPatch, standalone_redis_url: str
) -> None:
    copy_project(pytester)
    pytester.makepyfile(
        test_url="""
        import os

        def test_url(engine_redis_url):
            assert engine_redis_url == os.environ["ENGINE_TEST_REDIS_URL"]
        """
    )
    user_env.setenv("ENGINE_TEST_REDIS_URL", standalone_redis_url)
    client = aioredis.Redis.from_url(standalone_redis_url, decode_responses=True)
    try:
        before = {key async for key in client.scan_iter(match="test*", count=1000)}
        result = await asyncio.to_thread(
            pytester.runpytest_subprocess, "-p", "no:cacheprovider", "test_worker.py", "test_url.py"
        )
        result.assert_outcomes(passed=4)
        after = {key async for key in client.scan_iter(match="test*", count=1000)}
    finally:
        await client.aclose()
    assert after - before == set()  # every test's namespace was deleted


# -- the fixtures, here ------------------------------------------------------------------------


def test_the_entry_point_registers_the_plugin(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("engine") is engine.testing.plugin


async def test_engine_app_is_fresh_and_the_worker_serves_tasks_made_later(
    engine_app: Engine, engine_worker: Worker, engine_namespace: str, engine_redis_url: str
) -> None:
    assert (engine_app.namespace, engine_app.redis_url) == (engine_namespace, engine_redis_url)
    assert engine_worker.queues == ["default"]  # a blank app: the default queue

    @engine_app.task(timeout=5)
    async def triple(ctx: JobContext, x: int) -> int:
        return 3 * x

    assert await (await triple.enqueue(5)).result(timeout=10) == 15


async def test_the_factory_binds_an_app_and_puts_it_back(engine_app_factory: AppFactory) -> None:
    mine = Engine(UNREACHABLE, namespace="mine")

    @mine.task(timeout=5)
    async def echo(ctx: JobContext, text: str) -> str:
        return text

    bound = await engine_app_factory(mine)
    assert bound is mine and mine.namespace.startswith("test") and mine.redis_url != UNREACHABLE
    async with worker_running(mine):
        assert await (await echo.enqueue("hi")).result(timeout=10) == "hi"
    with pytest.raises(TypeError, match="no options"):
        await engine_app_factory(mine, namespace="x")
    # (its settings are put back when the test ends: see the next test)
    factory_apps.append(mine)


factory_apps: list[Engine] = []


def test_the_bound_app_got_its_settings_back() -> None:
    [mine] = factory_apps
    assert (mine.redis_url, mine.namespace) == (UNREACHABLE, "mine")


def test_engine_inline_app(engine_inline_app: Engine) -> None:
    assert engine_inline_app.testing == "inline"


# -- inline mode -------------------------------------------------------------------------------


@pytest.fixture
def inline_app() -> Engine:
    return Engine(UNREACHABLE, namespace="inline", testing="inline")


def test_testing_takes_only_none_or_inline() -> None:
    assert Engine(UNREACHABLE).testing is None
    with pytest.raises(ConfigurationError, match='testing must be None or "inline"'):
        Engine(UNREACHABLE, testing="fake")


async def test_inline_runs_the_executor_path_with_no_redis(inline_app: Engine) -> None:
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    inline_app.clock = clock
    seen: dict[str, Any] = {}

    @inline_app.task(queue="reports", timeout=7.5, max_attempts=4)
    async def report(ctx: JobContext, when: datetime, *, title: str) -> dict[str, Any]:
        seen.update(attempt=ctx.attempt, max_attempts=ctx.max_attempts, time_left=ctx.time_left())
        await ctx.log("working", level="warning")
        await ctx.progress(0.25)
        return {"when": when, "title": title}

    async with inline_app:  # a lifespan's `async with app:` connects to nothing
        job = await report.enqueue("2026-02-01T00:00:00+00:00", title="monthly")
        assert isinstance(job, InlineJob) and job.queue == "reports"
        assert await job.result() == {"when": "2026-02-01T00:00:00Z", "title": "monthly"}
        assert seen == {"attempt": 1, "max_attempts": 4, "time_left": 7.5}
        info = await job.info()
        assert info is not None and info.status == Status.COMPLETED and await job.status() == Status.COMPLETED
        assert (info.task, info.args, info.kwargs, info.progress) == (
            "report",
            ["2026-02-01T00:00:00+00:00"],
            {"title": "monthly"},
            0.25,
        )
        assert info.created_at == info.processed_at == info.finished_at == datetime(2026, 3, 1, tzinfo=UTC)
        assert await job.logs() == [
            {"at": int(clock.time() * 1000), "level": "warning", "message": "working"}
        ]
        same = inline_app.job(job.id)
        assert isinstance(same, InlineJob) and (await same.info()) == info
        assert await inline_app.job(job.id, queue="other").info() is None
        assert await job.cancel() is False  # it has finished
    assert inline_app._gateway is None  # no Redis client was even made


async def test_inline_retries_run_at_once_and_failures_end_failed(inline_app: Engine) -> None:
    @inline_app.task(timeout=5, max_attempts=3)
    async def always_fails(ctx: JobContext) -> None:
        raise ValueError(f"attempt {ctx.attempt}")

    @inline_app.task(timeout=0.05, max_attempts=2)
    async def too_slow(ctx: JobContext) -> None:
        await asyncio.sleep(5)

    started = asyncio.get_running_loop().time()
    job = await always_fails.enqueue()  # a failure does not raise from enqueue
    with pytest.raises(JobFailed, match="ValueError: attempt 3") as failed:
        await job.result()
    assert isinstance(failed.value.__cause__, ValueError) and failed.value.status == "failed"
    info = await job.info()
    assert info is not None and info.attempts == 3 and info.traceback and "attempt 3" in info.traceback
    slow = await too_slow.enqueue()
    with pytest.raises(JobFailed, match=r"timed out after 0\.05s") as failed:
        await slow.result()
    assert isinstance(failed.value.__cause__, JobTimeout)
    assert asyncio.get_running_loop().time() - started < 2  # no backoff was slept


async def test_inline_options(inline_app: Engine) -> None:
    ran: list[int] = []

    @inline_app.task(timeout=5)
    async def note(ctx: JobContext, n: int) -> int:
        ran.append(n)
        return n

    delayed = await note.with_options(delay=3600).enqueue(1)  # runs now; the due time shows
    info = await delayed.info()
    assert ran == [1] and info is not None and info.status == Status.COMPLETED and info.scheduled_for
    first = await note.with_options(idempotency_key="k").enqueue(2)
    assert await note.with_options(idempotency_key="k").enqueue(3) == first
    named = await note.with_options(job_id="mine").enqueue(4)
    assert named.id == "mine" and await note.with_options(job_id="mine").enqueue(5) == named
    many = await note.enqueue_many([(6,), (7,)])
    assert [await j.result() for j in many] == [6, 7]
    assert ran == [1, 2, 4, 6, 7]
    assert [j.id for j in inline_jobs(inline_app)] == [delayed.id, first.id, "mine", *(j.id for j in many)]
    by_name = await inline_app.enqueue("note", 8)
    assert await by_name.result() == 8
    with pytest.raises(TypeError, match="argument 'n' must be int"):
        await note.enqueue("x")  # type: ignore[arg-type]
    assert await delayed.delete() is True and await delayed.info() is None
    with pytest.raises(JobNotFound):
        await delayed.result()
    assert await delayed.delete() is False


async def test_inline_cancel_and_delete_while_running(inline_app: Engine) -> None:
    @inline_app.task(timeout=5)
    async def waits(ctx: JobContext) -> None:
        me = inline_app.job(ctx.job_id)
        assert await me.status() == Status.ACTIVE
        with pytest.raises(JobRunning):
            await me.delete()
        assert await me.cancel() is True
        await asyncio.sleep(5)

    job = await waits.enqueue()
    assert await job.status() == Status.CANCELLED
    with pytest.raises(JobFailed, match="cancelled"):
        await job.result()


async def test_inline_jobs_enqueued_by_jobs_run_inside_them(inline_app: Engine) -> None:
    @inline_app.task(timeout=5)
    def square(x: int) -> int:  # a plain def: in a thread, as on a worker
        return x * x

    @inline_app.task(timeout=5)
    async def parent(ctx: JobContext, x: int) -> int:
        child = await square.enqueue(x)
        by_name = await ctx.engine.enqueue("square", x + 1) if ctx.engine else None
        assert by_name is not None
        return await child.result() + await by_name.result()

    @inline_app.task(timeout=5)
    async def forever(ctx: JobContext, depth: int) -> str | None:
        child = await forever.enqueue(depth + 1)
        return await child.status()

    assert await (await parent.enqueue(3)).result() == 9 + 16
    assert await (await forever.enqueue(0)).result() == "completed"
    chain = inline_jobs(inline_app, task="forever")
    assert len(chain) == MAX_NESTING + 1
    info = await chain[-1].info()
    assert info is not None and info.status == Status.FAILED and info.attempts == 0
    assert info.error and info.error.startswith("InlineNestingError")
    assert await chain[-2].result() == "failed"


async def test_inline_cron_tasks_run_when_enqueued_and_there_is_no_worker(inline_app: Engine) -> None:
    seen: list[datetime | None] = []

    @inline_app.cron("0 0 1 * *", tz="Asia/Jakarta")
    async def monthly(ctx: JobContext) -> None:
        seen.append(ctx.scheduled_at)

    tick = datetime(2026, 1, 31, 17, tzinfo=UTC)
    await monthly.with_options(scheduled_at=tick).enqueue()
    assert seen == [tick]
    with pytest.raises(ConfigurationError, match="no worker"):
        inline_app.worker()
    with pytest.raises(ConfigurationError, match="no worker"):
        async with worker_running(inline_app):
            pass


async def test_inline_mode_switches_an_app_and_back() -> None:
    app = Engine(UNREACHABLE, namespace="mine")

    @app.task(timeout=5)
    async def hello(ctx: JobContext) -> str:
        return "hello"

    with inline_mode(app) as same:
        assert same is app and app.testing == "inline"
        job = await hello.enqueue()
        assert await job.result() == "hello" and len(inline_jobs(app)) == 1
    assert app.testing is None and inline_jobs(app) == []
    assert await job.info() is None  # forgotten
    assert app._gateway is None


def test_inline_mode_from_sync_code(inline_app: Engine) -> None:
    @inline_app.task(timeout=5)
    async def plus_one(ctx: JobContext, x: int) -> int:
        return x + 1

    job = plus_one.enqueue_sync(1)
    assert isinstance(job, InlineJob) and job.result_sync(timeout=5) == 2
    assert [j.id for j in inline_jobs(inline_app)] == [job.id]


async def test_inline_runs_the_apps_hooks() -> None:
    app = Engine(UNREACHABLE, namespace="hooks")
    calls: list[str] = []

    @app.on_startup
    async def start(state: dict[str, Any]) -> None:
        calls.append("startup")
        state["db"] = "pool"

    @app.on_shutdown
    def stop(state: dict[str, Any]) -> None:
        calls.append("shutdown")

    async def around(ctx: JobContext, call_next: Any) -> Any:
        calls.append("middleware")
        return await call_next()

    app.add_middleware(around)

    @app.on_enqueue
    def tag(task_name: str, meta: dict[str, Any]) -> None:
        meta["request"] = "r-1"

    @app.on_failure
    def report(ctx: JobContext, exc: BaseException) -> None:
        calls.append(f"failure:{exc}")

    @app.task(timeout=5, max_attempts=1)
    async def uses_state(ctx: JobContext, fail: bool) -> str:
        if fail:
            raise RuntimeError("boom")
        return f"{ctx.state['db']}:{ctx.meta['request']}"

    async with inline_mode(app):
        assert await (await uses_state.enqueue(False)).result() == "pool:r-1"
        await uses_state.enqueue(True)
        assert calls == ["startup", "middleware", "middleware", "failure:boom"]
    assert calls[-1] == "shutdown" and calls.count("startup") == 1
