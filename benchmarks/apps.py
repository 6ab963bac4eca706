"""Apps the benchmarks run in worker processes (configured from the environment)."""

from __future__ import annotations

from engine import Engine, JobContext

app = Engine()


@app.task(timeout=30)
async def noop(ctx: JobContext, n: int) -> None:
    return None
