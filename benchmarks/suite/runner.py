"""Scenario runner: one throwaway Valkey, every scenario for every system, on a flushed database.

Method (the same for every system, see benchmarks/README.md):
- workers are separate OS processes started with the system's own CLI or API; this process
  only produces and observes;
- drains: the jobs are enqueued first (the fastest way the system offers; not timed), then the
  worker processes start; the first job each process gets waits at the probe's start gate
  until every process holds work; the clock starts when the gate opens and stops at the
  wall-clock time the last job body finished (read from the probe's batched counters);
- every measurement has a time cap: past it the rate so far is reported and marked capped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis
from anyio.abc import Process

from benchmarks.suite import probe
from benchmarks.suite.driver import ROOT, Driver, Kind, WorkerCommand
from benchmarks.suite.model import Result, Run, Scenario

PROBE_DB = 15


@dataclass(frozen=True)
class Plan:
    """Job counts and repetitions of one mode."""

    mode: str
    reps: int
    cap_s: float
    single: int
    in_flight: int
    bulk: int
    drain: int
    latency: int
    io: int
    failure: int
    joblog: int
    joblog_sustained: int
    memory: int
    scale: tuple[int, ...] = ()
    concurrency: int = 100
    io_concurrency: int = 500
    latency_gap_s: float = 0.002
    bulk_chunk: int = 1000

    def scaled(self, factor: float) -> Plan:
        if factor == 1:
            return self

        def s(n: int) -> int:
            return max(50, int(n * factor))

        return replace(
            self,
            single=s(self.single),
            in_flight=s(self.in_flight),
            bulk=s(self.bulk),
            drain=s(self.drain),
            latency=s(self.latency),
            io=s(self.io),
            failure=s(self.failure),
            joblog=s(self.joblog),
            joblog_sustained=s(self.joblog_sustained),
            memory=s(self.memory),
            scale=tuple(s(n) for n in self.scale),
            cap_s=max(10.0, self.cap_s * min(1.0, factor * 3)),
        )


QUICK = Plan(
    mode="quick", reps=3, cap_s=60.0, single=2_000, in_flight=5_000, bulk=20_000, drain=20_000,
    latency=300, io=10_000, failure=10_000, joblog=20_000, joblog_sustained=200_000, memory=100_000,
)  # fmt: skip
FULL = Plan(
    mode="full", reps=5, cap_s=600.0, single=10_000, in_flight=20_000, bulk=200_000, drain=200_000,
    latency=2_000, io=10_000, failure=50_000, joblog=200_000, joblog_sustained=1_000_000, memory=100_000,
    scale=(10_000, 100_000, 1_000_000),
)  # fmt: skip


def scenarios(plan: Plan) -> list[Scenario]:
    c, io_c = plan.concurrency, plan.io_concurrency
    out = [
        Scenario("enqueue_single", "enqueue, one at a time (awaited)", "jobs/s", "higher", plan.single,
                 "one producer, each enqueue awaited before the next"),
        Scenario("enqueue_in_flight", "enqueue, 100 in flight", "jobs/s", "higher", plan.in_flight,
                 "100 enqueue calls outstanding (tasks for async clients, threads for sync ones)"),
        Scenario("enqueue_bulk", "enqueue, bulk API", "jobs/s", "higher", plan.bulk,
                 f"the system's own bulk API, {plan.bulk_chunk:,} jobs per call"),
        Scenario("drain_1", "drain no-op jobs, 1 worker process", "jobs/s", "higher", plan.drain,
                 f"all jobs waiting, one worker process, concurrency {c}"),
        Scenario("drain_2", "drain no-op jobs, 2 worker processes", "jobs/s", "higher", plan.drain,
                 f"all jobs waiting, two worker processes, concurrency {c} each"),
        Scenario("latency_p50", "latency enqueue-to-start p50", "ms", "lower", plan.latency,
                 f"jobs one at a time, {plan.latency_gap_s * 1000:g} ms apart, idle worker"),
        Scenario("latency_p99", "latency enqueue-to-start p99", "ms", "lower", plan.latency,
                 f"jobs one at a time, {plan.latency_gap_s * 1000:g} ms apart, idle worker"),
        Scenario("io", f"I/O-bound: jobs await 10 ms, concurrency {io_c}", "jobs/s", "higher", plan.io,
                 f"one worker process, concurrency {io_c}"),
        Scenario("failure", "failure-heavy: 30% fail once, retried", "jobs/s", "higher", plan.failure,
                 "successful completions per second, one worker process, retry delay as small as allowed"),
        Scenario("joblog_off", "drain, PostgreSQL job log off (engine)", "jobs/s", "higher", plan.joblog,
                 "the engine alone: drain_1 with no database_url"),
        Scenario("joblog_on", "drain, PostgreSQL job log on (engine)", "jobs/s", "higher", plan.joblog,
                 "the engine alone: drain_1 with database_url set (events shipped to PostgreSQL)"),
        Scenario("joblog_sustained_off", "sustained drain, job log off (engine)", "jobs/s", "higher",
                 plan.joblog_sustained, "the engine alone: a drain long enough that the outbox outgrows "
                 "what the shipper defers while its worker is saturated"),
        Scenario("joblog_sustained_on", "sustained drain, job log on (engine)", "jobs/s", "higher",
                 plan.joblog_sustained, "as above with database_url set: the shipper ships while the "
                 "worker runs flat out"),
        Scenario("memory_waiting", "Redis memory per waiting job", "bytes", "lower", plan.memory,
                 "INFO used_memory before/after enqueueing, divided by the job count"),
        Scenario("memory_after_drain", "Redis memory left after a drain", "bytes", "lower", plan.drain,
                 "used_memory after drain_1 minus before it, with each system's own result retention"),
    ]  # fmt: skip
    for n in plan.scale:
        title = f"scale: drain with {n:,} waiting"
        out.append(Scenario(f"scale_{n}", title, "jobs/s", "higher", n, f"drain_1 with {n:,} jobs waiting"))
    return out


class Observer:
    """The benchmark's view of Redis: the probe database and server-wide INFO."""

    def __init__(self, url: str) -> None:
        self.url = url
        base = url.rsplit("/", 1)[0]
        self.probe_url = f"{base}/{PROBE_DB}"
        self.redis = aioredis.Redis.from_url(url)
        self.probe = aioredis.Redis.from_url(self.probe_url)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.probe.aclose()

    async def flush(self) -> None:
        await self.redis.flushall(asynchronous=False)

    async def used_memory(self) -> int:
        """used_memory less the clients' buffers (``mem_clients_normal``): connections that
        producers and workers open and close would otherwise move the baseline."""
        info = await self.redis.info("memory")
        return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))

    async def settled_memory(self, quiet_s: float = 1.5, limit_s: float = 30.0) -> int:
        """used_memory once it has stopped moving (Redis shrinks tables lazily)."""
        last, since = await self.used_memory(), time.monotonic()
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
            await anyio.sleep(0.25)
            now = await self.used_memory()
            if abs(now - last) > 1024:
                last, since = now, time.monotonic()
        return last

    async def done(self) -> int:
        return int(await self.probe.get(probe.DONE) or 0)

    async def ready(self) -> int:
        return int(await self.probe.scard(probe.READY))

    async def open_gate(self) -> None:
        await self.probe.set(probe.GO, "1")

    async def last_done_at(self) -> float:
        values = await self.probe.hvals(probe.LAST)
        return max((float(v) for v in values), default=0.0)

    async def latencies(self) -> list[float]:
        return [float(v) for v in await self.probe.lrange(probe.LAT, 0, -1)]

    async def clear_latencies(self) -> None:
        await self.probe.delete(probe.LAT)

    async def server_version(self) -> str:
        info = await self.redis.info("server")
        if "valkey_version" in info:
            return f"Valkey {info['valkey_version']}"
        return f"Redis {info.get('redis_version', '?')}"


