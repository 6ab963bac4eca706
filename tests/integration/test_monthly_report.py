"""The monthly report example: the right month in Jakarta, right sums, safe to repeat."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from engine import Engine
from engine.producer import Options
from engine.testing import worker_running
from examples import monthly_report as example
from tests.helpers import fresh_database


async def test_report_job_aggregates_and_repeats_safely(
    redis_url: str, database_url: str, namespace: str
) -> None:
    url = await fresh_database(database_url)
    await example.seed(url, date(2026, 2, 1), orders=500)
    await example.seed(url, date(2026, 3, 1), orders=100)  # must not leak into February
    app = Engine(redis_url, namespace=namespace, database_url=url)
    app.tasks["monthly_report"] = example.monthly_report  # the example's task, run by this test's app
    example.app.database_url = url
    tick = datetime(2026, 3, 1, tzinfo=example.JAKARTA)
    async with app, worker_running(app, queues=["reports"], cron=False):
        for _ in range(2):  # a retried or replayed run gives the same rows
            (job,) = await app._enqueue(example.monthly_report.spec, [((), {})], Options(scheduled_at=tick))
            assert await job.result(timeout=20) == {"month": "2026-02-01", "regions": 4}
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT region, orders, revenue_cents FROM monthly_reports WHERE month = '2026-02-01'"
        )
        expected = await conn.fetch(
            "SELECT region, count(*) AS orders, sum(amount_cents) AS revenue_cents FROM sample_orders "
            "WHERE ordered_at >= '2026-02-01 00:00+07' AND ordered_at < '2026-03-01 00:00+07' GROUP BY region"
        )
    finally:
        await conn.close()
    assert sorted(map(tuple, rows)) == sorted(map(tuple, expected))
    assert sum(r["orders"] for r in rows) == 500
