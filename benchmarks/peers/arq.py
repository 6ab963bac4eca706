"""arq (https://arq-docs.helpmanual.io/): asyncio jobs in a Redis sorted set, polled.

Throughput settings. arq's docs document the knobs but recommend no values for throughput:
- ``max_jobs`` ("maximum number of jobs to run at a time", default 10): set to the scenario's
  concurrency (100; 500 for the I/O scenario);
- ``poll_delay`` (default 0.5 s) and ``queue_read_limit`` (default ``max(max_jobs * 5, 100)``):
  left at their defaults. Caveat: a worker reads at most ``queue_read_limit`` ids per poll and
  sleeps ``poll_delay`` between polls, which bounds both its drain rate and its latency;
- ``keep_result`` (default 3600 s), ``max_tries`` (default 5): defaults;
- ``RedisSettings.max_connections=10000``: arq declares ``redis<6``, whose pools were unbounded,
  while redis-py 8 (installed here for the engine and taskiq-redis) caps them at 100.
The worker runs through arq's own API, ``arq.worker.run_worker(WorkerSettings)`` (what the
``arq`` CLI calls), so that logging can be set to WARNING: the CLI logs every job at INFO.
Retries: arq retries only jobs that raise ``arq.worker.Retry``; the flaky job raises
``Retry(defer=0)``. There is no bulk enqueue API (``enqueue_job`` is one call per job).
Counting: the shared probe (in-memory counters flushed in batches).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Retry, run_worker

from benchmarks.suite import probe
from benchmarks.suite.driver import Driver, Kind, WorkerCommand, python

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def noop(ctx: dict[str, Any], i: int) -> None:
    await probe.noop_async(i)


async def io(ctx: dict[str, Any], i: int) -> None:
    await probe.io_async(i)


async def flaky(ctx: dict[str, Any], i: int) -> None:
    await probe.gate_async()
    if probe.should_fail(i):
        raise Retry(defer=0)
    probe.done()


async def latency(ctx: dict[str, Any], enqueued_at: float) -> None:
    await probe.latency_async(enqueued_at)


class WorkerSettings:
    functions = [noop, io, flaky, latency]
    # arq declares redis<6, whose pools were unbounded; redis-py 8 caps them at 100.
    redis_settings = RedisSettings.from_dsn(URL)
    redis_settings.max_connections = 10_000
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "100"))


class PeerDriver(Driver):
    name = "arq"
    distribution = "arq"
    bulk_api = None
    settings = {
        "worker": "arq.worker.run_worker(WorkerSettings), max_jobs=N",
        "poll_delay / queue_read_limit": "defaults (0.5 s / max(5 N, 100))",
        "results": "kept 3600 s (keep_result default)",
        "redis pool": "max_connections=10000 (arq declares redis<6: unbounded pools)",
        "retry": "raise Retry(defer=0)",
    }

    async def open(self) -> None:
        self.pool: ArqRedis = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue_one(self, kind: Kind, arg: Any) -> None:
        await self.pool.enqueue_job(kind, arg)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        return WorkerCommand(
            [python(), "-m", "benchmarks.peers.arq"],
            {"BENCH_REDIS_URL": self.url, "BENCH_CONCURRENCY": str(concurrency)},
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)  # type: ignore[arg-type]
