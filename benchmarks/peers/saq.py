"""SAQ (https://saq-py.readthedocs.io/): asyncio jobs in Redis lists with Lua-scripted dequeue.

Throughput settings. SAQ's docs recommend none beyond the worker's ``concurrency`` (default
10), which is set to the scenario's concurrency (100; 500 for the I/O scenario). Everything
else is the default: ``dequeue_timeout`` 0, job ``timeout`` 10 s, completed jobs kept for their
``ttl`` (600 s), logging at ERROR (the CLI's default without ``-v``). The Redis client gets
``max_connections=10000``: SAQ declares ``redis<8``, whose pools were unbounded, while redis-py 8
(installed here for the engine and taskiq-redis) caps them at 100, which SAQ's worker exceeds
at concurrency 500 (one connection per concurrent dequeue).
Worker: SAQ's own CLI, ``saq benchmarks.peers.saq.settings`` (one process).
Retries: the flaky job is enqueued with ``retries=3, retry_delay=0`` and raises.
There is no bulk enqueue API (``Queue.map`` enqueues one by one and then waits for results).
Counting: the shared probe (in-memory counters flushed in batches).
"""

from __future__ import annotations

import os
from typing import Any

from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

from benchmarks.suite import probe
from benchmarks.suite.driver import Driver, Kind, WorkerCommand, bin_script

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# SAQ declares redis<8, whose connection pools were unbounded; redis-py 8 caps them at 100,
# and SAQ's worker holds one connection per concurrent dequeue: give it back a large pool.
MAX_CONNECTIONS = 10_000


def make_queue(url: str) -> RedisQueue:
    """What ``saq.Queue.from_url(url)`` makes, with a larger connection pool."""
    return RedisQueue(Redis.from_url(url, max_connections=MAX_CONNECTIONS))


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    await probe.noop_async(i)


async def io(ctx: dict[str, Any], *, i: int) -> None:
    await probe.io_async(i)


async def flaky(ctx: dict[str, Any], *, i: int) -> None:
    await probe.gate_async()
    if probe.should_fail(i):
        raise probe.InjectedFailure(f"job {i} fails its first attempt")
    probe.done()


async def latency(ctx: dict[str, Any], *, i: float) -> None:
    await probe.latency_async(i)


settings = {
    "queue": make_queue(URL),
    "functions": [noop, io, flaky, latency],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "100")),
}


class PeerDriver(Driver):
    name = "saq"
    distribution = "saq"
    bulk_api = None
    settings = {
        "worker": "saq benchmarks.peers.saq.settings, concurrency=N",
        "other": "defaults (dequeue_timeout 0, timeout 10 s); Redis pool max_connections=10000",
        "results": "job kept for its ttl, 600 s (default)",
        "retry": "enqueue(retries=3, retry_delay=0)",
    }

    async def open(self) -> None:
        self.queue = make_queue(self.url)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue_one(self, kind: Kind, arg: Any) -> None:
        if kind == "flaky":
            await self.queue.enqueue(kind, i=arg, retries=3, retry_delay=0.0)
        else:
            await self.queue.enqueue(kind, i=arg)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        return WorkerCommand(
            [bin_script("saq"), "benchmarks.peers.saq.settings"],
            {"BENCH_REDIS_URL": self.url, "BENCH_CONCURRENCY": str(concurrency)},
        )
