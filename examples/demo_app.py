"""The sample app `python -m engine demo` runs: a few kinds of jobs a web service offloads.

Run a worker for it yourself with::

    python -m engine.worker examples.demo_app:app --concurrency 50
"""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta

import anyio

from engine import Backoff, Engine, JobContext, Retry, UnrecoverableError

app = Engine()  # ENGINE_REDIS_URL / ENGINE_NAMESPACE from the environment

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


# The monthly report of examples/monthly_report.py on a fast schedule, so the demo shows a
# cron job fire (exactly once per tick, whichever worker leads) within seconds.
@app.cron("* * * * * */3", name="monthly_report_preview", queue="reports", timeout=60)
async def monthly_report_preview(ctx: JobContext) -> dict[str, object]:
    from examples.monthly_report import aggregate

    if app.database_url is None:
        await ctx.log("no ENGINE_DATABASE_URL: nothing to aggregate", level="warning")
        return {"skipped": True}
    tick = ctx.scheduled_at
    assert tick is not None
    # The "month before" a tick on the 1st of next month is this month: aggregate it so far.
    first_of_next = (tick.replace(day=1) + timedelta(days=32)).replace(day=1)
    month, regions = await aggregate(app.database_url, first_of_next, ctx.job_id)
    return {"month": month.isoformat(), "regions": regions}
