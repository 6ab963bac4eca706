"""A worker app for subprocess tests of queue-wide limits: queue "limited" runs at most 3
jobs at once across every process; each run logs when it started and ended (this
machine's clock, shared by the processes) in Redis.

Configured from the environment: ENGINE_REDIS_URL, ENGINE_NAMESPACE, TEST_VISIBILITY_TIMEOUT.
"""

from __future__ import annotations

import os
import time

import anyio

from engine import Engine, JobContext

app = Engine(visibility_timeout=float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "30")))
app.queue("limited", concurrency=3)


def runs_key(namespace: str) -> str:
    return f"{namespace}:test:runs"


@app.task(queue="limited", timeout=60)
async def hold(ctx: JobContext, seconds: float) -> None:
    started = time.time()
    await anyio.sleep(seconds)
    gateway = await app.ready()
    await gateway.redis.rpush(runs_key(app.namespace), f"{started} {time.time()} {os.getpid()}")
