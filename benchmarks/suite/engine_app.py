"""The engine's worker app for the suite: the probe's job bodies as ``@app.task`` tasks.

Configured from the environment: ``BENCH_REDIS_URL`` (else ``ENGINE_REDIS_URL``),
``BENCH_RESULT_TTL`` (seconds finished jobs are kept; default: the engine's own 24 h). The
namespace is ``bench``. ``ENGINE_DATABASE_URL`` turns the PostgreSQL job log on.
"""

from __future__ import annotations

import os

from benchmarks.suite import probe
from engine import Backoff, Engine, JobContext

app = Engine(
    os.environ.get("BENCH_REDIS_URL") or None,
    namespace="bench",
    result_ttl=float(os.environ.get("BENCH_RESULT_TTL", str(24 * 3600))),
)


@app.task(timeout=30)
async def noop(ctx: JobContext, i: int) -> None:
    await probe.noop_async(i)


@app.task(timeout=30)
async def io(ctx: JobContext, i: int) -> None:
    await probe.io_async(i)


# The smallest retry delay the engine allows: retried at once (through the delayed set).
@app.task(timeout=30, max_attempts=5, backoff=Backoff(initial=0.0, jitter=0.0))
async def flaky(ctx: JobContext, i: int) -> None:
    await probe.gate_async()
    if probe.should_fail(i):
        raise probe.InjectedFailure(f"job {i} fails its first attempt")
    probe.done()


@app.task(timeout=30)
async def latency(ctx: JobContext, enqueued_at: float) -> None:
    await probe.latency_async(enqueued_at)
