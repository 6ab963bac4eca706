"""The app the chaos soak's worker processes run (``benchmarks.chaos``).

Configured from the environment: ENGINE_REDIS_URL, ENGINE_DATABASE_URL, ENGINE_NAMESPACE and
CHAOS_VISIBILITY_TIMEOUT. Every run of a job is counted in Redis, so the soak can tell a job
that ran twice (allowed: at least once) from one that never ran (lost).
"""

from __future__ import annotations

import os
import random

import anyio

from engine import Engine, JobContext, Retry

app = Engine(visibility_timeout=float(os.environ.get("CHAOS_VISIBILITY_TIMEOUT", "3")))


def runs_key(namespace: str) -> str:
    return f"{namespace}:chaos:runs"


@app.task(timeout=30, max_attempts=20)
async def work(ctx: JobContext, n: int) -> int:
    # Long enough that a SIGKILL catches jobs mid-run; every tenth job fails once first,
    # so retries (the delayed set, the promoter) go through the chaos too.
    await anyio.sleep(random.uniform(0.0, 0.03))
    await app.gateway.redis.hincrby(runs_key(app.namespace), str(n), 1)
    if n % 10 == 0 and ctx.attempt == 1:
        raise Retry(delay=0.2, reason="fails once on purpose")
    await ctx.log(f"job {n} done")
    return n * 2
