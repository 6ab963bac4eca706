"""CPU-bound drain rate with one worker process and with a pool (``--processes``).

    python -m benchmarks.pool [--jobs 5000] [--work-ms 1.0] [--reps 3] [--processes 1,2]

Each job burns about ``--work-ms`` of pure Python (calibrated once, here, so every run does
the same work). Per repetition and setting: a fresh namespace, the worker command started
and every worker process heartbeating, then all jobs enqueued in one call; the drain is
timed from just before that call to the moment the queue's counters show every job
completed. ``plain`` is ``python -m engine.worker`` without ``--processes`` (no supervisor).
Starts its own embedded Valkey unless ENGINE_BENCH_REDIS_URL is set.

This module is also the workers' app (``benchmarks.pool:app``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import anyio
import anyio.abc

from benchmarks.support import wait_until
from engine import Engine, JobContext

ROOT = Path(__file__).resolve().parent.parent

app = Engine()  # ENGINE_REDIS_URL and ENGINE_NAMESPACE, set by the driver


@app.task(timeout=60)
async def burn(ctx: JobContext, rounds: int) -> int:
    # Async on purpose: pure Python in the event loop, one job at a time per process, so
    # only more processes (not more concurrency) can make it faster.
    return _spin(rounds)


def _spin(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


def calibrate(work_ms: float) -> int:
    """The rounds of ``_spin`` that take ``work_ms`` on this machine (best of a few)."""
    rounds = 10_000
    best = min(_timed(rounds) for _ in range(5))
    return max(1, int(rounds * work_ms / 1000 / best))


def _timed(rounds: int) -> float:
    began = time.perf_counter()
    _spin(rounds)
    return time.perf_counter() - began


async def drain(url: str, processes: int | None, jobs: int, rounds: int) -> float:
    """One drain of ``jobs`` jobs; returns jobs per second."""
    namespace = f"pool{time.time_ns()}"
    env = {**os.environ, "ENGINE_REDIS_URL": url, "ENGINE_NAMESPACE": namespace, "PYTHONPATH": str(ROOT)}
    env.pop("ENGINE_DATABASE_URL", None)
    argv = [sys.executable, "-m", "engine.worker", "benchmarks.pool:app", "--log-level", "warning"]
    if processes is not None:
        argv += ["--processes", str(processes)]
    client = Engine(url, namespace=namespace)
    proc = await anyio.open_process(argv, cwd=ROOT, env=env, stdin=None, stdout=None, stderr=None)
    try:
        async with client:
            gateway = client.gateway
            await wait_until(lambda: _beats_at_least(client, processes or 1), 60)
            from engine.producer import Options

            began = time.perf_counter()
            await client._enqueue(burn.spec, [((rounds,), {}) for _ in range(jobs)], Options())
            await wait_until(lambda: _completed(client, jobs), 600, 0.02)
            elapsed = time.perf_counter() - began
            await _stop(proc)
            await gateway.redis.delete(*[k async for k in gateway.redis.scan_iter(match=f"{namespace}:*")])
    finally:
        await _stop(proc)
    return jobs / elapsed


async def _stop(proc: anyio.abc.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    with anyio.move_on_after(60):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def _beats_at_least(client: Engine, n: int) -> bool:
    return len(await client.gateway.beats()) >= n


async def _completed(client: Engine, n: int) -> bool:
    return int((await client.stats())["default"]["completed"]) >= n


async def run(url: str, settings: list[int | None], jobs: int, rounds: int, reps: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {_label(s): [] for s in settings}
    for rep in range(reps):
        for setting in settings:  # interleaved, so a slow spell of the machine hits all alike
            rate = await drain(url, setting, jobs, rounds)
            rates[_label(setting)].append(rate)
            print(f"  rep {rep + 1}: {_label(setting):>14}: {rate:8.0f} jobs/s", flush=True)
    return {label: statistics.median(values) for label, values in rates.items()}


def _label(setting: int | None) -> str:
    return "plain" if setting is None else f"--processes {setting}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pool", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--work-ms", type=float, default=1.0, help="pure-Python work per job (ms)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--processes", default="1,2", help="comma-separated pool sizes to compare")
    parser.add_argument("--plain", action="store_true", help="also measure without --processes")
    args = parser.parse_args(argv)
    settings: list[int | None] = [None] if args.plain else []
    settings += [int(p) for p in args.processes.split(",") if p.strip()]
    rounds = calibrate(args.work_ms)
    print(
        f"{args.jobs} jobs of {args.work_ms} ms of pure Python ({rounds} rounds), {args.reps} reps, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    def measure(url: str) -> dict[str, float]:
        return anyio.run(run, url, settings, args.jobs, rounds, args.reps)

    url = os.environ.get("ENGINE_BENCH_REDIS_URL")
    if url:
        medians = measure(url)
    else:
        from engine.embedded import EmbeddedRedis

        with EmbeddedRedis() as server:
            medians = measure(server.url)
    print("median jobs/s:")
    for label, rate in medians.items():
        print(f"  {label:>14}: {rate:8.0f}")
    base = medians.get("--processes 1")
    if base:
        for label, rate in medians.items():
            if label not in ("--processes 1", "plain"):
                print(f"  {label} vs --processes 1: {rate / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
