"""A worker app for subprocess tests: every run of a job is counted in Redis.

Configured from the environment so the test that starts the process decides where it
points: ENGINE_REDIS_URL, ENGINE_NAMESPACE and TEST_VISIBILITY_TIMEOUT.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from engine import Engine, JobContext

app = Engine(visibility_timeout=float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "30")))


def runs_key(namespace: str) -> str:
    return f"{namespace}:test:runs"


async def _redis() -> Any:
    # The app's own client: it follows the server it detected (a cluster client on a cluster).
    gateway = await app.ready()
    return gateway.redis


@app.task(timeout=30)
async def count(ctx: JobContext, n: int, sleep_s: float = 0.0) -> int:
    if sleep_s:
        await anyio.sleep(sleep_s)
    await (await _redis()).hincrby(runs_key(app.namespace), ctx.job_id, 1)
    return n


@app.task(timeout=30, max_attempts=2)
async def crash(ctx: JobContext) -> None:
    """Kills its own worker process, every time: a poison job."""
    await (await _redis()).hincrby(runs_key(app.namespace), ctx.job_id, 1)
    os._exit(137)


@app.task(timeout=30, max_attempts=1000)
async def crash_often(ctx: JobContext) -> None:
    """Kills its own worker process every time, with attempts to spare: only the count of
    worker deaths can stop it."""
    await (await _redis()).hincrby(runs_key(app.namespace), ctx.job_id, 1)
    os._exit(137)
