"""A worker app for the pool tests: every run of a job records which process ran it.

Configured from the environment, as the test that starts the pool decides: ENGINE_REDIS_URL,
ENGINE_NAMESPACE and TEST_VISIBILITY_TIMEOUT.
"""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from engine import Engine, JobContext

app = Engine(visibility_timeout=float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "30")))
_redis: aioredis.Redis | None = None


def pids_key(namespace: str) -> str:
    """Hash: job id -> pid of the process that ran it last."""
    return f"{namespace}:test:pids"


def runs_key(namespace: str) -> str:
    """Hash: job id -> how many times it ran."""
    return f"{namespace}:test:runs"


@app.task(timeout=30)
async def whoami(ctx: JobContext, n: int, sleep_s: float = 0.0) -> int:
    global _redis
    if sleep_s:
        await anyio.sleep(sleep_s)
    if _redis is None:
        _redis = aioredis.Redis.from_url(os.environ["ENGINE_REDIS_URL"])
    async with _redis.pipeline(transaction=False) as pipe:
        pipe.hset(pids_key(app.namespace), ctx.job_id, os.getpid())
        pipe.hincrby(runs_key(app.namespace), ctx.job_id, 1)
        await pipe.execute()
    return os.getpid()
