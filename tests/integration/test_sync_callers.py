"""Sync callers (Django, Flask, scripts): enqueue and wait on results from plain threads with
no event loop of their own, all sharing one background loop and connection pool."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from engine import Engine, JobContext, PayloadTooLarge, Status
from engine.client import sync
from engine.testing import worker_running

THREADS = 16
PER_THREAD = 10


async def test_sixteen_threads_enqueue_and_wait_with_no_loop_of_their_own(app: Engine) -> None:
    @app.task
    async def square(ctx: JobContext, n: int) -> int:
        return n * n

    results: dict[int, int] = {}
    errors: list[BaseException] = []
    loops_seen: set[int] = set()

    def caller(t: int) -> None:
        try:
            for i in range(PER_THREAD):
                n = t * PER_THREAD + i
                job = square.enqueue_sync(n) if i % 2 else app.enqueue_sync("square", n)
                results[n] = job.result_sync(timeout=30)
            loops_seen.add(id(sync.portal().loop))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    def run_threads() -> None:
        threads = [threading.Thread(target=caller, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    async with worker_running(app, concurrency=50):
        await anyio.to_thread.run_sync(run_threads)
    assert not errors, errors
    assert results == {n: n * n for n in range(THREADS * PER_THREAD)}
    assert len(loops_seen) == 1  # one background loop served every thread
    twin = app.sync_twin()
    assert twin is not app and twin.sync_twin() is twin and twin.tasks is app.tasks


async def test_an_option_set_after_the_first_sync_call_holds_for_the_next(app: Engine) -> None:
    @app.task
    async def echo(value: str) -> str:
        return value

    await anyio.to_thread.run_sync(lambda: echo.enqueue_sync("small"))
    app.max_payload_bytes = 200  # the settings replaced after the twin was made
    with pytest.raises(PayloadTooLarge, match="200"):
        await anyio.to_thread.run_sync(lambda: echo.enqueue_sync("x" * 500))


async def test_handles_work_across_the_sync_and_async_worlds(app: Engine) -> None:
    @app.task
    async def echo(value: str) -> str:
        return value

    job = await echo.enqueue("from async")

    def from_a_thread() -> tuple[Any, Any, Any]:
        # A handle made in async code is read from sync code through the twin.
        info = job.info_sync()
        status = job.status_sync()
        delayed = echo.with_options(delay=3600).enqueue_sync("later")
        return info, status, delayed

    info, status, delayed = await anyio.to_thread.run_sync(from_a_thread)
    assert info is not None and info.args == ["from async"] and status is Status.WAITING
    assert await delayed.status() is Status.DELAYED  # ...and a sync-made handle from async code
    assert await anyio.to_thread.run_sync(delayed.cancel_sync) is True
    async with worker_running(app):
        assert await anyio.to_thread.run_sync(lambda: job.result_sync(timeout=10)) == "from async"


async def test_a_sync_call_from_async_code_is_refused_clearly(app: Engine) -> None:
    @app.task
    async def noop() -> None:
        return None

    with pytest.raises(RuntimeError, match=r"from async code .* await the async method instead"):
        noop.enqueue_sync()
    with pytest.raises(RuntimeError, match="from async code"):
        app.enqueue_sync("noop")
    assert (await app.stats()).get("default", {}).get("enqueued", 0) == 0
