"""An idle worker's blocking reads over the direct connection (engine.broker.direct): they
give what redis-py's reads give, two reads of one process block side by side (the second
through redis-py: a blocking read holds its connection), a stopping worker's CLIENT UNBLOCK
ends them at once, and a restarted server is read again directly. And what such a read
gets is started whatever it holds: entries of two queues under one id."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.exceptions import RedisError

from engine import Engine, JobContext
from engine.broker import connection
from engine.broker.direct import RETRY_AFTER_S, DirectConnection
from engine.broker.gateway import Gateway
from engine.embedded import EmbeddedRedis
from engine.testing import worker_running
from tests.helpers import eventually

Q = "default"


def _app(url: str, namespace: str) -> tuple[Engine, Any]:
    app = Engine(url, namespace=namespace)

    @app.task()
    async def note(ctx: JobContext, text: str) -> None: ...

    return app, note


def _reader(app: Engine) -> DirectConnection:
    reader = app.gateway.reader
    if reader is None:
        pytest.skip("the server is not a plain TCP standalone one: redis-py's path only")
    return reader


async def _blocked(gateway: Gateway, n: int) -> None:
    async def blocked() -> bool:
        return len(await connection.blocked_reads(gateway.redis)) == n

    await eventually(blocked, what=f"{n} blocking reads on the server")


async def test_a_blocking_read_goes_direct_and_reads_what_redis_py_reads(
    redis_url: str, namespace: str
) -> None:
    app, note = _app(redis_url, namespace)
    async with app:
        reader, gateway = _reader(app), app.gateway
        await gateway.ensure_group(Q)
        await note.enqueue("one")
        await note.enqueue("two")
        (direct,) = await gateway.read([Q], "c1", 1, 1000)
        assert reader.calls == 1
        (plain,) = await gateway.read([Q], "c1", 1, None)  # no BLOCK: redis-py's path
        assert reader.calls == 1
        assert direct[0] == plain[0] == Q
        assert isinstance(direct[2], dict) and direct[2].keys() == plain[2].keys()
        assert direct[2]["t"] == plain[2]["t"] == note.name
        assert [direct[2]["p"], plain[2]["p"]] == [
            '{"args":["one"],"kwargs":{}}',
            '{"args":["two"],"kwargs":{}}',
        ]
        assert await gateway.read([Q], "c1", 1, 50) == []  # BLOCK ran out: nothing


async def test_two_blocking_reads_of_one_process_block_side_by_side(redis_url: str, namespace: str) -> None:
    app, note = _app(redis_url, namespace)
    async with app:
        reader, gateway = _reader(app), app.gateway
        await gateway.ensure_group(Q)
        got: dict[str, list[Any]] = {}

        async def read(consumer: str) -> None:
            got[consumer] = await gateway.read([Q], consumer, 1, 20_000)

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, "c1")
                tg.start_soon(read, "c2")
                # Sent on one connection, the second would wait on the server behind the first.
                await _blocked(gateway, 2)
                await note.enqueue("a")
                await note.enqueue("b")
        assert sorted(entries[0][2]["p"] for entries in got.values()) == [
            '{"args":["a"],"kwargs":{}}',
            '{"args":["b"],"kwargs":{}}',
        ]
        assert reader.calls == 1


async def test_a_stopping_worker_ends_a_direct_read_at_once(redis_url: str, namespace: str) -> None:
    app, _ = _app(redis_url, namespace)
    async with app:
        reader, gateway = _reader(app), app.gateway
        await gateway.ensure_group(Q)
        got: list[Any] = []

        async def read() -> None:
            got.append(await gateway.read([Q], "c1", 10, 60_000))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await _blocked(gateway, 1)
                assert await gateway.unblock_reads() == 1
        assert got == [[]] and reader.calls == 1


async def test_reads_go_direct_again_after_a_restart(tmp_path: Path, namespace: str) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        app, note = _app(server.url, namespace)
        async with app:
            reader, gateway = _reader(app), app.gateway
            await gateway.ensure_group(Q)
            assert await gateway.read([Q], "c1", 1, 20) == []
            assert reader.calls == 1

            async def read_through_restart() -> None:
                # redis-py's retry may find the server still down, or no group yet.
                with contextlib.suppress(RedisError):
                    await gateway.read([Q], "c1", 1, 60_000)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_through_restart)
                    await _blocked(gateway, 1)
                    await anyio.to_thread.run_sync(server.restart)
                    await gateway.ensure_group(Q)
                    await note.enqueue("after")
                    await gateway.unblock_reads()  # redis-py's read, if its retry is blocked

            async def direct_again() -> bool:
                calls = reader.calls
                await note.enqueue("again")
                return bool(await gateway.read([Q], "c1", 10, 1000)) and reader.calls > calls

            await eventually(direct_again, timeout=RETRY_AFTER_S + 10)
    finally:
        server.stop()


async def test_one_read_of_two_queues_runs_entries_that_share_an_id(redis_url: str, namespace: str) -> None:
    """Streams number their entries each on its own: one blocking read of two queues can get
    the same entry id from both. Both jobs start at once (keyed by entry id alone, one was
    never handed over: it waited for the reclaimer, a visibility timeout later)."""
    app = Engine(redis_url, namespace=namespace)
    ran: list[str] = []

    for queue in ("a", "b"):

        @app.task(name=f"note_{queue}", queue=queue)
        async def note(ctx: JobContext) -> None:
            ran.append(ctx.queue)

    async with app:
        gateway = app.gateway
        handles = [await app.enqueue(f"note_{queue}") for queue in ("a", "b")]
        # The entries enqueue.lua wrote, taken out and written again under one id, in one
        # transaction once the worker's read blocks: the read then gets both.
        moved = []
        for queue in ("a", "b"):
            qk = gateway.keys.queue(queue)
            ((entry_id, fields),) = await gateway.redis.xrange(qk.stream)
            await gateway.redis.xdel(qk.stream, entry_id)
            moved.append((qk, fields))
        async with worker_running(app, concurrency=10):
            await _blocked(gateway, 1)
            async with gateway.redis.pipeline(transaction=True) as tx:
                for qk, fields in moved:
                    tx.xadd(qk.stream, fields, id="9999999999999-7")
                    tx.hset(qk.waiting, fields["j"], "9999999999999-7")
                await tx.execute()
            with anyio.fail_after(10):
                for handle in handles:
                    await handle.result()
        assert sorted(ran) == ["a", "b"]


async def test_an_idle_worker_blocks_again_without_a_start_lua_read(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking read that got less than it asked for found the streams drained: the next
    turn blocks again at once (a start.lua read first found nothing: a round trip per job)."""
    app, note = _app(redis_url, namespace)
    fetches: list[int] = []
    async with app:
        gateway = app.gateway
        fetch = gateway.fetch

        async def counted(*args: Any, **kwargs: Any) -> Any:
            fetches.append(1)
            return await fetch(*args, **kwargs)

        monkeypatch.setattr(gateway, "fetch", counted)
        async with worker_running(app, concurrency=10):
            await _blocked(gateway, 1)
            before = len(fetches)
            for i in range(5):
                await (await note.enqueue(f"n{i}")).result(timeout=10)
                await _blocked(gateway, 1)  # around the loop, and blocked again
        assert len(fetches) == before
