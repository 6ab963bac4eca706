"""A worker app for the cluster failover test: jobs on the queues of TEST_QUEUES and an
every-second schedule on the first, each run recorded in a ledger outside the cluster.

Environment: ENGINE_REDIS_URL (the cluster), ENGINE_NAMESPACE, TEST_QUEUES (comma-separated),
TEST_LEDGER_URL (a standalone server: the ledger must not fail over with the shard)."""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from engine import Engine, JobContext

QUEUES = os.environ.get("TEST_QUEUES", "default").split(",")
app = Engine(cron_lease=2.0)
_ledger: aioredis.Redis | None = None


def runs_key(namespace: str) -> str:
    return f"{namespace}:ledger:runs"


def ticks_key(namespace: str) -> str:
    return f"{namespace}:ledger:ticks"


def _client() -> aioredis.Redis:
    global _ledger
    if _ledger is None:
        _ledger = aioredis.Redis.from_url(os.environ["TEST_LEDGER_URL"])
    return _ledger


for _queue in QUEUES:

    @app.task(name=f"record_{_queue}", queue=_queue, timeout=10, max_attempts=20)
    async def record(ctx: JobContext, n: int) -> int:
        await _client().hincrby(runs_key(app.namespace), ctx.job_id, 1)
        return n


@app.cron("* * * * * *", name="tick", queue=QUEUES[0], timeout=10)
async def tick(ctx: JobContext) -> None:
    assert ctx.scheduled_at is not None
    await _client().hincrby(ticks_key(app.namespace), str(int(ctx.scheduled_at.timestamp())), 1)
