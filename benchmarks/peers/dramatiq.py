"""Dramatiq (https://dramatiq.io/) with its ``RedisBroker``: thread-pool workers.

Throughput settings. Dramatiq's docs size a worker with ``--processes`` (default: one per
CPU) and ``--threads`` (default 8), and prefetch with ``dramatiq_queue_prefetch`` (default:
twice the threads); used: ``dramatiq benchmarks.peers.dramatiq --processes 1 --threads N``
(N = the scenario's concurrency: one process, like every other system here), prefetch default,
default middleware, no result backend.
Retries: the Retries middleware, the flaky actor has ``max_retries=3, min_backoff=1,
max_backoff=1`` (milliseconds: the smallest delay). The job bodies are plain functions (the
probe's sync variants) run by the worker's threads. There is no bulk enqueue API (``send``
is one call per message).
Counting: the shared probe (in-memory counters flushed in batches).
"""

from __future__ import annotations

import os
from typing import Any

import anyio.to_thread
import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.suite import probe
from benchmarks.suite.driver import Driver, Kind, WorkerCommand, bin_script

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

broker = RedisBroker(url=URL)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", queue_name="default")
def noop(i: int) -> None:
    probe.noop_sync(i)


@dramatiq.actor(actor_name="io", queue_name="default")
def io(i: int) -> None:
    probe.io_sync(i)


@dramatiq.actor(actor_name="flaky", queue_name="default", max_retries=3, min_backoff=1, max_backoff=1)
def flaky(i: int) -> None:
    probe.gate_sync()
    if probe.should_fail(i):
        raise probe.InjectedFailure(f"job {i} fails its first attempt")
    probe.done()


@dramatiq.actor(actor_name="latency", queue_name="default")
def latency(enqueued_at: float) -> None:
    probe.latency_sync(enqueued_at)


ACTORS: dict[str, Any] = {"noop": noop, "io": io, "flaky": flaky, "latency": latency}


class PeerDriver(Driver):
    name = "dramatiq"
    distribution = "dramatiq"
    bulk_api = None
    settings = {
        "worker": "dramatiq benchmarks.peers.dramatiq --processes 1 --threads N",
        "broker": "RedisBroker, default middleware, prefetch default",
        "results": "none stored (no Results middleware)",
        "retry": "max_retries=3, min_backoff=1 ms",
    }

    def _enqueue_one_sync(self, kind: Kind, arg: Any) -> None:
        ACTORS[kind].send(arg)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(broker.close)

    def worker(self, kind: Kind, concurrency: int) -> WorkerCommand:
        argv = [bin_script("dramatiq"), "benchmarks.peers.dramatiq", "--processes", "1"]
        argv += ["--threads", str(concurrency), "--queues", "default"]
        return WorkerCommand(argv, {"BENCH_REDIS_URL": self.url})
