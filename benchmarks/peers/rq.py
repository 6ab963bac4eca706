"""RQ (https://python-rq.org/): jobs in Redis lists, one job at a time per worker process.

Throughput settings. RQ's docs ("Notes on Performance") say the default ``Worker`` forks a
work horse per job, and that ``SimpleWorker`` (no fork) is about 6x faster for jobs that
last single-digit milliseconds; used: ``rq worker --worker-class rq.worker.SimpleWorker
--quiet default``. RQ has no concurrency within a worker process: "concurrency N" does not
apply (one job at a time), which caps the I/O scenario at about 100 jobs/s per process.
Results kept 500 s (``result_ttl`` default). Retries: ``Retry(max=3)`` (interval 0: re-queued
at once). Bulk API: ``Queue.enqueue_many`` (one pipeline).
Counting: the shared probe (in-memory counters flushed in batches; no fork, so they stay
in the worker process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue, Retry

from benchmarks.suite import probe
from benchmarks.suite.driver import Driver, Kind, WorkerCommand, bin_script

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def noop(i: int) -> None:
    probe.noop_sync(i)


def io(i: int) -> None:
    probe.io_sync(i)


def flaky(i: int) -> None:
    probe.gate_sync()
    if probe.should_fail(i):
        raise probe.InjectedFailure(f"job {i} fails its first attempt")
    probe.done()


def latency(enqueued_at: float) -> None:
    probe.latency_sync(enqueued_at)


FUNCS: dict[str, Any] = {"noop": noop, "io": io, "flaky": flaky, "latency": latency}


class PeerDriver(Driver):
    name = "rq"
    distribution = "rq"
    bulk_api = "Queue.enqueue_many"
    settings = {
        "worker": "rq worker --worker-class rq.worker.SimpleWorker --quiet default",
        "concurrency": "1 job at a time per process (RQ has no in-process concurrency)",
        "results": "kept 500 s (result_ttl default)",
        "retry": "Retry(max=3), interval 0",
    }
    concurrency_note = "RQ runs one job at a time per worker process"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.queue = Queue("default", connection=Redis.from_url(url))

    def _enqueue_one_sync(self, kind: Kind, arg: Any) -> None:
        if kind == "flaky":
            self.queue.enqueue(flaky, arg, retry=Retry(max=3))
        else:
            self.queue.enqueue(FUNCS[kind], arg)

    async def enqueue_bulk(self, kind: Kind, args: Sequence[Any]) -> None:
        func = FUNCS[kind]
        retry = Retry(max=3) if kind == "flaky" else None
        self.queue.enqueue_many([Queue.prepare_data(func, args=(a,), retry=retry) for a in args])

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [bin_script("rq"), "worker", "--url", self.url, "--worker-class", "rq.worker.SimpleWorker"]
        argv += ["--quiet", "default"]
        return WorkerCommand(argv, {"BENCH_REDIS_URL": self.url})
