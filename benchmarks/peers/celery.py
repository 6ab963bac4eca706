"""Celery (https://docs.celeryq.dev/) with the Redis broker (kombu's redis transport).

Throughput settings, from Celery's "Optimizing" and "Tasks" guides: for many short tasks a
large prefetch multiplier ("say 64, or 128"): ``worker_prefetch_multiplier=64``; don't store
results you don't want: ``task_ignore_result=True``; disable rate limits when none are used:
``worker_disable_rate_limits=True``; and the worker options ``--without-gossip
--without-mingle --without-heartbeat`` (less broker chatter). One worker process running N
jobs at once means the ``threads`` pool: ``celery -A benchmarks.peers.celery worker --pool
threads --concurrency N --loglevel WARNING`` (prefork would be N processes).
Retries: the flaky task is ``bind=True, max_retries=3`` and raises ``self.retry(countdown=0)``.
There is no bulk enqueue API (``group(...).apply_async`` sends one message per task).
Counting: the shared probe (in-memory counters flushed in batches).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task

from benchmarks.suite import probe
from benchmarks.suite.driver import Driver, Kind, WorkerCommand, bin_script

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=URL)
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=64,
    worker_disable_rate_limits=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(i: int) -> None:
    probe.noop_sync(i)


@app.task(name="io")  # type: ignore[untyped-decorator]
def io(i: int) -> None:
    probe.io_sync(i)


@app.task(name="flaky", bind=True, max_retries=3)  # type: ignore[untyped-decorator]
def flaky(self: Task, i: int) -> None:  # type: ignore[type-arg,unused-ignore]
    probe.gate_sync()
    if probe.should_fail(i):
        raise self.retry(countdown=0)
    probe.done()


@app.task(name="latency")  # type: ignore[untyped-decorator]
def latency(enqueued_at: float) -> None:
    probe.latency_sync(enqueued_at)


TASKS: dict[str, Any] = {"noop": noop, "io": io, "flaky": flaky, "latency": latency}


class PeerDriver(Driver):
    name = "celery"
    distribution = "celery"
    bulk_api = None
    settings = {
        "worker": "celery worker --pool threads --concurrency N --without-gossip/mingle/heartbeat",
        "config": "worker_prefetch_multiplier=64, worker_disable_rate_limits=True",
        "results": "none stored (task_ignore_result=True)",
        "retry": "self.retry(countdown=0), max_retries=3",
    }

    async def after_flush(self) -> None:
        # kombu's redis transport routes by binding keys that FLUSHALL removed, and its
        # producers remember what they declared: declare the queue again or messages vanish.
        with app.connection_for_write() as conn:
            app.amqp.queues[app.conf.task_default_queue](conn.default_channel).declare()

    def _enqueue_one_sync(self, kind: Kind, arg: Any) -> None:
        TASKS[kind].delay(arg)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [bin_script("celery"), "-A", "benchmarks.peers.celery", "worker", "--pool", "threads"]
        argv += ["--concurrency", str(concurrency), "--loglevel", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        return WorkerCommand(argv, {"BENCH_REDIS_URL": self.url})
