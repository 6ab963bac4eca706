"""Chaos soak: several worker processes, thousands of jobs, and everything that goes wrong.

    python -m benchmarks.chaos [--jobs 5000] [--workers 3] [--kill-every 2.0]

On its own embedded Valkey (AOF, appendfsync always) and PostgreSQL, while producers enqueue
and workers run the jobs (benchmarks/chaos_app.py), it SIGKILLs a random worker every few
seconds (a supervisor starts a new one), SIGKILLs Valkey once and restarts it, stops
PostgreSQL for 5 s, and writes poison entries of arbitrary bytes into the stream. Then it
waits for every job to finish and reach PostgreSQL, and prints:

- lost: enqueued jobs that never finished;
- mismatched: jobs that finished with a wrong result, or failed;
- duplicated: jobs that ran more than once (at least once allows it; reported, not a failure);
- missing in PostgreSQL: finished jobs without their row;
- unexpected worker deaths: workers that exited without being killed;
- poison not dead-lettered once: injected garbage entries missing from, or repeated in, the DLQ.

Everything but duplicates must be 0: the exit code is 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine import Engine
from engine.core.keys import GROUP
from engine.embedded import EmbeddedPostgres, EmbeddedRedis
from engine.producer import Options

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "chaos"


@dataclass
class Report:
    jobs: int = 0
    lost: int = 0
    mismatched: int = 0
    duplicated: int = 0
    missing_in_postgres: int = 0
    unexpected_deaths: int = 0
    poison_injected: int = 0
    poison_not_buried_once: int = 0
    workers_killed: int = 0
    valkey_kills: int = 0
    postgres_outage_s: float = 0.0
    reclaimed: int = 0
    seconds_to_finish: float = 0.0
    postgres_lag_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.mismatched
            or self.missing_in_postgres
            or self.unexpected_deaths
            or self.poison_not_buried_once
        )

    def table(self) -> str:
        rows = [
            ("jobs enqueued", self.jobs),
            ("lost", self.lost),
            ("mismatched (wrong result or failed)", self.mismatched),
            ("duplicated (ran more than once)", self.duplicated),
            ("missing in PostgreSQL", self.missing_in_postgres),
            ("unexpected worker deaths", self.unexpected_deaths),
            ("poison entries injected", self.poison_injected),
            ("poison not dead-lettered exactly once", self.poison_not_buried_once),
            ("workers SIGKILLed", self.workers_killed),
            ("Valkey SIGKILLs", self.valkey_kills),
            ("PostgreSQL outage (s)", f"{self.postgres_outage_s:.1f}"),
            ("jobs reclaimed", self.reclaimed),
            ("all finished after (s)", f"{self.seconds_to_finish:.1f}"),
            ("PostgreSQL complete after that (s)", f"{self.postgres_lag_s:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"note: {note}" for note in self.notes]
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


class Fleet:
    """Worker processes and a supervisor that replaces each one that exits."""

    def __init__(self, env: dict[str, str], size: int, concurrency: int, logs: Path) -> None:
        self.env = env
        self.size = size
        self.concurrency = concurrency
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self.unexpected: list[str] = []
        self.paused = False  # no restarts while Valkey is down: a worker refuses to start then
        self._started = 0

    def spawn(self) -> None:
        self._started += 1
        log = (self.logs / f"worker-{self._started}.log").open("wb")
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "engine.worker", "benchmarks.chaos_app:app"),
                *("--concurrency", str(self.concurrency), "--grace-period", "5"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)

    def kill_one(self) -> None:
        alive = [p for p in self.procs if p.poll() is None]
        if alive:
            victim = random.choice(alive)
            self.killed.add(victim.pid)
            victim.send_signal(signal.SIGKILL)

    async def supervise(self) -> None:
        while True:
            for proc in list(self.procs):
                if proc.poll() is None:
                    continue
                self.procs.remove(proc)
                if proc.pid not in self.killed:
                    self.unexpected.append(f"worker pid {proc.pid} exited with {proc.returncode}")
            while not self.paused and len(self.procs) < self.size:
                self.spawn()
            await anyio.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode not in (0, -signal.SIGKILL) and proc.pid not in self.killed:
                self.unexpected.append(f"worker pid {proc.pid} stopped with {proc.returncode}")


async def _retrying(what: str, call: Any, deadline_s: float = 60.0) -> Any:
    """Run ``call()`` until it succeeds: Valkey is killed under the producer's feet."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await call()
        except (RedisError, OSError, ConnectionError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: still failing after {deadline_s:.0f}s: {exc}") from exc
            await anyio.sleep(0.2)


async def soak(args: argparse.Namespace) -> Report:
    report = Report(jobs=args.jobs)
    base = Path(tempfile.mkdtemp(prefix="engine-chaos-"))
    valkey = EmbeddedRedis(base / "valkey", appendonly=True)
    postgres = EmbeddedPostgres(base / "postgres")
    valkey.start()
    postgres.start()
    try:
        return await _soak(args, report, base, valkey, postgres)
    finally:
        valkey.stop()
        postgres.stop()
        if not args.keep_logs:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"logs in {base}")


