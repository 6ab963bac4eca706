"""``python -m engine demo``: the whole engine on one machine with nothing installed.

Starts an embedded Valkey and an embedded PostgreSQL (data under ``--data-dir``), a worker
process running :mod:`engine.demo_app` (jobs, a cron schedule, the job-log shipper), enqueues
a mix of jobs, shows live progress, prints a summary from Redis and from the PostgreSQL
history, and stops everything it started.

Signals: SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``) and SIGHUP (its terminal closed)
all stop everything it started, whatever it is doing; a server being started is stopped once
its start returns. The exit code is 128 + the signal's number (130, 143, 129) when the signal
cut the demo short, as a shell reports a program a signal ended, and 0 when the demo had
finished (``--keep``, after the summary), since that is how ``--keep`` is meant to end.
Further signals while stopping are ignored: stopping is what they would ask for anyway, and
interrupting it is what leaves servers behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import site
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio

import engine
from engine.client.app import Engine
from engine.embedded import EmbeddedCluster, EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError

BAR_WIDTH = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WORKER_APP = "engine.demo_app:app"
# The worker gets this long to finish its jobs (a few ms each) before it is killed.
WORKER_GRACE_S = 10.0
WORKER_STOP_TIMEOUT_S = WORKER_GRACE_S + 20.0


@dataclass
class _State:
    code: int = 1
    finished: bool = False  # the summary is out: a signal now ends a finished demo
    signum: int | None = None
    error: Exception | None = None


def run_demo(jobs: int, data_dir: str, port: int = 0, keep: bool = False, cluster: bool = False) -> int:
    return anyio.run(_main, jobs, Path(data_dir).resolve(), port, keep, cluster)


async def _main(jobs: int, base: Path, port: int, keep: bool, cluster: bool) -> int:
    state = _State()
    # Open for the whole run, cleanup included: a signal arriving while servers stop is
    # queued here and ignored, instead of killing the process half way through.
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, signals, tg.cancel_scope, state)
            try:
                state.code = await _demo(jobs, base, port, keep, cluster, state)
            except Exception as exc:  # re-raised below, not wrapped in an ExceptionGroup
                state.error = exc
            finally:
                tg.cancel_scope.cancel()
    if state.error is not None:
        raise state.error
    if state.signum is not None:
        return 0 if state.finished else 128 + state.signum
    return state.code


async def _stop_on_signal(signals: AsyncIterator[int], scope: anyio.CancelScope, state: _State) -> None:
    async for signum in signals:
        state.signum = signum
        _say(f"\n{signal.Signals(signum).name}: stopping everything the demo started ...")
        scope.cancel()
        return


async def _demo(jobs: int, base: Path, port: int, keep: bool, cluster: bool, state: _State) -> int:
    async with contextlib.AsyncExitStack() as stack:
        what = "a 6-node Valkey Cluster" if cluster else "an embedded Valkey"
        _say(f"starting {what} and PostgreSQL (data in {base}) ...")
        redis: EmbeddedRedis | EmbeddedCluster = (
            EmbeddedCluster() if cluster else EmbeddedRedis(base / "valkey", appendonly=True)
        )
        postgres = EmbeddedPostgres(base / "postgres", fast=True)
        # Every stop is registered before its start (stops are idempotent and a no-op for
        # what never started): a signal during a start must still stop what it started.
        stack.push_async_callback(_say_async, "stopped everything the demo started.")
        stack.push_async_callback(_unstoppable, redis.stop)
        stack.push_async_callback(_unstoppable, postgres.stop)
        try:
            # Not cancellable (a half-started server cannot be told apart from a running
            # one): a signal lands once the start returns, and the stops above run.
            await anyio.to_thread.run_sync(redis.start)
            await anyio.to_thread.run_sync(postgres.start)
        except EmbeddedServerError as exc:
            # A start a signal broke (initdb and valkey see a terminal's Ctrl-C too) is
            # the stop asked for, not an error to report.
            if state.signum is None:
                _say(f"error: {exc}", err=True)
            return 1
        urls = {
            "ENGINE_REDIS_URL": redis.url,
            "ENGINE_DATABASE_URL": postgres.url,
            "ENGINE_NAMESPACE": f"demo{int(time.time())}",
        }
        os.environ.update(urls)  # engine.demo_app's Engine() reads them when imported
        where = (
            f"a cluster of {len(redis.ports)} nodes (masters {redis.masters()})"
            if isinstance(redis, EmbeddedCluster)
            else f"pid {redis.pid}"
        )
        _say(f"valkey at {redis.url} ({where}), postgresql at {postgres.url}")
        _say(f"starting a worker: python -m engine.worker {WORKER_APP} --concurrency 50")
        log_path = base / "worker.log"
        log = stack.enter_context(log_path.open("ab"))
        worker = _start_worker(base, log)
        stack.push_async_callback(_unstoppable, functools.partial(_stop_worker, worker))
        return await _produce_and_watch(jobs, worker, log_path, log.tell(), postgres.url, port, keep, state)


def _start_worker(base: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.worker",
            WORKER_APP,
            "--concurrency",
            "50",
            "--grace-period",
            str(WORKER_GRACE_S),
            "--log-level",
            "warning",
        ],
        cwd=base,
        env={**os.environ, "PYTHONPATH": _worker_pythonpath()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe nobody reads while the demo runs: a chatty worker (a
        # reconnecting one logs warnings) would fill a pipe and block.
        stderr=log,
        # Out of the terminal's process group: Ctrl-C or a hangup reaches the demo, which
        # stops the worker gracefully, instead of hitting the worker mid-job as well.
        start_new_session=True,
    )


def _worker_pythonpath() -> str:
    """PYTHONPATH for the worker: this ``engine`` importable wherever it was imported from
    (a source checkout run as ``python -m engine`` finds it through the cwd, which the worker,
    running in the data dir, does not share)."""
    root = str(Path(engine.__file__).resolve().parent.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    installed = {str(Path(p).resolve()) for p in (*site.getsitepackages(), site.getusersitepackages())}
    # An installed package needs nothing, and site-packages put ahead of the standard
    # library could shadow it.
    if root not in installed and root not in paths:
        paths.insert(0, root)
    return os.pathsep.join(paths)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def _unstoppable(stop: Callable[[], None]) -> None:
    # Shielded: cleanup runs inside the scope a signal cancelled, and must finish.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(stop)


def _say(text: str, *, err: bool = False, end: str = "\n") -> None:
    # After a hangup the terminal is gone and writing to it fails (EIO); the stop that
    # follows matters more than the message.
    with contextlib.suppress(OSError, ValueError):
        print(text, end=end, file=sys.stderr if err else sys.stdout, flush=True)


async def _say_async(text: str) -> None:
    _say(text)


async def _produce_and_watch(
    total: int,
    worker: subprocess.Popen[bytes],
    log_path: Path,
    log_offset: int,
    database_url: str,
    port: int,
    keep: bool,
    state: _State,
) -> int:
    from engine import demo_app
    from engine.dashboard.server import serving

    app: Engine = demo_app.app
    await demo_app.reset(database_url)
    await demo_app.seed(database_url, datetime.now(UTC).date().replace(day=1), orders=2000)
    async with app, serving(app.dashboard(), port=port) as url:
        _say(f"dashboard: {url}/  (the JSON API is under {url}/api, metrics at {url}/metrics)")
        code = await _run(app, total, worker, log_path, log_offset)
        if code == 0:
            state.finished = True
            if keep:
                _say(f"the demo keeps running: browse {url}/ ; press Ctrl-C to stop everything")
                await anyio.sleep_forever()
        return code


async def _run(
    app: Engine, total: int, worker: subprocess.Popen[bytes], log_path: Path, log_offset: int
) -> int:
    from engine import demo_app

    started = time.monotonic()
    since = datetime.now(UTC)
    share = max(1, total // 4)
    await demo_app.make_thumbnail.enqueue_many([(i,) for i in range(share)])
    await demo_app.checksum.enqueue_many([(f"document {i}",) for i in range(share)])
    await demo_app.send_email.enqueue_many([(f"user{i}@example.com",) for i in range(share)])
    rest = total - 3 * share
    bad_orders = max(1, rest // 50)
    await demo_app.charge_card.enqueue_many([(i, -100 if i < bad_orders else 1999) for i in range(rest)])
    _say(f"enqueued {total} jobs in {(time.monotonic() - started) * 1000:.0f} ms; processing ...")
    while True:
        stats = await app.stats()
        done = sum(s["completed"] + s["failed"] for q, s in stats.items() if q != "reports")
        ticks = stats.get("reports", {}).get("completed", 0)
        _draw(done, total, stats)
        if done >= total and ticks >= 1:
            break
        if worker.poll() is not None:
            _say(
                f"\nerror: the worker exited early (code {worker.returncode}); its log, {log_path}:\n"
                f"{_tail(log_path, log_offset)}",
                err=True,
            )
            return 1
        await anyio.sleep(0.2)
    elapsed = time.monotonic() - started
    _say("")
    _summary(stats, total, elapsed)
    await _history_summary(app, total, since)
    return 0


def _tail(path: Path, offset: int, lines: int = 30) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _draw(done: int, total: int, stats: dict[str, dict[str, int]]) -> None:
    filled = int(BAR_WIDTH * min(done, total) / total)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    active = sum(s["active"] for s in stats.values())
    delayed = sum(s["delayed"] for s in stats.values())
    failed = sum(s["failed"] for s in stats.values())
    _say(
        f"\r[{bar}] {done}/{total}  active {active:3d}  retrying {delayed:3d}  failed {failed:3d}",
        end="",
    )


def _summary(stats: dict[str, dict[str, int]], total: int, elapsed: float) -> None:
    _say(f"\nsummary: {total} jobs in {elapsed:.2f} s ({total / elapsed:,.0f} jobs/s end to end)")
    _say(f"  {'queue':10} {'completed':>10} {'failed':>8} {'retries':>8} {'dead-letter':>12}")
    for queue, s in stats.items():
        _say(f"  {queue:10} {s['completed']:>10} {s['failed']:>8} {s['retried']:>8} {s['dlq']:>12}")
    _say("  (the 'reports' queue holds the monthly report's cron runs, one per tick)")


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
    _say(f"postgresql history: {len(shipped or [])} finished jobs shipped to the jobs table")
    if failed:
        job = failed[0]
        logs = await app.job_logs(job.id)
        _say(f"  a failed job: {job.id} {job.task}{tuple(job.args)} -> {job.error}")
        for line in logs[:3]:
            _say(f"    [{line.level}] {line.content.splitlines()[0]}")
    assert app.database_url is not None
    from engine import demo_app  # the environment points it at the demo's servers by now

    rows = await demo_app.report_rows(app.database_url)
    if rows:
        _say(f"  monthly report ({rows[0]['month']:%Y-%m}, by the cron job):")
        for row in rows:
            _say(f"    {row['region']:10} {row['orders']:>6} orders {row['revenue_cents'] / 100:>14,.2f}")
    _say("failed jobs stay in each queue's dead-letter stream for inspection and replay.")
