"""The seed's first story: a monthly report aggregation on a cron schedule, exactly once per
tick however many workers run, with nobody watching.

At 00:00 on the 1st of every month, Jakarta time, it aggregates the previous month's orders
into ``monthly_reports`` (one row per region) in PostgreSQL. The aggregation is an upsert,
so a retried or replayed run gives the same rows: at-least-once delivery stays harmless.

    ENGINE_DATABASE_URL=postgresql://... python -m engine.worker examples.monthly_report:app

The tables, the aggregation query and the sample data live in ``engine/demo_app.py``, which
the demo runs on a fast schedule (so that ``python -m engine demo`` works from a plain
install); this is the job as you would schedule it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine import Engine, JobContext
from engine.demo_app import AGGREGATE, JAKARTA, REGIONS, SCHEMA, aggregate, month_before, seed

__all__ = [
    "AGGREGATE",
    "JAKARTA",
    "REGIONS",
    "SCHEMA",
    "aggregate",
    "app",
    "month_before",
    "monthly_report",
    "seed",
]

app = Engine()


@app.cron("0 0 1 * *", tz="Asia/Jakarta", queue="reports", timeout=600, max_attempts=3)
async def monthly_report(ctx: JobContext) -> dict[str, object]:
    if app.database_url is None:
        raise RuntimeError("monthly_report needs ENGINE_DATABASE_URL")
    tick = ctx.scheduled_at or datetime.now(UTC)
    await ctx.log(f"aggregating the month before {tick.astimezone(JAKARTA):%Y-%m-%d %H:%M %Z}")
    month, regions = await aggregate(app.database_url, tick, ctx.job_id)
    await ctx.progress(1.0)
    await ctx.log(f"report for {month:%Y-%m}: {regions} region rows")
    return {"month": month.isoformat(), "regions": regions}
