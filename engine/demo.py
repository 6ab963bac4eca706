"""``python -m engine demo``: the whole engine on one machine with nothing installed.

Starts an embedded Valkey and an embedded PostgreSQL (data under ``--data-dir``), a worker
process running ``examples/demo_app.py`` (jobs, a cron schedule, the job-log shipper),
enqueues a mix of jobs, shows live progress, prints a summary from Redis and from the
PostgreSQL history, and stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from engine.app import Engine
from engine.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError

REPO_ROOT = Path(__file__).resolve().parent.parent
BAR_WIDTH = 30


def _examples_root() -> Path:
    if not (REPO_ROOT / "examples" / "demo_app.py").exists():
        raise FileNotFoundError(
            f"the demo needs examples/demo_app.py from the source tree (looked in {REPO_ROOT}); "
            "run it from a checkout installed with pip install -e ."
        )
    return REPO_ROOT


def run_demo(jobs: int, data_dir: str, port: int = 0, keep: bool = False) -> int:
    try:
        root = _examples_root()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = Path(data_dir).resolve()
    with contextlib.ExitStack() as stack:
        try:
            print(f"starting an embedded Valkey and PostgreSQL (data in {base}) ...")
            redis = EmbeddedRedis(base / "valkey", appendonly=True)
            redis.start()
            stack.callback(redis.stop)
            postgres = EmbeddedPostgres(base / "postgres", fast=True)
            postgres.start()
            stack.callback(postgres.stop)
        except EmbeddedServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        namespace = f"demo{int(time.time())}"
        env = {
            **os.environ,
            "ENGINE_REDIS_URL": redis.url,
            "ENGINE_DATABASE_URL": postgres.url,
            "ENGINE_NAMESPACE": namespace,
            "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p),
        }
        os.environ.update(
            {k: env[k] for k in ("ENGINE_REDIS_URL", "ENGINE_DATABASE_URL", "ENGINE_NAMESPACE")}
        )
        sys.path.insert(0, str(root))
        print(f"valkey at {redis.url}, postgresql at {postgres.url}")
        print("starting a worker: python -m engine.worker examples.demo_app:app --concurrency 50")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.worker",
                "examples.demo_app:app",
                "--concurrency",
                "50",
                "--log-level",
                "warning",
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        stack.callback(_stop, worker)
        code: int = anyio.run(_produce_and_watch, jobs, worker, postgres.url, port, keep)
    return code


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        worker.wait(30)
    print("stopped the worker, the embedded Valkey and PostgreSQL.")


async def _produce_and_watch(
    total: int, worker: subprocess.Popen[bytes], database_url: str, port: int, keep: bool
) -> int:
    from engine.dashboard.server import serving
    from examples import demo_app, monthly_report

    app: Engine = demo_app.app
    await _reset_sample_orders(database_url)
    await monthly_report.seed(database_url, datetime.now(UTC).date().replace(day=1), orders=2000)
    async with app, serving(app.dashboard(), port=port) as url:
        print(f"dashboard: {url}/  (the JSON API is under {url}/api, metrics at {url}/metrics)")
        code = await _run(app, total, worker)
        if code == 0 and keep:
            print(f"the demo keeps running: browse {url}/ ; press Ctrl-C to stop everything")
            await anyio.sleep_forever()
        return code


async def _run(app: Engine, total: int, worker: subprocess.Popen[bytes]) -> int:
    from examples import demo_app

    started = time.monotonic()
    since = datetime.now(UTC)
    share = max(1, total // 4)
    await demo_app.make_thumbnail.enqueue_many([(i,) for i in range(share)])
    await demo_app.checksum.enqueue_many([(f"document {i}",) for i in range(share)])
    await demo_app.send_email.enqueue_many([(f"user{i}@example.com",) for i in range(share)])
    rest = total - 3 * share
    bad_orders = max(1, rest // 50)
    await demo_app.charge_card.enqueue_many([(i, -100 if i < bad_orders else 1999) for i in range(rest)])
    print(f"enqueued {total} jobs in {(time.monotonic() - started) * 1000:.0f} ms; processing ...")
    while True:
        stats = await app.stats()
        done = sum(s["completed"] + s["failed"] for q, s in stats.items() if q != "reports")
        ticks = stats.get("reports", {}).get("completed", 0)
        _draw(done, total, stats)
        if done >= total and ticks >= 1:
            break
        if worker.poll() is not None:
            err = worker.stderr.read().decode() if worker.stderr else ""
            print(f"\nerror: the worker exited early (code {worker.returncode})\n{err}", file=sys.stderr)
            return 1
        await anyio.sleep(0.2)
    elapsed = time.monotonic() - started
    print()
    _summary(stats, total, elapsed)
    await _history_summary(app, total, since)
    return 0


async def _reset_sample_orders(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE IF EXISTS sample_orders")
    finally:
        await conn.close()


def _draw(done: int, total: int, stats: dict[str, dict[str, int]]) -> None:
    filled = int(BAR_WIDTH * min(done, total) / total)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    active = sum(s["active"] for s in stats.values())
    delayed = sum(s["delayed"] for s in stats.values())
    failed = sum(s["failed"] for s in stats.values())
    line = f"\r[{bar}] {done}/{total}  active {active:3d}  retrying {delayed:3d}  failed {failed:3d}"
    print(line, end="", flush=True)


def _summary(stats: dict[str, dict[str, int]], total: int, elapsed: float) -> None:
    print(f"\nsummary: {total} jobs in {elapsed:.2f} s ({total / elapsed:,.0f} jobs/s end to end)")
    print(f"  {'queue':10} {'completed':>10} {'failed':>8} {'retries':>8} {'dead-letter':>12}")
    for queue, s in stats.items():
        print(f"  {queue:10} {s['completed']:>10} {s['failed']:>8} {s['retried']:>8} {s['dlq']:>12}")
    print("  (the 'reports' queue holds the monthly report's cron runs, one per tick)")


async def _history_summary(app: Engine, total: int, since: datetime) -> None:
    """Wait (bounded) for the shipper to bring the history up to date, then show it."""
    deadline = time.monotonic() + 20
    shipped: Any = None
    while time.monotonic() < deadline:
        page = await app.history(since=since, limit=1000)
        shipped = [j for j in page.jobs if j.status in ("completed", "failed")]
        if len(shipped) >= total:
            break
        await anyio.sleep(0.3)
    failed = (await app.history(status="failed", since=since, limit=1)).jobs
    print(f"postgresql history: {len(shipped or [])} finished jobs shipped to the jobs table")
    if failed:
        job = failed[0]
        logs = await app.job_logs(job.id)
        print(f"  a failed job: {job.id} {job.task}{tuple(job.args)} -> {job.error}")
        for line in logs[:3]:
            print(f"    [{line.level}] {line.content.splitlines()[0]}")
    conn = await asyncpg.connect(app.database_url)
    try:
        rows = await conn.fetch(
            "SELECT month, region, orders, revenue_cents FROM monthly_reports ORDER BY region"
        )
    finally:
        await conn.close()
    if rows:
        print(f"  monthly report ({rows[0]['month']:%Y-%m}, by the cron job):")
        for row in rows:
            print(f"    {row['region']:10} {row['orders']:>6} orders {row['revenue_cents'] / 100:>14,.2f}")
    print("failed jobs stay in each queue's dead-letter stream for inspection and replay.")
