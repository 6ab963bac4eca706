"""Apps the benchmarks run in worker processes (configured from the environment)."""

from __future__ import annotations

import os

from engine import Engine, JobContext

# The memory scenario wants finished jobs gone quickly to see the drained footprint.
app = Engine(result_ttl=float(os.environ.get("BENCH_RESULT_TTL", "3600")))


@app.task(timeout=30)
async def noop(ctx: JobContext, n: int) -> None:
    return None
