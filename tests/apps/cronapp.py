"""A worker app with an every-second schedule for multi-process cron tests.

Each run records its tick (ctx.scheduled_at) in a Redis hash, counting runs per tick.
Environment: ENGINE_REDIS_URL, ENGINE_NAMESPACE, TEST_CRON_LEASE.
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from engine import Engine, JobContext

app = Engine(cron_lease=float(os.environ.get("TEST_CRON_LEASE", "2")))
_client: aioredis.Redis | None = None


def ticks_key(namespace: str) -> str:
    return f"{namespace}:test:ticks"


@app.cron("* * * * * *", queue="ticks", timeout=10)
async def every_second(ctx: JobContext) -> None:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(os.environ["ENGINE_REDIS_URL"])
    assert ctx.scheduled_at is not None
    await _client.hincrby(ticks_key(app.namespace), str(int(ctx.scheduled_at.timestamp())), 1)
