"""taskiq (https://taskiq-python.github.io/) with taskiq-redis's ``RedisStreamBroker``
(Redis Streams, consumer groups, acknowledgements).

Throughput settings. taskiq's docs describe ``--max-async-tasks`` (default 100) and
``--max-prefetch`` (default 0) and recommend no other values; the worker runs
``taskiq worker benchmarks.peers.taskiq:broker --workers 1 --max-async-tasks N
--log-level WARNING`` (N = the scenario's concurrency). Broker: taskiq-redis defaults
(``xread_count`` 100, ``xread_block`` 2 s, acknowledgement ``when_saved``, no result backend)
except ``consumer_id="0"``: the consumer group is created when the first worker starts, and
with the default ``"$"`` it would skip the jobs enqueued before that (the drains enqueue first).
Retries: ``SimpleRetryMiddleware`` (re-sends at once), the flaky task has
``retry_on_error=True``. There is no bulk enqueue API (``kiq`` is one call per job).
Counting: the shared probe (in-memory counters flushed in batches).
"""

from __future__ import annotations

import os
from typing import Any

from taskiq import SimpleRetryMiddleware
from taskiq_redis import RedisStreamBroker

from benchmarks.suite import probe
from benchmarks.suite.driver import Driver, Kind, WorkerCommand, bin_script

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

broker = RedisStreamBroker(URL, consumer_id="0").with_middlewares(
    SimpleRetryMiddleware(default_retry_count=3)
)


@broker.task(task_name="noop")
async def noop(i: int) -> None:
    await probe.noop_async(i)


@broker.task(task_name="io")
async def io(i: int) -> None:
    await probe.io_async(i)


@broker.task(task_name="flaky", retry_on_error=True, max_retries=3)
async def flaky(i: int) -> None:
    await probe.gate_async()
    if probe.should_fail(i):
        raise probe.InjectedFailure(f"job {i} fails its first attempt")
    probe.done()


@broker.task(task_name="latency")
async def latency(enqueued_at: float) -> None:
    await probe.latency_async(enqueued_at)


TASKS: dict[str, Any] = {"noop": noop, "io": io, "flaky": flaky, "latency": latency}


class PeerDriver(Driver):
    name = "taskiq"
    distribution = "taskiq-redis"
    bulk_api = None
    settings = {
        "worker": "taskiq worker ...:broker --workers 1 --max-async-tasks N --log-level WARNING",
        "broker": "RedisStreamBroker(consumer_id='0'), other defaults",
        "results": "no result backend (default)",
        "retry": "SimpleRetryMiddleware, retry_on_error=True",
    }

    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def enqueue_one(self, kind: Kind, arg: Any) -> None:
        await TASKS[kind].kiq(arg)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [bin_script("taskiq"), "worker", "benchmarks.peers.taskiq:broker", "--workers", "1"]
        argv += ["--max-async-tasks", str(concurrency), "--log-level", "WARNING"]
        return WorkerCommand(argv, {"BENCH_REDIS_URL": self.url})
