"""The worker: fetcher -> channel -> N runners -> completer, all in one anyio task group.

- The fetcher reads only as many entries as there are free runners (XREADGROUP with COUNT
  and BLOCK: no polling while idle) and marks them active in one script call; the
  reclaimer (``duties.py``) feeds runners the same way with entries of dead workers.
- Runners execute jobs (``executor.py``) under their timeouts.
- The completer records outcomes in batches: one script per queue, acknowledging each entry
  atomically with its outcome (at-least-once: nothing is acknowledged before that).
- The lease keeper renews the leases of in-flight entries, so a long job is never taken
  from a live worker; the promoter moves due retries and delayed jobs back to their streams.

Shutdown (``stop()``, SIGTERM, SIGINT): stop fetching, let running jobs finish within the
grace period, record their outcomes, then cancel what is left; unfinished entries stay
pending and are reclaimed by another worker.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.broker import RedisError, ResponseError
from engine.broker.gateway import Gateway, Outcome, Started, runnable_entry
from engine.core.backoff import reconnect_delay
from engine.core.errors import ConfigurationError, ConnectionFailed
from engine.core.keys import check_name
from engine.core.model import WorkerBeat
from engine.cron import Scheduler
from engine.history import JobLog
from engine.history.pruner import Pruner
from engine.history.shipper import Shipper
from engine.worker.duties import Heartbeat, LeaseKeeper, Listener, Promoter, Reclaimer
from engine.worker.executor import Executor, describe
from engine.worker.loop import forever

if TYPE_CHECKING:
    from engine.client.app import Engine

log = structlog.get_logger("engine.worker")

# Idle XREADGROUP blocks this long, then loops: short enough to notice a dropped connection
# quickly, long enough that an idle worker sends about one command a second.
BLOCK_MS = 1000
# Outcomes recorded per script call; bounds how long one call holds Redis.
COMMIT_BATCH = 500
# How long jobs started straight from their entries wait for start.lua's confirmation
# before their outcomes are given up (they are then reclaimed and run again).
CONFIRM_TIMEOUT_S = 10.0


class Worker:
    """Runs jobs of some queues, at most ``concurrency`` at a time, at least once each.

    With ``cron=True`` (the default) it also runs the scheduler of the app's schedules; one
    worker at a time leads and fires each tick exactly once. ``jobs=False`` runs only that.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        grace_period: float = 30.0,
        handle_signals: bool = True,
        name: str | None = None,
        cron: bool = True,
        jobs: bool = True,
        shipper: bool = True,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        if not (isinstance(grace_period, int | float) and math.isfinite(grace_period) and grace_period >= 0):
            raise ConfigurationError(f"grace_period must be a number of seconds >= 0, not {grace_period!r}")
        if isinstance(queues, str):
            queues = [q for q in queues.split(",") if q]
        chosen = list(dict.fromkeys(queues)) if queues else sorted({t.queue for t in engine.tasks.values()})
        if not chosen:
            raise ConfigurationError(
                "the worker has no queue to read: the app registers no task and no queues= were given"
            )
        self.engine = engine
        self.queues = [check_name("queue", q) for q in chosen]
        self.concurrency = concurrency
        self.grace_period = float(grace_period)
        self.handle_signals = handle_signals
        self.id = name or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.process_jobs = jobs
        self.scheduler = Scheduler(engine, self.id, engine.cron_lease) if cron and engine.schedules else None
        self.shipper: Shipper | None = None
        self._joblog: JobLog | None = None
        if shipper and engine.database_url:
            self._joblog = JobLog(
                engine.database_url, connect_timeout=engine.connect_timeout, migrate_on_connect=True
            )
            self.shipper = Shipper(
                engine.gateway.redis,
                self._joblog,
                self._outboxes,
                consumer=self.id,
                visibility_timeout=engine.visibility_timeout,
                busy=self._saturated if jobs else None,
            )
        if not jobs and self.scheduler is None and self.shipper is None:
            raise ConfigurationError(
                "this worker would do nothing: it runs no jobs, the app has no @app.cron schedule "
                "and there is no job log to ship (database_url)"
            )
        self.started = anyio.Event()
        """Set once the worker has joined its consumer groups and is fetching."""
        self.stopped = anyio.Event()
        self.processed = 0
        self._started_at = time.time()
        self._stopping = anyio.Event()
        self._backlogged = False
        self._backlogged_at = 0.0
        self._busy = 0  # entries handed to runners and not yet executed
        self._inflight: dict[str, set[str]] = {q: set() for q in self.queues}  # leases to renew
        self._slot_freed = anyio.Event()
        self._drained = anyio.Event()
        self._fetch_scope: anyio.CancelScope | None = None
        self._runners_scope: anyio.CancelScope | None = None
        # Jobs handed to runners: a deque, and idle runners parked on events, so that one
        # wake-up serves a whole batch of quick jobs (a runner that takes a job while more
        # wait wakes the next idle runner first, so slow jobs still run side by side).
        self._queue: deque[Started] = deque()
        self._idle: list[anyio.Event] = []
        self._no_more_jobs = False
        self._executor = Executor(engine, anyio.CapacityLimiter(concurrency))
        self._promoter: Promoter | None = None
        self._leases: LeaseKeeper | None = None
        self._reclaimer: Reclaimer | None = None
        self._log = log.bind(worker=self.id)

    @property
    def reclaimed(self) -> int:
        return self._reclaimer.reclaimed if self._reclaimer else 0

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (returns at once; ``run()`` returns later)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._busy == 0:
            self._drained.set()
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()

    def kill(self) -> None:
        """Stop now: running jobs are abandoned (their entries are reclaimed later)."""
        self.stop()
        if self._runners_scope is not None:
            self._runners_scope.cancel()

    async def run(self) -> None:
        """Process jobs until ``stop()``, cancellation, SIGTERM or SIGINT."""
        gateway = await self.engine.ready()
        for queue in self.queues:
            await gateway.ensure_group(queue)
        await self.engine.announce_tasks()
        if self.shipper is not None and self._joblog is not None:
            await self._outboxes()  # switch the job log on before the first job is processed
            try:
                await self._joblog.connect()  # creates the tables too; else the shipper retries
            except (ConnectionFailed, OSError) as exc:
                self._log.warning("job log unavailable; shipping will catch up", error=str(exc))
        vt = self.engine.visibility_timeout
        self._promoter = Promoter(gateway, self.queues)
        # Renew three times per timeout: two renewals can fail before a lease lapses.
        self._leases = LeaseKeeper(gateway, self.id, self._inflight, vt / 3)
        self._reclaimer = Reclaimer(gateway, self.id, self.queues, vt, self._free_slots, self._dispatch)
        listener = Listener(gateway, self._promoter.poke, self._executor.cancel)
        heartbeat = Heartbeat(gateway, self._describe)
        self._started_at = time.time()
        self._log.info("worker started", queues=self.queues, concurrency=self.concurrency)
        try:
            async with anyio.create_task_group() as maintenance:
                if self.handle_signals and threading.current_thread() is threading.main_thread():
                    maintenance.start_soon(self._watch_signals)
                if self.scheduler is not None:
                    maintenance.start_soon(self.scheduler.run)
                if self.shipper is not None and self._joblog is not None:
                    maintenance.start_soon(self.shipper.run)
                    pruner = Pruner(
                        gateway,
                        self._joblog,
                        timedelta(seconds=self.engine.history_retention),
                        None
                        if self.engine.failed_history_retention is None
                        else timedelta(seconds=self.engine.failed_history_retention),
                    )
                    maintenance.start_soon(forever, "pruner", pruner.run_once, self.id)
                if self.process_jobs:
                    maintenance.start_soon(self._promoter.run, self.id)
                    maintenance.start_soon(forever, "lease keeper", self._leases.run_once, self.id)
                    maintenance.start_soon(listener.run, self.id)
                    maintenance.start_soon(forever, "heartbeat", heartbeat.run_once, self.id)
                    await self._work(gateway)
                else:
                    self.started.set()
                    await self._stopping.wait()
                maintenance.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(RedisError, OSError):
                    await heartbeat.forget(self.id)
                if self._joblog is not None:
                    await self._joblog.close()
            self.stopped.set()
            self._log.info("worker stopped", processed=self.processed)

    async def _work(self, gateway: Gateway) -> None:
        send_out, recv_out = anyio.create_memory_object_stream[Outcome](math.inf)
        async with anyio.create_task_group() as completing:
            completing.start_soon(self._completer, gateway, recv_out)
            with anyio.CancelScope() as self._runners_scope:
                async with anyio.create_task_group() as running:
                    for _ in range(self.concurrency):
                        running.start_soon(self._runner, send_out.clone())
                    send_out.close()
                    running.start_soon(self._fetch_then_drain, gateway, self._runners_scope)
                    self.started.set()

    async def _fetch_then_drain(self, gateway: Gateway, runners: anyio.CancelScope) -> None:
        assert self._reclaimer is not None
        try:
            with anyio.CancelScope() as self._fetch_scope:
                if self._stopping.is_set():
                    self._fetch_scope.cancel()
                async with anyio.create_task_group() as fetching:
                    fetching.start_soon(forever, "reclaimer", self._reclaimer.run_once, self.id)
                    await self._fetch(gateway)
        finally:
            # Runners finish what is queued, then exit.
            self._no_more_jobs = True
            while self._idle:
                self._idle.pop().set()
        with anyio.move_on_after(self.grace_period):
            await self._drained.wait()
        if not self._drained.is_set():
            self._log.warning(
                "grace period over; abandoning running jobs to be reclaimed", running=self._busy
            )
            runners.cancel()

    async def _outboxes(self) -> list[str]:
        """Every queue's outbox, switching its job log on: scripts write events only while the
        queue's flag exists, so an outbox never fills up with nobody to drain it."""
        gateway = self.engine.gateway
        queues = sorted(set(await gateway.queues()) | set(self.queues))
        async with gateway.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.set(gateway.keys.queue(queue).joblog_flag, "1")
            await pipe.execute()
        return [gateway.keys.queue(queue).outbox for queue in queues]

    def _describe(self) -> WorkerBeat:
        return WorkerBeat(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
            started_at=self._started_at,
            seen_at=time.time(),
            busy=self._busy,
            processed=self.processed,
            running=self._executor.running()[:100],
        )

    def _saturated(self) -> bool:
        """Jobs are waiting beyond what this worker can take: it runs flat out."""
        return self._backlogged and time.monotonic() - self._backlogged_at < 1.0

    def _free_slots(self) -> int:
        return 0 if self._stopping.is_set() else self.concurrency - self._busy

    async def _dispatch(self, entries: list[tuple[str, str, dict[str, str]]]) -> None:
        """Mark read or reclaimed entries active and hand them to runners."""
        self._hand_over(await self.engine.gateway.start_entries(self.id, entries))

    def _hand_over(self, started: list[Started]) -> None:
        self._busy += len(started)
        for job in started:
            self._inflight[job.queue].add(job.entry_id)
        self._queue.extend(started)
        if started and self._idle:
            self._idle.pop().set()

    async def _start_now(self, gateway: Gateway, entries: list[tuple[str, str, dict[str, str]]]) -> None:
        """Run fresh jobs at once and confirm them with start.lua meanwhile, which saves an
        idle worker a round trip per job; other entries wait for start.lua as usual.

        A job start.lua refuses (cancelled since, or poison) is stopped and its outcome
        discarded; if the confirmation fails, so is every outcome of the batch, and the
        entries, still pending, are reclaimed (at-least-once, as after a crash).
        """
        ready = {}
        for queue, entry_id, fields in entries:
            job = runnable_entry(queue, entry_id, fields)
            if job is not None:
                ready[entry_id] = job
        self._hand_over(list(ready.values()))
        started: list[Started] = []
        try:
            # Shielded: jobs already run on this answer, and a stop() must not strand them.
            with anyio.CancelScope(shield=True), anyio.move_on_after(CONFIRM_TIMEOUT_S):
                await anyio.lowlevel.checkpoint()  # the runners start them first
                started = await gateway.start_entries(self.id, entries)
        finally:
            confirmed = {job.entry_id for job in started}
            for job in ready.values():
                if job.entry_id not in confirmed:
                    job.dropped = True
                    self._executor.cancel(job.job_id)
                    self._inflight[job.queue].discard(job.entry_id)
                assert job.confirmed is not None
                job.confirmed.set()
        self._hand_over([job for job in started if job.entry_id not in ready])

    async def _fetch(self, gateway: Gateway) -> None:
        failures = 0
        streams = max(1, len(self.queues))
        while not self._stopping.is_set():
            while self._busy >= self.concurrency:
                self._slot_freed = anyio.Event()
                await self._slot_freed.wait()
            try:
                # COUNT applies per stream: split the free slots so the total stays near them.
                count = max(1, (self.concurrency - self._busy) // streams)
                # While jobs are waiting, read and start them in one script call; block (and
                # then start what arrived) only when the streams are drained.
                started = await gateway.fetch(self.queues, self.id, count)
                if started:
                    self._hand_over(started)
                else:
                    entries = await gateway.read(self.queues, self.id, count, BLOCK_MS)
                    if entries:
                        await self._start_now(gateway, entries)
                # A full read means more is waiting: the worker is saturated (the shipper
                # then steps aside, see Shipper.busy).
                self._backlogged = len(started) >= count
                self._backlogged_at = time.monotonic()
            except ResponseError as exc:
                failures += 1
                if "NOGROUP" in str(exc):
                    # The stream or group vanished (FLUSHALL, a restart without persistence).
                    self._log.warning("consumer group missing; recreating it")
                    with contextlib.suppress(RedisError, OSError):
                        for queue in self.queues:
                            await gateway.ensure_group(queue)
                else:
                    # A script that failed on some entry's data: the entries it read stay
                    # pending and come back, one at a time, through the reclaimer, which
                    # buries the one at fault (Gateway.start_entries).
                    self._log.error("fetch failed; retrying", error=str(exc))
                await anyio.sleep(reconnect_delay(failures))
                continue
            except (RedisError, OSError) as exc:
                # Entries read but not started stay pending under this worker's name and
                # are reclaimed after the visibility timeout.
                failures += 1
                delay = reconnect_delay(failures)
                self._log.warning("redis unavailable; retrying", error=str(exc), retry_in_s=round(delay, 2))
                await anyio.sleep(delay)
                continue
            except Exception:
                # Nothing read may take the worker down (the entries stay pending, as above).
                failures += 1
                self._log.exception("fetch failed unexpectedly; retrying")
                await anyio.sleep(reconnect_delay(failures))
                continue
            if failures:
                self._log.info("redis reachable again")
                failures = 0

    async def _runner(self, send_out: MemoryObjectSendStream[Outcome]) -> None:
        async with send_out:
            while True:
                if not self._queue:
                    if self._no_more_jobs:
                        return
                    parked = anyio.Event()
                    self._idle.append(parked)
                    await parked.wait()
                    continue
                job = self._queue.popleft()
                if self._queue and self._idle:
                    self._idle.pop().set()  # more waiting: another runner takes the next one
                try:
                    outcome = None if job.dropped else await self._executor.run(job)
                    if job.confirmed is not None:
                        await job.confirmed.wait()  # the outcome must not overtake the start
                        if job.dropped:
                            outcome = None
                finally:
                    self._busy -= 1
                    self._slot_freed.set()
                    if self._busy == 0 and self._stopping.is_set():
                        self._drained.set()
                if outcome is not None:
                    send_out.send_nowait(outcome)

    async def _completer(self, gateway: Gateway, recv_out: MemoryObjectReceiveStream[Outcome]) -> None:
        async with recv_out:
            while True:
                try:
                    batch = [await recv_out.receive()]
                except anyio.EndOfStream:
                    return
                while len(batch) < COMMIT_BATCH:
                    try:
                        batch.append(recv_out.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._commit(gateway, batch)

    async def _commit(self, gateway: Gateway, batch: list[Outcome]) -> None:
        failures = 0
        give_up_at: float | None = None
        while True:
            try:
                await gateway.finish(batch, self.engine.retention)
                break
            except (RedisError, OSError) as exc:
                # Safe to repeat: an outcome whose entry was already acknowledged is ignored.
                failures += 1
                if self._stopping.is_set():
                    give_up_at = give_up_at or time.monotonic() + self.grace_period
                    if time.monotonic() >= give_up_at:
                        self._log.error(
                            "could not record outcomes before shutdown; their jobs will be reclaimed",
                            jobs=len(batch),
                            error=str(exc),
                        )
                        return
                await anyio.sleep(reconnect_delay(failures))
            except Exception:
                # Not Redis: the batch itself cannot be sent (a value no check foresaw).
                # Record the outcomes one by one, burying those that cannot be.
                self._log.exception("could not record outcomes; recording them one by one", jobs=len(batch))
                await self._commit_each(gateway, batch)
                break
        for outcome in batch:
            self._inflight[outcome.queue].discard(outcome.entry_id)
        self.processed += len(batch)

    async def _commit_each(self, gateway: Gateway, batch: list[Outcome]) -> None:
        for outcome in batch:
            try:
                await gateway.finish([outcome], self.engine.retention)
            except (RedisError, OSError):
                pass  # still pending: reclaimed and run again, as after a crash
            except Exception as exc:
                reason = f"could not record its outcome ({outcome.kind}): {describe(exc)}"
                with contextlib.suppress(RedisError, OSError):
                    await gateway.bury(outcome.queue, outcome.entry_id, outcome.job_id, reason)

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self._stopping.is_set() and signum == signal.SIGINT:
                    self._log.warning("second interrupt: stopping now")
                    self.kill()
                    return
                self._log.info(
                    "signal received; shutting down",
                    signal=signal.Signals(signum).name,
                    grace_period_s=self.grace_period,
                )
                self.stop()
