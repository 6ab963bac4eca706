"""Single enqueues over the direct connection (engine.broker.direct): each caller gets its own
job, a cancelled call does not shift the replies of the next ones, and a restarted server,
a flushed script cache, a password, a database and another event loop all work as through
redis-py (to which the direct path hands over whatever it cannot serve)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Engine, JobContext
from engine.broker.direct import RETRY_AFTER_S, DirectConnection
from engine.embedded import EmbeddedRedis
from tests.helpers import eventually


def _app(url: str, namespace: str) -> tuple[Engine, Any]:
    app = Engine(url, namespace=namespace)

    @app.task()
    async def note(ctx: JobContext, text: str) -> None: ...

    return app, note


def _direct(app: Engine) -> DirectConnection:
    direct = app.gateway.direct
    if direct is None:
        pytest.skip("the server is not a plain TCP standalone one: redis-py's path only")
    return direct


async def _args(handle: Any) -> list[Any]:
    info = await handle.info()
    assert info is not None
    return list(info.args)


async def test_single_enqueues_go_direct_and_each_caller_gets_its_own(redis_url: str, namespace: str) -> None:
    app, note = _app(redis_url, namespace)
    async with app:
        direct = _direct(app)
        handles = [await note.enqueue(f"n{i}") for i in range(20)]
        assert direct.calls == 20
        assert [await _args(h) for h in handles] == [[f"n{i}"] for i in range(20)]
        # Concurrent callers: coalesced batches go through redis-py, lone calls direct.
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await note.enqueue(f"c{i}")

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        assert {i: await _args(h) for i, h in results.items()} == {i: [f"c{i}"] for i in range(50)}


async def test_a_cancelled_call_does_not_shift_the_replies(redis_url: str, namespace: str) -> None:
    app, note = _app(redis_url, namespace)
    async with app:
        direct = _direct(app)
        await note.enqueue("warm-up")
        protocol = direct._protocol
        assert protocol is not None
        for i in range(10):
            call = asyncio.ensure_future(note.enqueue(f"gone {i}"))
            with anyio.fail_after(10):
                # Until its command is written and its reply awaited, then cancel it.
                while not protocol.waiting:  # noqa: ASYNC110 (a few turns of the loop, no event to wait on)
                    await asyncio.sleep(0)
                call.cancel()
                handle = await note.enqueue(f"kept {i}")
                assert await _args(handle) == [f"kept {i}"]
        assert not protocol.closed


async def test_a_restarted_server_and_a_flushed_script_cache(tmp_path: Path, namespace: str) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        app, note = _app(server.url, namespace)
        async with app:
            direct = app.gateway.direct
            assert direct is not None
            await note.enqueue("before")
            await app.gateway.redis.script_flush()
            assert await _args(await note.enqueue("flushed")) == ["flushed"]
            assert direct.calls == 2
            await anyio.to_thread.run_sync(server.restart)
            # The first call after the restart finds the connection gone and goes through
            # redis-py (which reconnects); the direct one reopens after RETRY_AFTER_S at most.
            assert await _args(await note.enqueue("after")) == ["after"]

            async def direct_again() -> bool:
                calls = direct.calls
                await note.enqueue("again")
                return direct.calls > calls

            await eventually(direct_again, timeout=RETRY_AFTER_S + 10)
    finally:
        server.stop()


async def test_password_and_database_are_those_of_the_url(tmp_path: Path, namespace: str) -> None:
    import redis

    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        redis.Redis(port=server.port).config_set("requirepass", "s3cret")
        app, note = _app(f"redis://:s3cret@127.0.0.1:{server.port}/3", namespace)
        async with app:
            direct = app.gateway.direct
            assert direct is not None
            handle = await note.enqueue("secret")
            assert direct.calls == 1
            assert await _args(handle) == ["secret"]
            # Written to database 3, where this client reads too.
            assert await app.gateway.redis.keys(f"{namespace}:*")
            db0 = redis.Redis(port=server.port, password="s3cret", db=0)
            assert not db0.keys(f"{namespace}:*")
            db0.config_set("requirepass", "")
    finally:
        server.stop()


async def test_another_event_loop_goes_through_redis_py(redis_url: str, namespace: str) -> None:
    app, note = _app(redis_url, namespace)
    async with app:
        direct = _direct(app)
        await note.enqueue("here")
        calls = direct.calls
        out: list[Any] = []

        def elsewhere() -> None:
            async def go() -> None:
                # A client of its own on this loop (redis-py's pool is bound to a loop too).
                other, other_note = _app(redis_url, namespace)
                async with other:
                    out.append(await other_note.enqueue("there"))
                    # The first app's direct connection is not touched from this loop.
                    out.append(await direct._ready())

            asyncio.run(go())

        thread = threading.Thread(target=elsewhere)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
        assert out[1] is None and direct.calls == calls
        assert await _args(out[0]) == ["there"]


def test_a_new_event_loop_gets_a_connection_of_its_own(redis_url: str, namespace: str) -> None:
    """The same app used by one asyncio.run after another (a script, a CLI command): each
    loop's single enqueues go direct, even when the first loop ended without closing the
    app, whose connection went with it."""
    served: list[int] = []

    async def once(app: Engine, note: Any, text: str, close: bool) -> None:
        await app.connect()
        direct = _direct(app)
        before = direct.calls
        assert await _args(await note.enqueue(text)) == [text]
        served.append(direct.calls - before)
        if close:
            await app.close()

    app, note = _app(redis_url, namespace)
    asyncio.run(once(app, note, "first", close=False))
    app.gateway.redis.connection_pool.reset()  # redis-py's pool holds the ended loop's too
    asyncio.run(once(app, note, "second", close=True))
    assert served == [1, 1]
