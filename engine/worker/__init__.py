"""The worker: one process's job runtime, its parts composed in one anyio task group.

- The fetcher (``fetcher.py``) reads only as many entries as there are free runners and
  marks them active in one script call; the reclaimer (``duties.py``) feeds runners the
  same way with entries of dead workers.
- The runners (``runners.py``) execute jobs (``executor.py``) under their timeouts.
- The completer (``completer.py``) records outcomes in batches, acknowledging each entry
  atomically with its outcome (at-least-once: nothing is acknowledged before that).
- The lease keeper renews the leases of in-flight entries, so a long job is never taken
  from a live worker; the promoter moves due retries and delayed jobs back to their streams.

Shutdown (``stop()``, SIGTERM, SIGINT): stop fetching, let running jobs finish within the
grace period, record their outcomes, then cancel what is left; unfinished entries stay
pending and are reclaimed by another worker.

It sees the app through :class:`engine.runtime.Runtime` and imports ``engine.core``,
``engine.broker``, ``engine.history``, ``engine.cron`` and ``engine.context``; never the
client, the inspector or the dashboard above it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

import anyio
import structlog

from engine.broker import RedisError
from engine.broker.gateway import Gateway
from engine.core.errors import ConfigurationError, ConnectionFailed
from engine.core.model import WorkerBeat
from engine.core.partitions import base_queue, check_queue_name
from engine.core.transitions import Outcome
from engine.cron import Scheduler
from engine.history import JobLog
from engine.history.pruner import Pruner
from engine.history.shipper import Shipper
from engine.runtime import Runtime
from engine.worker.completer import Completer
from engine.worker.duties import Heartbeat, Lanes, LeaseKeeper, Listener, Promoter, Reclaimer
from engine.worker.executor import Executor
from engine.worker.fetcher import Fetcher, fetch_until_stopped
from engine.worker.flow import FlowGate
from engine.worker.loop import forever
from engine.worker.os_signals import unclaimed_signals
from engine.worker.runners import Runners

__all__ = ["Worker"]

# How long a starting worker waits for its cancel and wake-up subscriptions before it
# takes jobs anyway.
SUBSCRIBE_WAIT_S = 5.0

log = structlog.get_logger("engine.worker")


class Worker:
    """Runs jobs of some queues, at most ``concurrency`` at a time, at least once each.

    With ``cron=True`` (the default) it also runs the scheduler of the app's schedules; one
    worker at a time leads and fires each tick exactly once. ``jobs=False`` runs only that.
    ``max_jobs`` stops it gracefully once that many outcomes are recorded (a pool recycles it).
    ``handle_signals``: True makes SIGTERM/SIGINT stop it (the command line), False never;
    None (the default) does so only when nothing else in the process handles them, so a
    worker embedded in a web server (uvicorn, gunicorn) leaves them to it.
    """

    def __init__(
        self,
        engine: Runtime,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        grace_period: float = 30.0,
        handle_signals: bool | None = None,
        name: str | None = None,
        cron: bool = True,
        jobs: bool = True,
        shipper: bool = True,
        max_jobs: int | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        if not (isinstance(grace_period, int | float) and math.isfinite(grace_period) and grace_period >= 0):
            raise ConfigurationError(f"grace_period must be a number of seconds >= 0, not {grace_period!r}")
        if max_jobs is not None and (type(max_jobs) is not int or max_jobs < 1):  # bool is no count
            raise ConfigurationError(f"max_jobs must be an integer >= 1 or None, not {max_jobs!r}")
        self.max_jobs = max_jobs
        if isinstance(queues, str):
            queues = [q for q in queues.split(",") if q]
        chosen = (
            list(dict.fromkeys(queues)) if queues else sorted({t.spec.queue for t in engine.tasks.values()})
        )
        if not chosen:
            raise ConfigurationError(
                "the worker has no queue to read: the app registers no task and no queues= were given"
            )
        self.engine = engine
        self.clock = engine.clock
        settings = engine.settings
        # The queues as named; run() replaces a partitioned one by its partitions.
        self.queues = [check_queue_name(q) for q in chosen]
        self.concurrency = concurrency
        self.grace_period = float(grace_period)
        self.handle_signals = handle_signals
        self.id = name or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.process_jobs = jobs
        self.scheduler = (
            Scheduler(engine, self.id, settings.cron_lease_s) if cron and engine.schedules else None
        )
        self.shipper: Shipper | None = None
        self._joblog: JobLog | None = None
        if shipper and settings.database_url:
            self._joblog = JobLog(
                settings.database_url, connect_timeout=settings.connect_timeout_s, migrate_on_connect=True
            )
            self.shipper = Shipper(
                engine.gateway.outbox(),
                self._joblog,
                self._outboxes,
                consumer=self.id,
                visibility_timeout=settings.visibility_timeout_s,
                busy=self._saturated if jobs else None,
                clock=self.clock,
                signals=engine.signals,
            )
        if not jobs and self.scheduler is None and self.shipper is None:
            raise ConfigurationError(
                "this worker would do nothing: it runs no jobs, the app has no @app.cron schedule "
                "and there is no job log to ship (database_url)"
            )
        self.started = anyio.Event()
        """Set once the worker has joined its consumer groups and is fetching."""
        self.stopped = anyio.Event()
        self._started_at = self.clock.time()
        self._stopping = anyio.Event()
        # Queue, partition or priority lane -> its entries whose leases to renew.
        self._inflight: defaultdict[str, set[str]] = defaultdict(set)
        self._executor = Executor(engine, anyio.CapacityLimiter(concurrency))
        self._runners = Runners(self._executor, concurrency, self._inflight)
        # The parts that talk to Redis are made by run(), from the gateway it checked.
        self._fetchers: list[Fetcher] = []
        self._completer: Completer | None = None
        self._reclaimer: Reclaimer | None = None
        self._runners_scope: anyio.CancelScope | None = None
        self._log = log.bind(worker=self.id)

    @property
    def reclaimed(self) -> int:
        """Entries of dead or stalled workers this one took over."""
        return self._reclaimer.reclaimed if self._reclaimer else 0

    @property
    def processed(self) -> int:
        """Outcomes recorded so far."""
        return self._completer.processed if self._completer else 0

    @property
    def busy(self) -> int:
        """Jobs handed to runners and not yet executed."""
        return self._runners.busy

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (returns at once; ``run()`` returns later).

        Fetching stops without cancelling a read in flight (what the server delivered to
        this worker would be stranded until a reclaim): each fetch loop ends once its read
        returns, within about a second, and hands what it got to the runners; running jobs
        have the grace period, counted from this call, to finish."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._runners.stop()

    def kill(self) -> None:
        """Stop now: running jobs are abandoned (their entries are reclaimed later)."""
        self.stop()
        if self._runners_scope is not None:
            self._runners_scope.cancel()

    def _check_max_jobs(self, processed: int) -> None:
        if self.max_jobs is not None and processed >= self.max_jobs and not self._stopping.is_set():
            self._log.info("max jobs processed; shutting down", processed=processed, max_jobs=self.max_jobs)
            self.stop()

    async def run(self) -> None:
        """Process jobs until ``stop()``, cancellation, SIGTERM or SIGINT."""
        engine, clock = self.engine, self.clock
        gateway = await engine.ready()
        self.queues = engine.layout.expand(self.queues)
        self._inflight.clear()
        await gateway.refresh_lanes(self.queues)
        for queue in self.queues:
            await gateway.ensure_group(queue)
        await engine.announce_tasks()
        if self.process_jobs:
            await engine.publish_limits(self.queues)  # where start.lua enforces them
        if self.process_jobs:
            # Before the first job: the app's @app.on_startup hooks fill ctx.state (a failing
            # one stops the worker here, before it takes any job).
            await engine.hooks.start()
        if self.shipper is not None and self._joblog is not None:
            await self._outboxes()  # switch the job log on before the first job is processed
            try:
                await self._joblog.connect()  # creates the tables too; else the shipper retries
            except (ConnectionFailed, OSError) as exc:
                self._log.warning("job log unavailable; shipping will catch up", error=str(exc))
        vt = engine.settings.visibility_timeout_s
        promoter = Promoter(gateway, self.queues, clock)
        # Renew three times per timeout: two renewals can fail before a lease lapses.
        leases = LeaseKeeper(gateway, self.id, self._inflight, vt / 3)
        # One fetch loop per group of queues one blocking read can serve (one per queue in a
        # cluster), all sharing the runners.
        # fast_acquire: an uncontended turn (one group, a standalone server) costs no
        # checkpoint; with the extra yield per read, a one-queue drain ran 20-35 % slower.
        turn = anyio.Lock(fast_acquire=True)
        gate = FlowGate(clock, self._inflight)
        fetchers = self._fetchers = [
            Fetcher(
                gateway, self.id, group, self._runners, clock, share=len(self.queues), turn=turn, gate=gate
            )
            for group in gateway.read_groups(self.queues)
        ]
        self._reclaimer = Reclaimer(
            gateway,
            self.id,
            self.queues,
            vt,
            self._runners.free_slots,
            fetchers[0].dispatch,
            engine.signals.reclaimer_reclaimed.emit,
        )
        completer = self._completer = Completer(
            gateway,
            self.id,
            engine.retention,
            self._inflight,
            self.grace_period,
            self._stopping.is_set,
            clock,
            on_recorded=None if self.max_jobs is None else self._check_max_jobs,
            on_finished=gate.finished,
        )
        lanes = Lanes(gateway, self.queues, clock)
        listener = Listener(
            gateway,
            self.queues,
            promoter.poke,
            self._executor.cancel,
            clock,
            on_flow=gate.release,
            on_lanes=lanes.poke,
        )
        heartbeat = Heartbeat(gateway, self._describe, clock)
        self._started_at = clock.time()
        self._log.info("worker started", queues=self._queue_names(), concurrency=self.concurrency)
        try:
            async with anyio.create_task_group() as maintenance:
                watched = self._signals_to_watch()
                if watched:
                    maintenance.start_soon(self._watch_signals, watched)
                if self.scheduler is not None:
                    maintenance.start_soon(self.scheduler.run)
                if self.shipper is not None and self._joblog is not None:
                    maintenance.start_soon(self.shipper.run)
                    maintenance.start_soon(
                        forever, "pruner", self._pruner(gateway, self._joblog).run_once, self.id, clock
                    )
                if self.process_jobs:
                    maintenance.start_soon(promoter.run, self.id)
                    maintenance.start_soon(forever, "lease keeper", leases.run_once, self.id, clock)
                    maintenance.start_soon(forever, "lanes", lanes.run_once, self.id, clock)
                    maintenance.start_soon(listener.run, self.id)
                    maintenance.start_soon(forever, "heartbeat", heartbeat.run_once, self.id, clock)
                    # No job before the cancel channels are listened to (a cancel sent in
                    # between would be lost); a server that does not let us subscribe in time
                    # delays nothing more: the listener keeps trying meanwhile.
                    with anyio.move_on_after(SUBSCRIBE_WAIT_S):
                        await listener.subscribed.wait()
                    await self._work(fetchers, completer)
                else:
                    self.started.set()
                    await self._stopping.wait()
                engine.signals.worker_drained.emit(self.id)
                maintenance.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if self.process_jobs:  # the last worker of the process runs on_shutdown
                    for hook, error in await engine.hooks.stop():
                        self._log.error("shutdown hook raised", hook=hook, error=repr(error))
                with contextlib.suppress(RedisError, OSError):
                    await heartbeat.forget(self.id)
                if self._joblog is not None:
                    await self._joblog.close()
            self.stopped.set()
            self._log.info("worker stopped", processed=self.processed)

    def _pruner(self, gateway: Gateway, joblog: JobLog) -> Pruner:
        settings = self.engine.settings
        failed = settings.failed_history_retention_s
        return Pruner(
            gateway,
            joblog,
            timedelta(seconds=settings.history_retention_s),
            None if failed is None else timedelta(seconds=failed),
            clock=self.clock,
        )

    async def _work(self, fetchers: list[Fetcher], completer: Completer) -> None:
        send, receive = anyio.create_memory_object_stream[Outcome](math.inf)
        async with anyio.create_task_group() as completing:
            completing.start_soon(completer.run, receive)
            with anyio.CancelScope() as self._runners_scope:
                async with anyio.create_task_group() as running:
                    self._runners.start(running, send)
                    running.start_soon(self._fetch_then_drain, fetchers, self._runners_scope)
                    self.started.set()

    async def _fetch_then_drain(self, fetchers: list[Fetcher], runners_scope: anyio.CancelScope) -> None:
        assert self._reclaimer is not None
        runners = self._runners
        try:
            # Until stop(): the fetch loops and the reclaimer end after their calls in flight.
            await fetch_until_stopped(
                fetchers,
                self._reclaimer.run_once,
                self.engine.gateway.unblock_reads,
                runners,
                self.id,
                self.clock,
            )
        finally:
            runners.close()  # runners finish what is queued, then exit
        with anyio.move_on_after(runners.grace_left(self.grace_period)):
            await runners.drained.wait()
        if not runners.drained.is_set():
            self._log.warning(
                "grace period over; abandoning running jobs to be reclaimed", running=runners.busy
            )
            runners_scope.cancel()

    async def _outboxes(self) -> list[str]:
        """Every queue's outbox, switching its job log on: scripts write events only while the
        queue's flag exists, so an outbox never fills up with nobody to drain it."""
        gateway = self.engine.gateway
        queues = sorted(set(await gateway.queues()) | set(self.queues))
        await gateway.switch_on_joblog(queues)
        return [gateway.keys.queue(queue).outbox for queue in queues]

    def _describe(self) -> WorkerBeat:
        return WorkerBeat(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self._queue_names(),
            concurrency=self.concurrency,
            started_at=self._started_at,
            seen_at=self.clock.time(),
            busy=self._runners.busy,
            processed=self.processed,
            running=self._executor.running()[:100],
        )

    def _queue_names(self) -> list[str]:
        """The queues this worker reads, a partitioned one named once."""
        return list(dict.fromkeys(base_queue(q) for q in self.queues))

    def _saturated(self) -> bool:
        """Jobs are waiting beyond what this worker can take (the shipper then steps aside)."""
        return any(fetcher.saturated() for fetcher in self._fetchers)

    def _signals_to_watch(self) -> tuple[signal.Signals, ...]:
        """The signals that stop this worker: SIGTERM and SIGINT with ``handle_signals=True``
        (the command line), none with False; with None (the default), those nobody else in
        this process handles, or none when the host program handles either (a web server
        embedding the worker stops it from its own shutdown). Only the main thread can."""
        if self.handle_signals is False or threading.current_thread() is not threading.main_thread():
            return ()
        if self.handle_signals:
            return (signal.SIGTERM, signal.SIGINT)
        unclaimed = unclaimed_signals()
        if not unclaimed:
            self._log.debug("leaving SIGINT and SIGTERM to the host program: it handles them")
        return unclaimed

    async def _watch_signals(self, watched: tuple[signal.Signals, ...]) -> None:
        with anyio.open_signal_receiver(*watched) as signals:
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
