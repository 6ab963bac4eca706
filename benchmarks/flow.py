"""What flow control costs: one worker process draining no-op jobs from a plain queue, and
from the same queue with limits configured (far above what it runs: they never bind), with
priorities, concurrency keys and expiry in use, and with limits that bind.

    python -m benchmarks.flow [--jobs 20000] [--reps 3] [--concurrency 100]

Per repetition and scenario (interleaved, so a slow spell of the machine hits all alike):
a fresh namespace, all jobs enqueued, then the worker started; the drain is timed from the
moment it announces its tasks to the moment the queue's counters show every job completed.
Valkey's and the worker's CPU per job come from /proc. Starts its own embedded Valkey
unless ENGINE_BENCH_REDIS_URL is set.

This module is also the worker's app (``benchmarks.flow:app``, limits from BENCH_LIMITS).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc

from benchmarks.support import cpu_seconds, wait_until
from engine import Engine, JobContext
from engine.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent

app = Engine()  # ENGINE_REDIS_URL and ENGINE_NAMESPACE, set by the driver
app.queue("default", **json.loads(os.environ.get("BENCH_LIMITS", "{}")))


@app.task(timeout=30)
async def noop(ctx: JobContext, n: int) -> None:
    return None


CHUNK = 1000


def _plain(chunk: int) -> dict[str, object]:
    return {}


def _two_priorities(chunk: int) -> dict[str, object]:
    return {"priority": 0 if chunk % 2 else 9}


def _keys(chunk: int) -> dict[str, object]:
    return {"concurrency_key": f"customer-{chunk}"}


def _expiring(chunk: int) -> dict[str, object]:
    return {"expires": 3600}


# name -> (the queue's limits, the enqueue options of each chunk of CHUNK jobs)
SCENARIOS: dict[str, tuple[dict[str, object], Callable[[int], dict[str, object]]]] = {
    "plain": ({}, _plain),
    "concurrency (not binding)": ({"concurrency": 100_000}, _plain),
    "rate (not binding)": ({"rate_limit": "1000000/s"}, _plain),
    "both (not binding)": ({"concurrency": 100_000, "rate_limit": "1000000/s"}, _plain),
    "priorities 0 and 9": ({}, _two_priorities),
    "key concurrency (not binding)": ({"key_concurrency": 100_000}, _keys),
    "expires set": ({}, _expiring),
    "concurrency=20 (binding)": ({"concurrency": 20}, _plain),
    "rate=5000/s (binding)": ({"rate_limit": "5000/s"}, _plain),
}


async def drain(
    url: str,
    server_pid: int | None,
    limits: dict[str, object],
    options: Callable[[int], dict[str, object]],
    jobs: int,
    concurrency: int,
) -> dict[str, float]:
    namespace = f"flow{time.time_ns()}"
    env = {**os.environ, "ENGINE_REDIS_URL": url, "ENGINE_NAMESPACE": namespace, "PYTHONPATH": str(ROOT)}
    env["BENCH_LIMITS"] = json.dumps(limits)
    env.pop("ENGINE_DATABASE_URL", None)
    argv = [sys.executable, "-m", "engine.worker", "benchmarks.flow:app", "--log-level", "warning"]
    argv += ["--concurrency", str(concurrency)]
    client = Engine(url, namespace=namespace)
    async with client:
        from engine.producer import Options

        for chunk, start in enumerate(range(0, jobs, CHUNK)):
            calls = [((i,), {}) for i in range(start, min(jobs, start + CHUNK))]
            await client._enqueue(noop.spec, calls, Options(**options(chunk)))  # type: ignore[arg-type]
        gateway = client.gateway
        proc = await anyio.open_process(argv, cwd=ROOT, env=env, stdin=None, stdout=None, stderr=None)
        try:

            async def started() -> bool:
                return bool(await gateway.redis.hexists(gateway.keys.tasks, "noop"))

            async def drained() -> bool:
                return int((await client.stats())["default"]["completed"]) >= jobs

            await wait_until(started, 60, 0.005)
            server0 = cpu_seconds(server_pid) if server_pid else 0.0
            worker0 = cpu_seconds(proc.pid)
            began = time.perf_counter()
            await wait_until(drained, 600, 0.01)
            elapsed = time.perf_counter() - began
            server_cpu = (cpu_seconds(server_pid) - server0) if server_pid else 0.0
            worker_cpu = cpu_seconds(proc.pid) - worker0
        finally:
            proc.terminate()
            await proc.wait()
        await gateway.redis.delete(*[k async for k in gateway.redis.scan_iter(match=f"{namespace}:*")])
    return {
        "jobs_per_s": jobs / elapsed,
        "valkey_us_per_job": server_cpu / jobs * 1e6,
        "worker_us_per_job": worker_cpu / jobs * 1e6,
    }


async def run(
    url: str, server_pid: int | None, jobs: int, reps: int, concurrency: int
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in SCENARIOS}
    for rep in range(reps):
        for name, (limits, options) in SCENARIOS.items():
            result = await drain(url, server_pid, limits, options, jobs, concurrency)
            samples[name].append(result)
            print(
                f"  rep {rep + 1}: {name:28} {result['jobs_per_s']:8.0f} jobs/s  "
                f"valkey {result['valkey_us_per_job']:5.1f} us/job  "
                f"worker {result['worker_us_per_job']:5.1f} us/job",
                flush=True,
            )
    return {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    url = os.environ.get("ENGINE_BENCH_REDIS_URL")
    server = None
    if not url:
        server = EmbeddedRedis()
        server.start()
        url = server.url
    try:
        pid = server.pid if server is not None else None
        medians = anyio.run(run, url, pid, args.jobs, args.reps, args.concurrency)
    finally:
        if server is not None:
            server.stop()
    plain = medians["plain"]["jobs_per_s"]
    print(f"\njobs={args.jobs} concurrency={args.concurrency}, medians of {args.reps} (one worker process):")
    for name, m in medians.items():
        print(
            f"  {name:28} {m['jobs_per_s']:8.0f} jobs/s ({m['jobs_per_s'] / plain:5.2f}x plain)  "
            f"valkey {m['valkey_us_per_job']:5.1f} us/job  worker {m['worker_us_per_job']:5.1f} us/job"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