async def _soak(
    args: argparse.Namespace, report: Report, base: Path, valkey: EmbeddedRedis, postgres: EmbeddedPostgres
) -> Report:
    from benchmarks.chaos_app import runs_key, work

    migrator = Engine(valkey.url, database_url=postgres.url, namespace=NAMESPACE)
    await migrator.migrate()
    await migrator.close()  # its pool would only complain through the PostgreSQL outage
    app = Engine(valkey.url, database_url=postgres.url, namespace=NAMESPACE)
    env = {
        **os.environ,
        "ENGINE_REDIS_URL": valkey.url,
        "ENGINE_DATABASE_URL": postgres.url,
        "ENGINE_NAMESPACE": NAMESPACE,
        "CHAOS_VISIBILITY_TIMEOUT": str(args.visibility_timeout),
        "ENGINE_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    logs = base / "logs"
    logs.mkdir()
    fleet = Fleet(env, args.workers, args.concurrency, logs)
    raw = aioredis.Redis.from_url(valkey.url)  # bytes in, bytes out: for the poison
    stream = f"{NAMESPACE}:{{default}}:stream"
    poison_ids: list[str] = []
    produced = anyio.Event()
    started_at = time.monotonic()

    async def produce() -> None:
        limiter = anyio.Semaphore(100)

        async def one(n: int) -> None:
            async with limiter:
                # A fixed job id makes a retried enqueue idempotent: a call that failed
                # with its write done returns the job already there.
                options = Options(job_id=f"job-{n}")
                await _retrying(f"enqueue {n}", lambda: app._enqueue(work.spec, [((n,), {})], options))

        # Paced, so that the chaos happens while jobs flow rather than after a burst.
        async with anyio.create_task_group() as tg:
            for n in range(args.jobs):
                tg.start_soon(one, n)
                if n % 10 == 9:
                    await anyio.sleep(10 / args.rate)
        produced.set()

    async def poison() -> None:
        for _ in range(args.poison):
            fields = {
                random.randbytes(random.randint(1, 4)): random.randbytes(random.randint(0, 30))
                for _ in range(random.randint(1, 5))
            }
            if random.random() < 0.5:  # looks like a job, and is not
                fields[b"j"] = random.randbytes(8)
                fields[b"t"] = random.choice([b"work", random.randbytes(5)])
                fields[b"p"] = random.randbytes(20)
            entry = await _retrying("poison", lambda f=fields: raw.xadd(stream, f))  # type: ignore[misc]
            poison_ids.append(entry.decode())
            await anyio.sleep(random.uniform(0.1, 0.5))

    async def chaos() -> None:
        plan_s = args.jobs / args.rate  # about the production time
        valkey_at, postgres_at = started_at + plan_s * 0.3, started_at + plan_s * 0.6
        valkey_done = postgres_done = False
        while not (produced.is_set() and valkey_done and postgres_done):
            await anyio.sleep(random.uniform(0.5, 1.5) * args.kill_every)
            now = time.monotonic()
            if not valkey_done and now >= valkey_at:
                fleet.paused = True
                valkey.kill()
                report.valkey_kills += 1
                await anyio.sleep(1.0)
                await anyio.to_thread.run_sync(valkey.start)
                fleet.paused = False
                valkey_done = True
            elif not postgres_done and now >= postgres_at:
                down = time.monotonic()
                await anyio.to_thread.run_sync(postgres.stop)
                await anyio.sleep(5.0)
                await anyio.to_thread.run_sync(postgres.start)
                report.postgres_outage_s = time.monotonic() - down
                postgres_done = True
            else:
                fleet.kill_one()
                report.workers_killed += 1

    ids = [f"job-{n}" for n in range(args.jobs)]
    gateway = app.gateway
    qk = gateway.keys.queue("default")

    async def statuses() -> list[str | None]:
        async with gateway.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(qk.job(job_id), "status")
            return list(await pipe.execute())

    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.supervise)
        tg.start_soon(produce)
        tg.start_soon(poison)
        tg.start_soon(chaos)
        await produced.wait()
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            done = await _retrying("statuses", statuses)
            if all(s in ("completed", "failed") for s in done) and len(poison_ids) == args.poison:
                break
            await anyio.sleep(0.5)
        report.seconds_to_finish = time.monotonic() - started_at
        tg.cancel_scope.cancel()

    # Let the workers ship what they hold, then stop them.
    finished_at = time.monotonic()
    final = await statuses()
    completed = [i for i, s in zip(ids, final, strict=True) if s == "completed"]
    report.lost = sum(1 for s in final if s not in ("completed", "failed"))
    async with gateway.redis.pipeline(transaction=False) as pipe:
        for job_id in completed:
            pipe.hget(qk.job(job_id), "result")
        results = await pipe.execute()
    report.mismatched = sum(1 for s in final if s == "failed") + sum(
        1 for job_id, r in zip(completed, results, strict=True) if json.loads(r) != int(job_id[4:]) * 2
    )
    runs = await gateway.redis.hgetall(runs_key(NAMESPACE))
    # Jobs n % 10 == 0 run twice by design (they fail once): count extra runs beyond that.
    report.duplicated = sum(1 for key, n in runs.items() if int(n) > (2 if int(key) % 10 == 0 else 1))
    report.reclaimed = int(await gateway.redis.hget(qk.stats, "reclaimed") or 0)

    # Every poison entry dead-lettered exactly once.
    dead = [fields.get("entry") for _, fields in await gateway.dlq_entries("default", newest_first=False)]
    report.poison_injected = len(poison_ids)
    report.poison_not_buried_once = sum(1 for e in poison_ids if dead.count(e) != 1)
    pending = (await gateway.redis.xpending(qk.stream, GROUP))["pending"]
    if pending:
        report.notes.append(f"{pending} entries still pending in the stream")

    # PostgreSQL: every completed job's row, within a deadline.
    conn = await asyncpg.connect(postgres.url)
    try:
        missing: set[str] = set(completed)
        deadline = time.monotonic() + args.postgres_timeout
        while missing and time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT id FROM jobs WHERE id = ANY($1::text[]) AND status = 'completed'", list(missing)
            )
            missing -= {r["id"] for r in rows}
            if missing:
                await anyio.sleep(0.5)
        report.missing_in_postgres = len(missing)
        report.postgres_lag_s = time.monotonic() - finished_at
    finally:
        await conn.close()
    fleet.stop()
    report.unexpected_deaths = len(fleet.unexpected)
    report.notes += fleet.unexpected
    await raw.aclose()
    await app.close()
    return report


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs to enqueue (default 5000)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--concurrency", type=int, default=50, help="per worker (default 50)")
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds between SIGKILLs (about)")
    parser.add_argument("--poison", type=int, default=20, help="garbage entries to inject (default 20)")
    parser.add_argument("--visibility-timeout", type=float, default=3.0, help="the workers' (default 3 s)")
    parser.add_argument("--rate", type=float, default=100.0, help="jobs enqueued per second (default 100)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on jobs after this (s)")
    parser.add_argument("--postgres-timeout", type=float, default=120.0, help="and on PostgreSQL (s)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs and data")
    return parser


def main(argv: list[str] | None = None) -> int:
    report = anyio.run(soak, parser().parse_args(argv))
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
