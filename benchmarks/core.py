"""First throughput figures: enqueue one at a time, enqueue in bulk, drain with one worker.

    python -m benchmarks.core [--jobs 20000] [--concurrency 100]

Starts its own embedded Valkey unless ENGINE_BENCH_REDIS_URL is set. The worker is a real
``python -m engine.worker`` process; the drain is timed from the moment it joins its
consumer group to the moment the last outcome is recorded (read from the queue's counters,
so the benchmark adds no per-job round trip of its own).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import anyio

from benchmarks.support import wait_until
from engine import Engine
from engine.embedded import EmbeddedPostgres, EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


async def _start_worker(
    url: str, namespace: str, concurrency: int, database_url: str | None = None, **env: str
) -> anyio.abc.Process:
    """A ``python -m engine.worker`` process for benchmarks.apps, with the job log on only
    when ``database_url`` is given (never through an inherited ENGINE_DATABASE_URL)."""
    environ = {**os.environ, "ENGINE_REDIS_URL": url, "ENGINE_NAMESPACE": namespace, "PYTHONPATH": str(ROOT)}
    environ.pop("ENGINE_DATABASE_URL", None)
    if database_url:
        environ["ENGINE_DATABASE_URL"] = database_url
    environ.update(env)
    argv = [sys.executable, "-m", "engine.worker", "benchmarks.apps:app"]
    argv += ["--concurrency", str(concurrency), "--log-level", "warning"]
    return await anyio.open_process(argv, cwd=ROOT, env=environ, stdout=None, stderr=None)


async def run(url: str, jobs: int, concurrency: int) -> dict[str, float]:
    from benchmarks import apps

    results: dict[str, float] = {}
    namespace = f"bench{int(time.time() * 1000)}"
    app = Engine(url, namespace=namespace)
    apps.app.namespace = namespace
    task = apps.noop
    spec = task.spec
    async with app:
        gateway = app.gateway
        # one at a time, each awaited (the latency-bound producer)
        single = min(jobs, 5000)
        t0 = time.perf_counter()
        for i in range(single):
            await app._enqueue(spec, [((i,), {})], _options())
        results["enqueue_single_per_s"] = single / (time.perf_counter() - t0)
        # 100 in flight
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            limiter = anyio.Semaphore(100)

            async def one(i: int) -> None:
                async with limiter:
                    await app._enqueue(spec, [((i,), {})], _options())

            for i in range(single):
                tg.start_soon(one, i)
        results["enqueue_100_in_flight_per_s"] = single / (time.perf_counter() - t0)
        await gateway.redis.delete(gateway.keys.queue("default").stream)
        # bulk
        t0 = time.perf_counter()
        await app._enqueue(spec, [((i,), {}) for i in range(jobs)], _options())
        results["enqueue_bulk_per_s"] = jobs / (time.perf_counter() - t0)

        proc = await _start_worker(url, namespace, concurrency)
        try:

            async def started() -> bool:
                return bool(await gateway.redis.hexists(gateway.keys.tasks, "noop"))

            async def drained() -> bool:
                return (await app.stats())["default"]["completed"] >= jobs

            await wait_until(started, 30, 0.005)
            t0 = time.perf_counter()
            await wait_until(drained, 600, 0.01)
            results["drain_per_s"] = jobs / (time.perf_counter() - t0)
        finally:
            proc.terminate()
            await proc.wait()
    return results


async def drain_once(url: str, jobs: int, concurrency: int, database_url: str | None) -> tuple[float, float]:
    """One drain of ``jobs`` no-op jobs by one worker process: (jobs/s, seconds until the
    PostgreSQL history held every job, 0 without a job log)."""
    from benchmarks import apps

    namespace = f"drain{int(time.time() * 1000)}"
    app = Engine(url, namespace=namespace, database_url=database_url)
    async with app:
        gateway = app.gateway
        await app._enqueue(apps.noop.spec, [((i,), {}) for i in range(jobs)], _options())
        proc = await _start_worker(url, namespace, concurrency, database_url)
        try:

            async def started() -> bool:
                return bool(await gateway.redis.hexists(gateway.keys.tasks, "noop"))

            async def drained() -> bool:
                return (await app.stats())["default"]["completed"] >= jobs

            async def shipped() -> bool:
                return await _history_count(app) >= jobs

            await wait_until(started, 30, 0.005)
            t0 = time.perf_counter()
            await wait_until(drained, 600, 0.01)
            rate = jobs / (time.perf_counter() - t0)
            caught_up = 0.0
            if database_url:
                await wait_until(shipped, 600, 0.05)
                caught_up = time.perf_counter() - t0
        finally:
            proc.terminate()
            await proc.wait()
    return rate, caught_up


async def _history_count(app: Engine) -> int:
    import asyncpg

    conn = await asyncpg.connect(app.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed'"))
    finally:
        await conn.close()


async def joblog(
    url: str, database_url: str, jobs: int, concurrency: int, repeats: int = 3
) -> dict[str, float]:
    """Drain throughput with the PostgreSQL job log off and on, interleaved, medians."""
    import asyncpg

    off: list[float] = []
    on: list[float] = []
    lag: list[float] = []
    for _ in range(repeats):
        off.append((await drain_once(url, jobs, concurrency, None))[0])
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DROP TABLE IF EXISTS job_logs, jobs, engine_schema_version")
        finally:
            await conn.close()
        rate, caught_up = await drain_once(url, jobs, concurrency, database_url)
        on.append(rate)
        lag.append(caught_up)
    median = statistics.median
    return {
        "drain_log_off_per_s": median(off),
        "drain_log_on_per_s": median(on),
        "log_on_vs_off_percent": 100 * median(on) / median(off),
        "history_complete_after_s": median(lag),
        "history_rows_per_s": jobs / median(lag),
    }


async def memory(url: str, jobs: int, concurrency: int) -> dict[str, float]:
    """Redis memory per waiting job, and what is left after a full drain."""
    from benchmarks import apps
    from engine.core.model import Payload, json_encoder

    namespace = f"mem{int(time.time() * 1000)}"
    app = Engine(url, namespace=namespace)
    spec = apps.noop.spec
    async with app:
        redis = app.gateway.redis

        async def used() -> int:
            return int((await redis.info("memory"))["used_memory"])

        async def settled() -> int:
            """used_memory once Redis has finished shrinking its tables (stable for 2 s)."""
            last, stable_since = await used(), time.monotonic()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and time.monotonic() - stable_since < 2:
                await anyio.sleep(0.25)
                now = await used()
                if abs(now - last) > 1024:
                    last, stable_since = now, time.monotonic()
            return last

        async def drain(total: int) -> None:
            proc = await _start_worker(url, namespace, concurrency, BENCH_RESULT_TTL="1")
            try:

                async def drained() -> bool:
                    return (await app.stats())["default"]["completed"] >= total

                await wait_until(drained, 600, 0.05)
            finally:
                proc.terminate()
                await proc.wait()

            async def expired() -> bool:
                # Per-minute throughput counters (a few, kept two hours) are not per job.
                keys = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=5000)]
                return len([k for k in keys if ":tput:" not in k]) <= 4

            await wait_until(expired, 120, 0.2)

        await app._enqueue(spec, [((i,), {}) for i in range(1000)], _options())
        await drain(1000)  # warm-up: scripts compiled, tables sized
        baseline = await settled()
        await app._enqueue(spec, [((i,), {}) for i in range(jobs)], _options())
        loaded = await used()
        payload = len(json_encoder.encode(Payload(args=[jobs // 2], kwargs={})))
        await drain(1000 + jobs)
        after = await settled()
    return {
        "bytes_per_waiting_job": (loaded - baseline) / jobs,
        "payload_bytes_per_job": payload,
        "bytes_left_after_drain": after - baseline,
    }


def _options():  # type: ignore[no-untyped-def]
    from engine.producer import Options

    return Options()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--memory-jobs", type=int, default=0, help="also measure memory with this many jobs")
    parser.add_argument(
        "--joblog", action="store_true", help="also drain with the PostgreSQL job log on vs off"
    )
    args = parser.parse_args()
    url = os.environ.get("ENGINE_BENCH_REDIS_URL")
    server = None
    pg: EmbeddedPostgres | None = None
    if not url:
        server = EmbeddedRedis()
        server.start()
        url = server.url
    try:
        results = anyio.run(run, url, args.jobs, args.concurrency)
        if args.memory_jobs:
            mem = anyio.run(memory, url, args.memory_jobs, args.concurrency)
        if args.joblog:
            pg_url = os.environ.get("ENGINE_BENCH_DATABASE_URL")
            if not pg_url:
                pg = EmbeddedPostgres(fast=True)
                pg.start()
                pg_url = pg.url
            log_results = anyio.run(joblog, url, pg_url, args.jobs, args.concurrency)
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()
    print(f"jobs={args.jobs} concurrency={args.concurrency} (one worker process, no-op jobs)")
    for name, value in results.items():
        print(f"  {name:28} {value:>12,.0f} jobs/s")
    if args.joblog:
        print(f"job log on vs off ({args.jobs:,} jobs, medians of 3, interleaved):")
        for name, value in log_results.items():
            print(f"  {name:28} {value:>12,.1f}")
    if args.memory_jobs:
        print(f"memory with {args.memory_jobs:,} waiting jobs:")
        for name, value in mem.items():
            print(f"  {name:28} {value:>12,.0f}")


if __name__ == "__main__":
    main()
