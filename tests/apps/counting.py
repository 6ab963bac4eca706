"""A worker app for subprocess tests: every run of a job is counted in Redis.

Configured from the environment so the test that starts the process decides where it
points: ENGINE_REDIS_URL and ENGINE_NAMESPACE.
"""

from __future__ import annotations

import os

import anyio
import redis.asyncio as aioredis

from engine import Engine, JobContext

app = Engine()
_counter: aioredis.Redis | None = None


def runs_key() -> str:
    return f"{app.namespace}:test:runs"


async def _redis() -> aioredis.Redis:
    global _counter
    if _counter is None:
        _counter = aioredis.Redis.from_url(os.environ["ENGINE_REDIS_URL"])
    return _counter


@app.task(timeout=30)
async def count(ctx: JobContext, n: int, sleep_s: float = 0.0) -> int:
    if sleep_s:
        await anyio.sleep(sleep_s)
    await (await _redis()).hincrby(runs_key(), ctx.job_id, 1)
    return n
