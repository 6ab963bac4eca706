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
import sys
import time
from pathlib import Path

import anyio

from engine import Engine
from engine.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


async def _wait(predicate, timeout: float, interval: float = 0.005):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await anyio.sleep(interval)
    raise TimeoutError("benchmark condition not met in time")


async def run(url: str, jobs: int, concurrency: int) -> dict[str, float]:
    from benchmarks import apps

    results: dict[str, float] = {}
    namespace = f"bench{int(time.time() * 1000)}"
    app = Engine(url, namespace=namespace)
    apps.app.namespace = namespace
    task = apps.noop
    spec = task.spec
    async with app:
        gateway = app._gateway_or_connect()
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

        env = {**os.environ, "ENGINE_REDIS_URL": url, "ENGINE_NAMESPACE": namespace, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "engine.worker", "benchmarks.apps:app"]
        argv += ["--concurrency", str(concurrency), "--log-level", "warning"]
        proc = await anyio.open_process(argv, cwd=ROOT, env=env, stdout=None, stderr=None)
        try:

            async def started() -> bool:
                return bool(await gateway.redis.hexists(gateway.keys.tasks, "noop"))

            async def drained() -> bool:
                return (await app.stats())["default"]["completed"] >= jobs

            await _wait(started, 30)
            t0 = time.perf_counter()
            await _wait(drained, 600, 0.01)
            results["drain_per_s"] = jobs / (time.perf_counter() - t0)
        finally:
            proc.terminate()
            await proc.wait()
    return results


def _options():  # type: ignore[no-untyped-def]
    from engine.producer import Options

    return Options()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    url = os.environ.get("ENGINE_BENCH_REDIS_URL")
    server = None
    if not url:
        server = EmbeddedRedis()
        server.start()
        url = server.url
    try:
        results = anyio.run(run, url, args.jobs, args.concurrency)
    finally:
        if server is not None:
            server.stop()
    print(f"jobs={args.jobs} concurrency={args.concurrency} (one worker process, no-op jobs)")
    for name, value in results.items():
        print(f"  {name:28} {value:>12,.0f} jobs/s")


if __name__ == "__main__":
    main()