@dataclass
class Workers:
    procs: list[Process] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    def alive(self) -> bool:
        return all(p.returncode is None for p in self.procs)


@contextlib.asynccontextmanager
async def start_workers(
    commands: Sequence[WorkerCommand], env: dict[str, str], log_dir: Path, label: str
) -> AsyncIterator[Workers]:
    """Start worker processes (each in its own process group, so that a peer's CLI and the
    children it forks stop together) and stop them on exit: SIGTERM, then SIGKILL."""
    workers = Workers()
    try:
        for n, cmd in enumerate(commands):
            log = _open_log(log_dir, f"{label}-{n}.log")
            workers.logs.append(log)
            full_env = {**os.environ, **env, **cmd.env, "PYTHONPATH": str(ROOT)}
            proc = await anyio.open_process(
                cmd.argv, cwd=ROOT, env=full_env, stdout=log, stderr=log, start_new_session=True
            )
            workers.procs.append(proc)
        yield workers
    finally:
        with anyio.CancelScope(shield=True):
            for proc in workers.procs:
                _signal_group(proc, signal.SIGTERM)
            with anyio.move_on_after(8):
                for proc in workers.procs:
                    await proc.wait()
            for proc in workers.procs:
                _signal_group(proc, signal.SIGKILL)
                await proc.wait()
            for log in workers.logs:
                log.close()


