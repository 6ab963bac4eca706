"""Where a job's cost goes: Valkey CPU per job for each step of its life measured alone, the
bare stream commands as the floor, a real worker process's drain, and Redis memory per
waiting job with what holds it.

    python -m benchmarks.cost [--jobs 20000] [--reps 3]

Each repetition uses a fresh namespace. The steps alone (enqueue in calls of 1,000 jobs;
start: start.lua reading 100 entries at a time, as a saturated worker does; finish:
finish.lua recording 100 completions at a time) are driven from this process through the
engine's gateway, so Valkey's CPU for a step is nothing but that step's. The drain is
``python -m engine.worker`` (concurrency 100) taking every waiting job, its CPU and Valkey's
read from /proc over the drain. Figures are medians over the repetitions. Starts its own
embedded Valkey unless ENGINE_BENCH_REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio

from benchmarks.core import _options, _start_worker
from benchmarks.support import CLOCK_TICKS, cpu_seconds, wait_until
from engine import Engine
from engine.core.transitions import Outcome, Retention
from engine.embedded import EmbeddedPostgres, EmbeddedRedis

CHUNK = 1000
BATCH = 100


async def _valkey_pid(app: Engine) -> int:
    return int((await app.gateway.redis.info("server"))["process_id"])


async def steps(
    url: str, jobs: int, meter: Callable[[int], float] = cpu_seconds, scale: float = 1e6
) -> dict[str, float]:
    """Valkey CPU µs per job of enqueue, start and finish, each alone, and of the bare
    XREADGROUP + XACK + XDEL a stream consumer cannot do without. ``meter``: what is
    counted, from Valkey's pid (CPU seconds; benchmarks.instructions counts instructions),
    times ``scale`` per job."""
    from benchmarks import apps

    app = Engine(url, namespace=f"cost{uuid.uuid4().hex[:8]}")
    out: dict[str, float] = {}
    async with app:
        gateway, pid = app.gateway, await _valkey_pid(app)
        qk = gateway.keys.queue("default")
        await gateway.ensure_group("default")
        worker = "cost-worker"

        cpu = meter(pid)
        for first in range(0, jobs, CHUNK):
            await app._enqueue(apps.noop.spec, [((i,), {}) for i in range(first, first + CHUNK)], _options())
        out["enqueue"] = (meter(pid) - cpu) / jobs * scale

        cpu = meter(pid)
        started = []
        while True:
            batch = await gateway.fetch(["default"], worker, BATCH)
            if not batch:
                break
            started.extend(batch)
        out["start"] = (meter(pid) - cpu) / jobs * scale
        assert len(started) == jobs, f"started {len(started)} of {jobs}"

        outcomes = [Outcome(j.queue, j.entry_id, j.job_id, "completed", "null", task=j.task) for j in started]
        cpu = meter(pid)
        for first in range(0, jobs, BATCH):
            await gateway.finish(outcomes[first : first + BATCH], Retention())
        out["finish"] = (meter(pid) - cpu) / jobs * scale
        out["enqueue + start + finish"] = out["enqueue"] + out["start"] + out["finish"]

        # The floor: what Valkey spends per job on the stream alone.
        redis, stream, group = gateway.redis, f"{qk.stream}:bare", "bare"
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
        for first in range(0, jobs, CHUNK):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(first, first + CHUNK):
                    pipe.xadd(stream, {"j": uuid.uuid4().hex, "t": "noop", "p": f'{{"args":[{i}]}}'})
                await pipe.execute()
        cpu = meter(pid)
        while True:
            reply = await redis.xreadgroup(group, "c", {stream: ">"}, count=BATCH)
            if not reply or not reply[0][1]:
                break
            ids = [entry_id for entry_id, _ in reply[0][1]]
            async with redis.pipeline(transaction=False) as pipe:
                pipe.xack(stream, group, *ids)
                pipe.xdel(stream, *ids)
                await pipe.execute()
        out["bare XREADGROUP + XACK + XDEL"] = (meter(pid) - cpu) / jobs * scale
        await redis.delete(stream)
    return out


async def drain(url: str, jobs: int, concurrency: int = 100) -> dict[str, float]:
    """One worker process drains ``jobs`` waiting no-op jobs: CPU µs per job of the worker and
    of Valkey, and jobs/s."""
    from benchmarks import apps

    namespace = f"costd{uuid.uuid4().hex[:8]}"
    app = Engine(url, namespace=namespace)
    async with app:
        gateway, pid = app.gateway, await _valkey_pid(app)
        for first in range(0, jobs, CHUNK):
            await app._enqueue(apps.noop.spec, [((i,), {}) for i in range(first, first + CHUNK)], _options())
        proc = await _start_worker(url, namespace, concurrency)
        try:

            async def started() -> bool:
                return bool(await gateway.redis.hexists(gateway.keys.tasks, "noop"))

            async def drained() -> bool:
                return (await app.stats())["default"]["completed"] >= jobs

            await wait_until(started, 30, 0.005)
            valkey, worker, t0 = cpu_seconds(pid), cpu_seconds(proc.pid), time.perf_counter()
            await wait_until(drained, 600, 0.005)
            elapsed = time.perf_counter() - t0
            valkey, worker = cpu_seconds(pid) - valkey, cpu_seconds(proc.pid) - worker
        finally:
            proc.terminate()
            await proc.wait()
    return {
        "drain jobs/s": jobs / elapsed,
        "drain: Valkey": valkey / jobs * 1e6,
        "drain: worker": worker / jobs * 1e6,
    }


def _tree_cpu(root: int) -> float:
    """CPU seconds of a server and its children (PostgreSQL's backends): the live ones from
    /proc, those that ended from the parent's count of the children it waited for."""
    stat = Path(f"/proc/{root}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    total = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


async def joblog(url: str, database_url: str, postmaster: int, jobs: int, on: bool) -> dict[str, float]:
    """A drain as :func:`drain` with the job log on or off: CPU µs per job of Valkey, the
    worker (which ships) and PostgreSQL, from the worker's start until PostgreSQL holds every
    job's finished row (on) or the drain's end (off). The count of finished rows is polled on
    one connection, every 0.2 s, so that polling costs PostgreSQL little."""
    import asyncpg

    from benchmarks import apps

    namespace = f"costj{uuid.uuid4().hex[:8]}"
    app = Engine(url, namespace=namespace, database_url=database_url if on else None)
    async with app:
        pid = await _valkey_pid(app)
        for first in range(0, jobs, CHUNK):
            await app._enqueue(apps.noop.spec, [((i,), {}) for i in range(first, first + CHUNK)], _options())
        valkey, pg = cpu_seconds(pid), _tree_cpu(postmaster)
        proc = await _start_worker(url, namespace, 100, database_url if on else None)
        try:

            async def drained() -> bool:
                return (await app.stats())["default"]["completed"] >= jobs

            await wait_until(drained, 600, 0.01)
            if on:
                conn = await asyncpg.connect(database_url)
                try:

                    async def shipped() -> bool:
                        query = "SELECT count(*) FROM jobs WHERE status = 'completed'"
                        return int(await conn.fetchval(query)) >= jobs

                    await wait_until(shipped, 600, 0.2)
                finally:
                    await conn.close()
            worker = cpu_seconds(proc.pid)
            valkey, pg = cpu_seconds(pid) - valkey, _tree_cpu(postmaster) - pg
        finally:
            proc.terminate()
            await proc.wait()
    side = "on" if on else "off"
    return {
        f"log {side}: Valkey": valkey / jobs * 1e6,
        f"log {side}: worker": worker / jobs * 1e6,
        f"log {side}: PostgreSQL": pg / jobs * 1e6,
    }


async def memory(url: str, jobs: int) -> dict[str, float]:
    """Bytes of Redis memory per waiting job beyond its payload, and what holds them: the
    job's hash (MEMORY USAGE, key included) and its stream entry (the rest)."""
    from benchmarks import apps
    from engine.core.model import Payload, json_encoder

    app = Engine(url, namespace=f"costm{uuid.uuid4().hex[:8]}")
    async with app:
        redis = app.gateway.redis
        await app._enqueue(apps.noop.spec, [((0,), {})], _options())  # scripts loaded, keys made
        before = int((await redis.info("memory"))["used_memory"])
        ids = []
        for first in range(0, jobs, CHUNK):
            handles = await app._enqueue(
                apps.noop.spec, [((i,), {}) for i in range(first, first + CHUNK)], _options()
            )
            ids += [h.id for h in handles]
        per_job = (int((await redis.info("memory"))["used_memory"]) - before) / jobs
        prefix = app.gateway.keys.queue("default").job_prefix
        sample = ids[:: max(1, jobs // 200)]
        hashes = [int(await redis.memory_usage(prefix + job_id, samples=0) or 0) for job_id in sample]
        payload = len(json_encoder.encode(Payload(args=[jobs // 2], kwargs={})))
    hash_bytes = statistics.mean(hashes)
    return {
        "per waiting job, beyond the payload": per_job - payload,
        "  its hash (key included)": hash_bytes,
        "  its stream entry and the rest": per_job - payload - hash_bytes,
        "payload": payload,
    }


async def _reset_history(database_url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE IF EXISTS job_logs, jobs, engine_schema_version")
    finally:
        await conn.close()


async def measure(
    url: str, jobs: int, reps: int, database_url: str | None = None, postmaster: int = 0
) -> dict[str, float]:
    runs: list[dict[str, float]] = []
    for _ in range(reps):
        run = await steps(url, jobs)
        run.update(await drain(url, jobs))
        if database_url:
            await _reset_history(database_url)
            run.update(await joblog(url, database_url, postmaster, jobs, on=True))
            run.update(await joblog(url, database_url, postmaster, jobs, on=False))
        runs.append(run)
    out = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    if database_url:
        for part in ("Valkey", "worker", "PostgreSQL"):
            out[f"job log cost: {part}"] = out[f"log on: {part}"] - out[f"log off: {part}"]
        out["job log cost, whole"] = sum(
            out[f"job log cost: {part}"] for part in ("Valkey", "worker", "PostgreSQL")
        )
    out.update(await memory(url, jobs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--joblog", action="store_true", help="also the job log's cost (embedded PostgreSQL)")
    args = parser.parse_args()
    url = os.environ.get("ENGINE_BENCH_REDIS_URL")
    server = None
    pg: EmbeddedPostgres | None = None
    if not url:
        server = EmbeddedRedis()
        server.start()
        url = server.url
    try:
        database_url, postmaster = None, 0
        if args.joblog:
            pg = EmbeddedPostgres(fast=True)
            pg.start()
            database_url = pg.url
            postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        results = anyio.run(measure, url, args.jobs, args.reps, database_url, postmaster)
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()
    print(f"{args.jobs:,} no-op jobs, medians of {args.reps} (CPU from /proc, µs per job; memory in bytes)")
    for name, value in results.items():
        if name == "drain jobs/s":
            print(f"  {name:40} {value:>10,.0f}")
        else:
            print(f"  {name:40} {value:>10,.1f}")


if __name__ == "__main__":
    main()
