"""The sample app ``python -m engine demo`` runs: a few kinds of jobs a web service offloads,
and the monthly report of ``examples/monthly_report.py`` on a fast cron schedule.

It lives in the package, not in ``examples/``, so that the demo runs from a plain
``pip install engine``. Run a worker for it yourself with::

    python -m engine.worker engine.demo_app:app --concurrency 50
"""

from __future__ import annotations

import hashlib
import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import asyncpg

from engine import Backoff, Engine, JobContext, Retry, UnrecoverableError

app = Engine()  # ENGINE_REDIS_URL / ENGINE_DATABASE_URL / ENGINE_NAMESPACE from the environment

# Short backoff so the demo shows retries within seconds; production defaults are longer.
FAST_RETRY = Backoff(initial=0.2, factor=2.0, max=2.0, jitter=0.2)


@app.task(queue="default", timeout=10)
async def make_thumbnail(ctx: JobContext, image_id: int, width: int = 256) -> str:
    """I/O-bound work: waits on 'storage' for a few milliseconds."""
    await anyio.sleep(random.uniform(0.005, 0.05))
    return f"thumbs/{image_id}-{width}.jpg"


@app.task(queue="default", timeout=10)
def checksum(ctx: JobContext, text: str) -> str:
    """CPU-bound, synchronous work: runs in a worker thread."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@app.task(queue="emails", timeout=5, max_attempts=4, backoff=FAST_RETRY)
async def send_email(ctx: JobContext, to: str) -> str:
    """A flaky dependency: a third of first attempts fail and are retried with backoff."""
    await anyio.sleep(random.uniform(0.002, 0.02))
    if ctx.attempt == 1 and random.random() < 0.33:
        raise Retry(reason="smtp server busy")
    return f"sent to {to}"


@app.task(queue="emails", timeout=5, max_attempts=2, backoff=FAST_RETRY)
async def charge_card(ctx: JobContext, order_id: int, amount_cents: int) -> str:
    """A job that can never succeed for bad data: it goes to the dead-letter stream."""
    if amount_cents <= 0:
        await ctx.log(f"refusing to charge {amount_cents} cents", level="error")
        raise UnrecoverableError(f"order {order_id}: amount must be positive, got {amount_cents}")
    return f"charged order {order_id}"


# --- The monthly report: orders aggregated per region and month, in PostgreSQL -----------
# examples/monthly_report.py runs this aggregation on the 1st of each month in Jakarta (and
# imports it from here); the demo seeds a month of orders and aggregates it every 3 seconds.

JAKARTA = ZoneInfo("Asia/Jakarta")
REGIONS = ("jakarta", "surabaya", "bandung", "medan")

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

# An upsert, so a retried or replayed run gives the same rows.
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
    """Aggregate the month before ``tick``; returns the month and the region rows written."""
    month, start, end = month_before(tick)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SCHEMA)
        status = await conn.execute(AGGREGATE, month, start, end, job_id)
    finally:
        await conn.close()
    return month, int(status.split()[-1])


async def seed(database_url: str, month: date, orders: int = 1000, rng: random.Random | None = None) -> None:
    """Sample orders spread over one month (Jakarta time)."""
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


async def report_rows(database_url: str) -> list[asyncpg.Record]:
    """The monthly report's rows, by region (what the demo prints)."""
    conn = await asyncpg.connect(database_url)
    try:
        return list(
            await conn.fetch(
                "SELECT month, region, orders, revenue_cents FROM monthly_reports ORDER BY region"
            )
        )
    finally:
        await conn.close()


async def reset(database_url: str) -> None:
    """Drop the previous run's orders, so each demo reports on the month it seeds."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE IF EXISTS sample_orders")
    finally:
        await conn.close()


# Every 3 seconds, so the demo shows a cron job fire (exactly once per tick, whichever
# worker leads) within seconds.
@app.cron("* * * * * */3", name="monthly_report_preview", queue="reports", timeout=60)
async def monthly_report_preview(ctx: JobContext) -> dict[str, object]:
    if app.database_url is None:
        await ctx.log("no ENGINE_DATABASE_URL: nothing to aggregate", level="warning")
        return {"skipped": True}
    tick = ctx.scheduled_at
    assert tick is not None
    # The "month before" a tick on the 1st of next month is this month: aggregate it so far.
    first_of_next = (tick.replace(day=1) + timedelta(days=32)).replace(day=1)
    month, regions = await aggregate(app.database_url, first_of_next, ctx.job_id)
    return {"month": month.isoformat(), "regions": regions}
