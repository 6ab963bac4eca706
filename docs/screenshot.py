"""Regenerate docs/dashboard.png (overview) and docs/dashboard-job.png (a failed job).

    python docs/screenshot.py

Starts an embedded Valkey, a demo-like app (thumbnails, flaky e-mails, card charges that
fail for bad data, a long export reporting progress, a monthly cron report) with an
in-process worker, serves the dashboard on a free loopback port and photographs it with
Playwright driving Debian's Chromium (/usr/bin/chromium; no browser is ever downloaded).

Everything on the pictures is real engine state except the throughput of the minutes
before the script started: those per-minute counters are backfilled (the same Redis hashes
the workers write) so that the chart shows an hour instead of a single bar.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Backoff, Engine, JobContext, Retry, UnrecoverableError  # noqa: E402
from engine.dashboard import create_app  # noqa: E402
from engine.dashboard.server import serving  # noqa: E402
from engine.embedded import EmbeddedRedis  # noqa: E402
from engine.log import configure as configure_logging  # noqa: E402
from engine.testing import worker_running  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAST = Backoff(initial=0.2, factor=2.0, max=1.0, jitter=0.2)


def demo_app(redis_url: str) -> Engine:
    app = Engine(redis_url, namespace=f"shot{int(time.time())}")

    @app.task(queue="default", timeout=10)
    async def make_thumbnail(ctx: JobContext, image_id: int, width: int = 256) -> str:
        await anyio.sleep(random.uniform(0.005, 0.03))
        return f"thumbs/{image_id}-{width}.jpg"

    @app.task(queue="emails", timeout=5, max_attempts=4, backoff=FAST)
    async def send_email(ctx: JobContext, to: str, template: str = "welcome") -> str:
        if ctx.attempt == 1 and random.random() < 0.3:
            raise Retry(reason="smtp server busy")
        return f"sent {template} to {to}"

    @app.task(queue="payments", timeout=5, max_attempts=2, backoff=FAST)
    async def charge_card(ctx: JobContext, order_id: int, amount_cents: int, currency: str = "EUR") -> str:
        await ctx.log(f"charging order {order_id}: {amount_cents} {currency}")
        if amount_cents <= 0:
            await ctx.log("the payment provider refused the amount", level="error")
            raise UnrecoverableError(f"order {order_id}: amount must be positive, got {amount_cents}")
        return f"charged order {order_id}"

    @app.task(queue="exports", timeout=600)
    async def export_csv(ctx: JobContext, user_id: int, rows: int) -> str:
        await ctx.log(f"exporting {rows} rows for user {user_id}")
        for done in range(0, rows, rows // 50):
            await ctx.progress(done / rows)
            await anyio.sleep(1)
        return f"exports/{user_id}.csv"

    @app.cron("0 0 1 * *", tz="Asia/Jakarta", name="monthly_report", queue="reports", timeout=600)
    async def monthly_report(ctx: JobContext) -> None:
        await ctx.log("aggregating last month")

    return app


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await anyio.sleep(0.05)


async def backfill_throughput(app: Engine, minutes: int = 60) -> None:
    """Per-minute completed/failed counts for the hour before now (see the module docstring)."""
    gateway = await app.ready()
    now = int(time.time() // 60)
    rng = random.Random(7)
    shapes = {"default": (90, 0.004), "emails": (35, 0.02), "payments": (12, 0.08)}
    async with gateway.redis.pipeline(transaction=False) as pipe:
        for queue, (rate, failure) in shapes.items():
            for minute in range(now - minutes + 1, now):
                wave = 1 + 0.5 * ((minute % 17) / 17)
                completed = int(rate * wave * rng.uniform(0.6, 1.3))
                failed = sum(
                    1 for _ in range(completed) if rng.random() < failure * (3 if minute % 23 < 3 else 1)
                )
                key = gateway.keys.queue(queue).throughput(minute)
                pipe.hincrby(key, "completed", completed)
                pipe.hincrby(key, "failed", failed)
                pipe.expire(key, 7200)
        await pipe.execute()


async def shoot(redis_url: str, out_dir: Path) -> None:
    app = demo_app(redis_url)
    async with app, worker_running(app, concurrency=50):
        await backfill_throughput(app)
        await app.tasks["make_thumbnail"].enqueue_many([(i,) for i in range(400)])
        await app.tasks["send_email"].enqueue_many([(f"user{i}@example.com",) for i in range(150)])
        charges = app.tasks["charge_card"]
        await charges.enqueue_many([(1000 + i, 1999) for i in range(40)])
        failed = [await charges.enqueue(2000 + i, -500 * (i + 1)) for i in range(4)]
        await app.tasks["export_csv"].enqueue(42, 1_000_000)
        await app.tasks["make_thumbnail"].with_options(delay=3600).enqueue(9001, width=1024)

        async def settled() -> bool:
            stats = await app.stats()
            return stats["payments"]["dlq"] == len(failed) and stats["default"]["waiting"] == 0

        await eventually(settled, timeout=30, what="demo jobs processed")
        await eventually(lambda: _exporting(app), timeout=30, what="export running")
        async with serving(create_app(app)) as url, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1360, "height": 980}, device_scale_factor=1)
            await page.goto(url + "/")
            await page.wait_for_selector("svg rect.ok")
            await page.screenshot(path=str(out_dir / "dashboard.png"), full_page=True)
            await page.goto(f"{url}/jobs/{failed[-1].id}")
            await page.wait_for_selector("#job-traceback")
            await page.screenshot(path=str(out_dir / "dashboard-job.png"), full_page=True)
            await browser.close()
        await app.job(await _export_id(app)).cancel()
    print(f"wrote {out_dir / 'dashboard.png'} and {out_dir / 'dashboard-job.png'}")


async def _exporting(app: Engine) -> bool:
    info = await app.job(await _export_id(app)).info()
    return info is not None and (info.progress or 0) > 0.03


async def _export_id(app: Engine) -> str:
    from engine.inspector import queue_jobs

    jobs, _ = await queue_jobs(app, "exports", "active", limit=1)
    return jobs[0].id if jobs else "-"


def main() -> int:
    configure_logging("critical")  # the demo jobs fail on purpose: keep quiet
    out_dir = Path(__file__).resolve().parent
    with EmbeddedRedis() as server:
        anyio.run(shoot, server.url, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
