"""streaq (https://streaq.readthedocs.io/): anyio tasks on Redis Streams via a Lua library.

Throughput settings. streaq's docs describe ``concurrency`` (default 16) and ``prefetch``
(default: ``concurrency``) and recommend ``silent=True`` on tasks whose per-task log lines are
not wanted; used: ``Worker(concurrency=N)`` with N the scenario's concurrency, every task
``silent=True``, other defaults (results kept 5 min, ``max_tries`` 3).
Worker: streaq's own CLI, ``streaq run benchmarks.peers.streaq:worker`` (one process).
Retries: streaq retries only on ``StreaqRetry``; the flaky task raises ``StreaqRetry(delay=0)``.
Bulk API: ``Worker.enqueue_many`` (one pipeline).
Counting: the shared probe (in-memory counters flushed in batches).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from streaq import StreaqRetry, Worker

from benchmarks.suite import probe
from benchmarks.suite.driver import Driver, Kind, WorkerCommand, bin_script

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

worker = Worker(redis_url=URL, concurrency=int(os.environ.get("BENCH_CONCURRENCY", "100")))


@worker.task(name="noop", silent=True)
async def noop(i: int) -> None:
    await probe.noop_async(i)


@worker.task(name="io", silent=True)
async def io(i: int) -> None:
    await probe.io_async(i)


@worker.task(name="flaky", silent=True, max_tries=3)
async def flaky(i: int) -> None:
    await probe.gate_async()
    if probe.should_fail(i):
        raise StreaqRetry("fails its first attempt", delay=0)
    probe.done()


@worker.task(name="latency", silent=True)
async def latency(enqueued_at: float) -> None:
    await probe.latency_async(enqueued_at)


TASKS: dict[str, Any] = {"noop": noop, "io": io, "flaky": flaky, "latency": latency}


class PeerDriver(Driver):
    name = "streaq"
    distribution = "streaq"
    bulk_api = "Worker.enqueue_many"
    settings = {
        "worker": "streaq run benchmarks.peers.streaq:worker, Worker(concurrency=N)",
        "tasks": "silent=True (no per-task log line)",
        "results": "kept 5 min (ttl default)",
        "retry": "raise StreaqRetry(delay=0)",
    }

    async def open(self) -> None:
        await worker.__aenter__()

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)

    async def enqueue_one(self, kind: Kind, arg: Any) -> None:
        await TASKS[kind].enqueue(arg)

    async def enqueue_bulk(self, kind: Kind, args: Sequence[Any]) -> None:
        task = TASKS[kind]
        await worker.enqueue_many([task.enqueue(a) for a in args])

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        return WorkerCommand(
            [bin_script("streaq"), "run", "benchmarks.peers.streaq:worker"],
            {"BENCH_REDIS_URL": self.url, "BENCH_CONCURRENCY": str(concurrency)},
        )
