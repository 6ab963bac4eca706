"""The seed's first story: a monthly report aggregation on a cron schedule, exactly once per
tick however many workers run, with nobody watching.

At 00:00 on the 1st of every month, Jakarta time, it aggregates the previous month's orders
into ``monthly_reports`` (one row per region) in PostgreSQL. The aggregation is an upsert,
so a retried or replayed run gives the same rows: at-least-once delivery stays harmless.

    ENGINE_DATABASE_URL=postgresql://... python -m engine.worker examples.monthly_report:app
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from engine import Engine, JobContext

JAKARTA = ZoneInfo("Asia/Jakarta")
REGIONS = ("jakarta", "surabaya", "bandung", "medan")

app = Engine()

SCHEMA = """
CREATE TABLE IF NOT EXISTS sample_orders (
    id           bigserial PRIMARY KEY,
    region       text NOT NULL,
    amount_cents bigint NOT NULL,
    ordered_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sample_orders_ordered_idx ON sample_orders (ordered_at);
CREATE TABLE IF NOT EXISTS monthly_reports (
    month         date NOT NULL,
    region        text NOT NULL,
    orders        bigint NOT NULL,
    revenue_cents bigint NOT NULL,
    generated_at  timestamptz NOT NULL,
    job_id        text NOT NULL,
    PRIMARY KEY (month, region)
);
"""

AGGREGATE = """
INSERT INTO monthly_reports (month, region, orders, revenue_cents, generated_at, job_id)
SELECT $1::date, region, count(*), sum(amount_cents), now(), $4
FROM sample_orders
WHERE ordered_at >= $2 AND ordered_at < $3
GROUP BY region
ON CONFLICT (month, region) DO UPDATE
SET orders = excluded.orders, revenue_cents = excluded.revenue_cents,
    generated_at = excluded.generated_at, job_id = excluded.job_id
"""


def month_before(tick: datetime) -> tuple[date, datetime, datetime]:
    """The calendar month (in Jakarta) that ended at ``tick``: (first day, start, end)."""
    local = tick.astimezone(JAKARTA)
    last_day = (local.replace(day=1) - timedelta(days=1)).date()
    first = last_day.replace(day=1)
    start = datetime(first.year, first.month, 1, tzinfo=JAKARTA)
    end = datetime(local.year, local.month, 1, tzinfo=JAKARTA)
    return first, start, end


async def aggregate(database_url: str, tick: datetime, job_id: str) -> tuple[date, int]:
    month, start, end = month_before(tick)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SCHEMA)
        status = await conn.execute(AGGREGATE, month, start, end, job_id)
    finally:
        await conn.close()
    return month, int(status.split()[-1])


async def seed(database_url: str, month: date, orders: int = 1000, rng: random.Random | None = None) -> None:
    """Sample orders spread over one month (Jakarta time), for the demo and the tests."""
    rng = rng or random.Random(month.toordinal())
    start = datetime(month.year, month.month, 1, tzinfo=JAKARTA)
    next_month = (start + timedelta(days=32)).replace(day=1)
    span = (next_month - start).total_seconds()
    rows = [
        (
            rng.choice(REGIONS),
            rng.randint(1_000, 500_000),
            start + timedelta(seconds=rng.uniform(0, span - 1)),
        )
        for _ in range(orders)
    ]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SCHEMA)
        await conn.copy_records_to_table(
            "sample_orders", records=rows, columns=["region", "amount_cents", "ordered_at"]
        )
    finally:
        await conn.close()


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