def _open_log(log_dir: Path, name: str) -> Any:
    log_dir.mkdir(parents=True, exist_ok=True)
    return (log_dir / name).open("ab")


def _signal_group(proc: Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)  # the group this runner created for this worker


@dataclass
class Drain:
    rate: float
    elapsed: float
    completed: int
    capped: bool
    note: str = ""


class Runner:
    def __init__(
        self,
        run: Run,
        plan: Plan,
        observer: Observer,
        out_dir: Path,
        database_url: Callable[[], str | None] | None = None,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.run = run
        self.plan = plan
        self.obs = observer
        self.out = out_dir
        self.logs = out_dir / "logs"
        self.database_url = database_url
        self.say = progress

    # -- building blocks --------------------------------------------------------------------

    def _env(self, gate: bool) -> dict[str, str]:
        return {"BENCH_PROBE_URL": self.obs.probe_url, "BENCH_GATE": "1" if gate else "0"}

    async def _fresh(self, driver: Driver) -> None:
        await self.obs.flush()
        await driver.after_flush()

    async def drain(
        self,
        driver: Driver,
        kind: Kind,
        jobs: int,
        processes: int = 1,
        concurrency: int | None = None,
        extra_env: dict[str, str] | None = None,
        label: str = "drain",
        memory: list[int] | None = None,
        after: Callable[[Drain], Awaitable[None]] | None = None,
    ) -> Drain:
        """Fill the queue, start the workers, open the gate when all hold work, time the rest."""
        await self._fresh(driver)
        if memory is not None:
            memory.append(await self.obs.settled_memory(quiet_s=1.0))
        await driver.fill(kind, list(range(jobs)))
        cmd = driver.worker(kind, concurrency or self.plan.concurrency)
        env = {**self._env(gate=True), **(extra_env or {})}
        note = ""
        async with start_workers([cmd] * processes, env, self.logs, f"{driver.name}-{label}") as workers:
            deadline = time.monotonic() + 90
            first_ready: float | None = None
            while True:
                ready = await self.obs.ready()
                if ready >= processes:
                    break
                now = time.monotonic()
                if ready and first_ready is None:
                    first_ready = now
                if first_ready is not None and now - first_ready > 10:
                    note = f"gate opened with {ready} of {processes} processes holding jobs"
                    break
                if not workers.alive():
                    raise RuntimeError(f"{driver.name} worker exited at start; see {self.logs}")
                if now > deadline:
                    raise RuntimeError(f"{driver.name} worker took no job within 90 s; see {self.logs}")
                await anyio.sleep(0.01)
            t0 = time.time()
            await self.obs.open_gate()
            cap_at = time.monotonic() + self.plan.cap_s
            capped = False
            while True:
                await anyio.sleep(0.005)
                completed = await self.obs.done()
                if completed >= jobs:
                    break
                if time.monotonic() > cap_at:
                    capped = True
                    break
                if not workers.alive():
                    raise RuntimeError(f"{driver.name} worker died mid-drain; see {self.logs}")
            if capped:
                elapsed = time.time() - t0
                rate = completed / elapsed
                note = f"capped at {self.plan.cap_s:.0f} s: {completed:,} of {jobs:,} done"
            else:
                elapsed = max(await self.obs.last_done_at() - t0, 1e-6)
                rate = jobs / elapsed
            result = Drain(rate, elapsed, completed, capped, note)
            if after is not None:
                await after(result)  # while the workers still run
        if memory is not None:
            memory.append(await self.obs.settled_memory())
        return result

    # -- scenarios ----------------------------------------------------------------------------

    async def repeat(
        self, scenario: str, driver: Driver, measure: Callable[[int], Any], reps: int | None = None
    ) -> None:
        """Run ``measure(rep)`` (returning a Drain or a float) ``reps`` times into the result;
        a capped repetition ends the series (more of them would only repeat the cap)."""
        result = self.run.result(scenario, driver.name)
        for rep in range(reps or self.plan.reps):
            try:
                value = await measure(rep)
            except Exception as exc:
                result.notes.append(f"error: {exc}")
                self.say(f"    {scenario}: error: {exc}")
                return
            if isinstance(value, Drain):
                if value.note:
                    result.notes.append(value.note)
                result.values.append(value.rate)
                if value.capped:
                    result.capped = True
                    self.say(f"    {scenario}: {value.rate:,.0f} (capped)")
                    return
                self.say(f"    {scenario}: {value.rate:,.1f}")
            else:
                result.values.append(float(value))
                self.say(f"    {scenario}: {float(value):,.1f}")

    async def enqueue_scenarios(self, driver: Driver) -> None:
        plan = self.plan

        async def single(rep: int) -> float:
            await self._fresh(driver)
            t0 = time.perf_counter()
            for i in range(plan.single):
                await driver.enqueue_one("noop", i)
            return plan.single / (time.perf_counter() - t0)

        async def in_flight(rep: int) -> float:
            await self._fresh(driver)
            t0 = time.perf_counter()
            await driver.enqueue_in_flight("noop", list(range(plan.in_flight)), 100)
            return plan.in_flight / (time.perf_counter() - t0)

        async def bulk(rep: int) -> float:
            await self._fresh(driver)
            args = list(range(plan.bulk))
            chunks = [args[i : i + plan.bulk_chunk] for i in range(0, len(args), plan.bulk_chunk)]
            t0 = time.perf_counter()
            for chunk in chunks:
                await driver.enqueue_bulk("noop", chunk)
            return plan.bulk / (time.perf_counter() - t0)

        await self.repeat("enqueue_single", driver, single)
        await self.repeat("enqueue_in_flight", driver, in_flight)
        if driver.bulk_api:
            await self.repeat("enqueue_bulk", driver, bulk)
        else:
            self.run.result("enqueue_bulk", driver.name).skipped = "no bulk enqueue API"

    async def drain_scenarios(self, driver: Driver) -> None:
        plan = self.plan
        memory: list[int] = []

        async def one(rep: int) -> Drain:
            return await self.drain(driver, "noop", plan.drain, 1, memory=memory if rep == 0 else None)

        async def two(rep: int) -> Drain:
            return await self.drain(driver, "noop", plan.drain, 2, label="drain2")

        await self.repeat("drain_1", driver, one)
        if len(memory) == 2:
            r = self.run.result("memory_after_drain", driver.name)
            r.values.append(float(memory[1] - memory[0]))
            r.notes.append(f"results kept: {driver.settings.get('results', 'see driver')}")
        await self.repeat("drain_2", driver, two)

    async def latency_scenario(self, driver: Driver) -> None:
        plan = self.plan
        p50 = self.run.result("latency_p50", driver.name)
        p99 = self.run.result("latency_p99", driver.name)
        for _rep in range(plan.reps):
            try:
                lat = await self._latency_once(driver)
            except Exception as exc:
                p50.notes.append(f"error: {exc}")
                self.say(f"    latency: error: {exc}")
                return
            q = statistics.quantiles(lat, n=100, method="inclusive")
            p50.values.append(q[49] * 1000)
            p99.values.append(q[98] * 1000)
            self.say(f"    latency: p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms")

    async def _latency_once(self, driver: Driver) -> list[float]:
        plan = self.plan
        await self._fresh(driver)
        await self.obs.probe.flushdb()
        cmd = driver.worker("latency", plan.concurrency)
        warm = 20
        label = f"{driver.name}-latency"
        async with start_workers([cmd], self._env(gate=False), self.logs, label) as workers:
            # Warm-up: the worker is up, connected and idle before the measured jobs are sent.
            for _ in range(warm):
                await driver.enqueue_one("latency", time.time())
                await anyio.sleep(plan.latency_gap_s)
            await self._wait_done(warm, 90, workers)
            await self.obs.clear_latencies()
            await anyio.sleep(0.2)
            for _ in range(plan.latency):
                await driver.enqueue_one("latency", time.time())
                await anyio.sleep(plan.latency_gap_s)
            await self._wait_done(warm + plan.latency, self.plan.cap_s, workers)
            await anyio.sleep(0.05)
            lat = await self.obs.latencies()
        if len(lat) < plan.latency:
            raise RuntimeError(f"only {len(lat)} of {plan.latency} latencies recorded")
        return lat

    async def _wait_done(self, target: int, timeout: float, workers: Workers) -> None:
        deadline = time.monotonic() + timeout
        while await self.obs.done() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{await self.obs.done()} of {target} jobs done after {timeout:.0f} s")
            if not workers.alive():
                raise RuntimeError(f"worker exited; see {self.logs}")
            await anyio.sleep(0.005)

    async def io_scenario(self, driver: Driver) -> None:
        plan = self.plan

        async def one(rep: int) -> Drain:
            return await self.drain(driver, "io", plan.io, 1, plan.io_concurrency, label="io")

        await self.repeat("io", driver, one)
        if driver.concurrency_note:
            self.run.result("io", driver.name).notes.append(driver.concurrency_note)

    async def failure_scenario(self, driver: Driver) -> None:
        plan = self.plan

        async def one(rep: int) -> Drain:
            return await self.drain(driver, "flaky", plan.failure, 1, label="failure")

        await self.repeat("failure", driver, one)

    async def memory_scenario(self, driver: Driver) -> None:
        plan = self.plan
        result = self.run.result("memory_waiting", driver.name)
        try:
            await self._fresh(driver)
            before = await self.obs.settled_memory()
            await driver.fill("noop", list(range(plan.memory)))
            after = await self.obs.settled_memory(quiet_s=1.0)
        except Exception as exc:
            result.notes.append(f"error: {exc}")
            return
        result.values.append((after - before) / plan.memory)
        self.say(f"    memory: {(after - before) / plan.memory:,.0f} bytes per waiting job")

    async def scale_scenario(self, driver: Driver) -> None:
        for n in self.plan.scale:

            async def one(rep: int, n: int = n) -> Drain:
                return await self.drain(driver, "noop", n, 1, label=f"scale{n}")

            await self.repeat(f"scale_{n}", driver, one, reps=1)

    # -- engine-only ----------------------------------------------------------------------------

    async def engine_memory(self, driver: Driver) -> None:
        """The engine's memory targets: bytes per waiting job beyond its payload, and back to
        the baseline after a full drain once results expire (result_ttl 1 s for this one)."""
        from benchmarks.suite import engine_app
        from engine.core.model import Payload, json_encoder

        plan = self.plan
        env = {"BENCH_RESULT_TTL": "1"}
        await self._fresh(driver)
        # warm-up: scripts loaded, consumer group made, tables sized (as benchmarks/core.py)
        await self.drain(driver, "noop", 1000, extra_env=env, label="memory-warm")
        await self._wait_keys_expire(engine_app.app.namespace)
        baseline = await self.obs.settled_memory()
        await driver.fill("noop", list(range(plan.memory)))
        loaded = await self.obs.settled_memory(quiet_s=1.0)
        per_job = (loaded - baseline) / plan.memory
        payload = len(json_encoder.encode(Payload(args=[plan.memory // 2], kwargs={})))
        await self.obs.probe.flushdb()
        cmd = driver.worker("noop", plan.concurrency)
        async with start_workers([cmd], {**self._env(gate=False), **env}, self.logs, "engine-memory") as w:
            await self._wait_done(plan.memory, max(self.plan.cap_s, 120), w)
            await anyio.sleep(0.5)  # the last outcome batch
        await self._wait_keys_expire(engine_app.app.namespace)
        after = await self.obs.settled_memory()
        self.run.result("memory_waiting", "engine").values = [per_job]
        self.run.extra["engine_memory"] = {
            "jobs": plan.memory,
            "bytes_per_waiting_job": per_job,
            "payload_bytes_per_job": payload,
            "beyond_payload": per_job - payload,
            "baseline_bytes": baseline,
            "bytes_left_after_full_drain": after - baseline,
        }
        self.say(
            f"    memory: {per_job:,.0f} B/waiting job (payload {payload} B), "
            f"{after - baseline:+,} B after the drain"
        )

    async def _wait_keys_expire(self, namespace: str, limit_s: float = 60) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            keys = [k async for k in self.obs.redis.scan_iter(match=f"{namespace}:*", count=5000)]
            # the stream, its consumer group's bookkeeping and the stats/tasks hashes stay
            if len(keys) <= 6:
                return
            await anyio.sleep(0.25)

    async def joblog_scenario(self, driver: Driver) -> None:
        """Drain with the job log off, then on: a burst the shipper defers until the worker
        is idle (``joblog``), and a drain long enough that it ships while the worker runs
        flat out (``joblog_sustained``)."""
        plan = self.plan
        pairs = (("joblog", plan.joblog), ("joblog_sustained", plan.joblog_sustained))
        url = self.database_url() if self.database_url else None
        ok = await _migrate(url) if url is not None else False
        if ok is not True:
            why = "PostgreSQL not available" if url is None else f"job log not available ({ok})"
            for prefix, _ in pairs:  # every job-log row says why, not only the first pair's
                for mode in ("off", "on"):
                    self.run.result(f"{prefix}_{mode}", "engine").skipped = f"skipped: {why}"
            return
        for prefix, jobs in pairs:
            await self._joblog_pair(driver, url, prefix, jobs)
            on = self.run.result(f"{prefix}_on", "engine")
            if any("no row reached PostgreSQL" in n for n in on.notes) and not on.values:
                on.notes.clear()
                on.skipped = "skipped: job log not available (the worker shipped no event to PostgreSQL)"

    async def _joblog_pair(self, driver: Driver, url: str, prefix: str, jobs: int) -> None:
        label = prefix.replace("_", "-")

        async def measure_off(rep: int) -> Drain:
            return await self.drain(driver, "noop", jobs, 1, label=f"{label}-off")

        lags: list[float] = []

        async def caught_up(d: Drain) -> None:
            if await _rows(url) == 0:
                await anyio.sleep(3)  # a shipper's first batch may lag the drain a little
                if await _rows(url) == 0:
                    raise _NoJobLog("no row reached PostgreSQL")
            lags.append(await _catch_up(url, jobs))

        async def measure_on(rep: int) -> Drain:
            await _truncate(url)
            env = {"ENGINE_DATABASE_URL": url}
            on = f"{label}-on"
            return await self.drain(driver, "noop", jobs, 1, extra_env=env, label=on, after=caught_up)

        await self.repeat(f"{prefix}_off", driver, measure_off)
        await self.repeat(f"{prefix}_on", driver, measure_on)
        if lags:
            self.run.extra[f"{prefix}_catch_up_s"] = lags


class _NoJobLog(RuntimeError):
    pass


async def _migrate(url: str) -> bool | str:
    try:
        from engine.history import JobLog
    except Exception as exc:
        return f"engine.history: {exc}"
    try:
        log = JobLog(url)
        async with log:
            await log.migrate()
    except Exception as exc:
        return f"migrate: {exc}"
    return True


async def _pg(url: str, sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _truncate(url: str) -> None:
    await _pg(url, "TRUNCATE jobs CASCADE")


async def _rows(url: str) -> int:
    return int(await _pg(url, "SELECT count(*) FROM jobs"))


async def _catch_up(url: str, jobs: int, limit_s: float = 120) -> float:
    """Seconds after the drain ended until every job had its row (finished) in PostgreSQL."""
    t_end = time.time()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        n = int(await _pg(url, "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL"))
        if n >= jobs:
            return time.time() - t_end
        await anyio.sleep(0.1)
    return float("nan")


def fastest_peer(run: Run, scenario: str) -> tuple[str, Result] | None:
    """The best peer (not the engine) with a value, by median."""
    sc = run.scenario(scenario)
    best: tuple[str, Result] | None = None
    for r in run.results:
        if r.scenario != scenario or r.system == "engine" or r.median is None:
            continue
        if best is None:
            best = (r.system, r)
            continue
        cur = best[1].median
        assert cur is not None
        if (sc.better == "higher" and r.median > cur) or (sc.better == "lower" and r.median < cur):
            best = (r.system, r)
    return best


def ratio(run: Run, scenario: str) -> float | None:
    """How many times better the engine is than the fastest peer (> 1: the engine wins)."""
    engine = next((r for r in run.results if r.scenario == scenario and r.system == "engine"), None)
    best = fastest_peer(run, scenario)
    if engine is None or engine.median is None or best is None or not best[1].median:
        return None
    if run.scenario(scenario).better == "higher":
        return engine.median / best[1].median
    return best[1].median / engine.median if engine.median else None
