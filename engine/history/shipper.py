"""Ship job-log events from the Redis outbox streams into PostgreSQL.

Every state change of a job appends an event to its queue's outbox stream in the same Lua
call (see ``engine/broker/scripts/*.lua``). A script that changes a batch of jobs (an enqueue, the
outcomes a worker records together) writes their events as one entry, a JSON array (see
:func:`engine.history.decode_entry`): an entry per event cost Redis and the shipper most of
what the job log costs. A :class:`Shipper` reads the outboxes with the consumer group
``shipper``, writes each batch through :meth:`engine.history.JobLog.write` in one
transaction, and only after the commit acknowledges and deletes the entries (``ack.lua``).
So a PostgreSQL outage delays the log and loses nothing: the batch in hand is retried as it
is, later events wait in Redis, and the backlog (in events: the outboxes' length plus what
their batched entries hold beyond one event each) is watched.

Several shippers may run side by side (one per worker process, say): the group spreads the
entries over them and writes are idempotent and order-insensitive. Entries a shipper has read
are leased to it like jobs to a worker, for the engine's visibility timeout: while it holds
them (writing them, or retrying through a PostgreSQL outage) it renews the lease three times
per timeout (``renew.lua``, the workers' script), and every shipper scans four times per
timeout for entries idle past it (XAUTOCLAIM). So a dead shipper's entries ship within about
1.25 timeouts of its last renewal, and a live one's are not taken while it renews them.

A ``deleted`` event (``delete.lua``, ``purge.lua``) removes the job's rows; see
:meth:`engine.history.JobLog.write` for why a late event of the job cannot bring them back.

Its Redis side is :class:`engine.broker.outbox.Outbox`; a batch's parsing and writing,
:mod:`engine.history.batch`; leaving out superseded enqueues, :mod:`engine.history.superseded`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import structlog

from engine.broker import Redis
from engine.broker.outbox import GROUP, Outbox, Streams, outbox_events, outbox_key, queue_outboxes
from engine.core.backoff import reconnect_delay
from engine.core.clock import SYSTEM_CLOCK, Clock
from engine.core.signals import Signals
from engine.history.batch import Batch, take, write
from engine.history.events import check_events
from engine.history.store import JobLog
from engine.history.superseded import skip_superseded

__all__ = ["GROUP", "Shipper", "outbox_events", "outbox_key", "queue_outboxes"]

log = structlog.get_logger("engine.history.shipper")

# At most one backlog alarm per this many seconds: an outage must not flood the logs.
ALARM_INTERVAL_S = 30.0
# How long the shipper steps aside at a time while its worker is saturated.
BUSY_PAUSE_S = 0.25
# Past ten failures the back-off is long capped (5 s); the cap on the exponent also keeps
# 2.0 ** failures from overflowing through a very long outage.
_MAX_BACKOFF_EXPONENT = 10

Outboxes = Callable[[], Awaitable[Sequence[str]]] | Sequence[str]


class Shipper:
    """Consumer group 'shipper' on each queue's outbox; acknowledges (XACK + XDEL) only after the
    PostgreSQL commit.

    ``outbox`` is the :class:`~engine.broker.outbox.Outbox` to read, or a redis client to
    build one from. ``outboxes`` is a list of stream keys or an async callable returning
    them (refreshed every ``refresh_interval`` seconds, so new queues are picked up).
    ``consumer`` names this shipper in the group; give each live shipper its own name.
    Metrics: ``shipped`` (events written, or ``superseded``: enqueued events left out
    because a newer event of the job makes the same row), ``skipped`` (garbage events
    acknowledged without a row), ``failures`` (failed attempts), ``backlog`` (events in the
    outboxes when last seen: not yet shipped), ``reclaimed`` (entries taken over from dead
    shippers), ``lost`` (held entries another shipper took over: this one stalled past the
    timeout; both write them, which is harmless).

    ``visibility_timeout`` (seconds; pass the engine's) is the lease on the entries a shipper
    holds: :meth:`run` renews it every third of the timeout and takes over other shippers'
    entries idle for longer than ``reclaim_idle_ms`` (the timeout by default; lower only in
    tests: below the renewal interval it takes live shippers' entries too).

    ``clock`` paces its loops; ``signals`` (the engine's) gets ``shipper_committed`` with
    the number of events written after each batch is committed and acknowledged.

    The JobLog may be left unconnected: the shipper connects it when it first has something
    to write (and keeps trying, in :meth:`run`, while PostgreSQL cannot be reached).
    """

    def __init__(
        self,
        outbox: Outbox | Redis,
        joblog: JobLog,
        outboxes: Outboxes,
        consumer: str,
        *,
        batch: int = 2000,
        block_ms: int = 1000,
        alarm_length: int = 100_000,
        visibility_timeout: float = 30.0,
        reclaim_idle_ms: int | None = None,
        refresh_interval: float = 5.0,
        busy: Callable[[], bool] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        signals: Signals | None = None,
    ) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, not {batch!r}")
        if not (isinstance(visibility_timeout, int | float) and 0 < visibility_timeout < math.inf):
            raise ValueError(
                f"visibility_timeout must be a positive number of seconds, not {visibility_timeout!r}"
            )
        if reclaim_idle_ms is None:
            reclaim_idle_ms = math.ceil(visibility_timeout * 1000)
        if block_ms < 0 or reclaim_idle_ms < 0 or alarm_length < 0:
            raise ValueError("block_ms, reclaim_idle_ms and alarm_length must be >= 0")
        if not consumer:
            raise ValueError("consumer must be a non-empty name")
        self.outbox = outbox if isinstance(outbox, Outbox) else Outbox(outbox)
        self.joblog = joblog
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.alarm_length = alarm_length
        self.visibility_timeout = float(visibility_timeout)
        self.reclaim_idle_ms = reclaim_idle_ms
        # As the workers do with jobs: renewing three times per timeout leaves room for two
        # failed renewals, and scanning four times per timeout takes a dead shipper's entries
        # over within about 1.25 timeouts of its last renewal.
        self.renew_interval = self.visibility_timeout / 3
        self.reclaim_interval = self.visibility_timeout / 4
        self.refresh_interval = refresh_interval
        self.busy = busy
        self.clock = clock
        self.signals = signals
        self.shipped = 0
        self.skipped = 0
        self.superseded = 0
        self.failures = 0
        self.backlog = 0
        self.reclaimed = 0
        self.lost = 0
        self._source = outboxes
        self._static: list[str] | None = None
        if not callable(outboxes):
            if isinstance(outboxes, str):
                raise TypeError("outboxes must be a list of stream keys (or a callable), not a string")
            self._static = list(outboxes)
        self._keys: list[str] = []
        self._keys_at = float("-inf")
        self._inflight: Batch | None = None  # read, not yet acknowledged: retried as it is
        self._next: Batch | None = None  # read ahead while PostgreSQL commits the one in flight
        self._check_pending = True  # our own pending entries (a crash, a truncated read) first
        self._rotation = 0
        self._per_entry = 1.0  # events per entry lately: how many entries make a batch
        self._last_alarm = float("-inf")
        self._next_reclaim = float("-inf")

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Ship forever (until cancelled), riding out PostgreSQL and Redis outages, and keep
        the lease on the entries held meanwhile."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_leases)
            await self._ship()

    async def _keep_leases(self) -> None:
        while True:
            await self.clock.sleep(self.renew_interval)
            try:
                await self.renew()
            except Exception as exc:
                # Two more tries before the lease lapses; the shipping loop meets a Redis
                # outage too and reports it.
                log.warning("renewing the job-log lease failed", error=f"{type(exc).__name__}: {exc}")

    async def _ship(self) -> None:
        attempt = 0
        while True:
            try:
                # Not while a batch fails to be written: taking on more would not help, and a
                # shipper that can write may take them instead.
                if self._inflight is None and self.clock.monotonic() >= self._next_reclaim:
                    await self.reclaim()
                    self._next_reclaim = self.clock.monotonic() + self.reclaim_interval
                if await self._step_aside():
                    continue
                await self.run_once(block=True)
                if attempt:
                    log.info("job-log shipping resumed", failed_attempts=attempt, backlog=self.backlog)
                attempt = 0
            except Exception as exc:
                self.failures += 1
                attempt += 1
                # A failed read may have left entries in our pending list: look there next.
                self._check_pending = True
                delay = reconnect_delay(min(attempt, _MAX_BACKOFF_EXPONENT))
                waiting = self._inflight.size if self._inflight is not None else 0
                log.warning(
                    "job-log shipping failed, retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                    batch=waiting,
                    committed=self._inflight.committed if self._inflight is not None else None,
                    failures=self.failures,
                )
                await self.clock.sleep(delay)

    async def _step_aside(self) -> bool:
        """While the worker this shipper lives in is saturated, leave it the CPU and let the
        outbox absorb the burst (it is what the outbox is for): it ships, in full batches,
        once the burst is over. A backlog past half the alarm length ships regardless, so
        under sustained load the log lags by a bounded amount instead of without end."""
        if self.busy is None or not self.busy():
            return False
        keys = await self._outboxes()
        if keys:
            self._observe(await self.outbox.backlog(keys))  # keeps the alarm current meanwhile
        if self.backlog >= self.alarm_length // 2:
            return False
        await self.clock.sleep(BUSY_PAUSE_S)
        return True

    async def run_once(self, block: bool = False) -> int:
        """Ship one batch: the one that failed last time if any, else up to ``batch`` entries
        (this consumer's own pending ones first); the number of entries handled."""
        if self._inflight is None:
            if self._next is not None:
                self._inflight, self._next = self._next, None
            else:
                keys = await self._outboxes()
                if not keys:
                    if block:
                        await self.clock.sleep(self.block_ms / 1000)
                    return 0
                await self.outbox.ensure_groups(keys)
                batch = await self._read(keys, block)
                if batch is None:
                    self._observe(await self.outbox.backlog(keys))
                    return 0
                self._inflight = batch
        batch = self._inflight
        if not batch.committed:
            if not self.joblog.connected:
                await self.joblog.connect()  # PostgreSQL was down when the shipper started
            if batch.events is None:
                await skip_superseded(self.outbox, batch, self.clock)
                batch.events, garbage, superseded = check_events(batch.raws)
                batch.skipped += garbage
                batch.superseded += superseded
            if self._next is None and not self._check_pending and batch.size >= self.batch:
                # A full batch: more is likely waiting. Read and parse it while PostgreSQL
                # commits this one (the read-ahead is held, and retried, like this batch).
                error: Exception | None = None
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read_ahead)
                    try:
                        await write(self.joblog, batch)
                    except Exception as exc:  # let the read-ahead finish, then report
                        error = exc
                if error is not None:
                    raise error
            else:
                await write(self.joblog, batch)
            batch.committed = True
        self._observe(await self.outbox.ack(batch.ids, await self._outboxes()))
        self._inflight = None
        written = len(batch.events or ()) - len(batch.rejected)
        self.shipped += written + batch.superseded
        self.superseded += batch.superseded
        self.skipped += batch.skipped + len(batch.rejected)
        if self.signals is not None:
            self.signals.shipper_committed.emit(written)
        return batch.count

    async def renew(self) -> int:
        """Renew the lease on the entries this shipper holds (the batch being written and the
        one read ahead), so no other shipper takes them over; how many it had lost."""
        held: dict[str, list[str]] = {}
        owner: dict[tuple[str, str], Batch] = {}
        for batch in (self._inflight, self._next):
            if batch is not None:
                for stream, ids in batch.held().items():
                    held.setdefault(stream, []).extend(ids)
                    owner.update(((stream, entry_id), batch) for entry_id in ids)
        if not held:
            return 0
        lost = await self.outbox.renew(self.consumer, held)
        if lost:
            # This shipper stalled past the timeout and another took the entries over. Both
            # writing them is harmless (idempotent), and the first to acknowledge deletes them.
            for stream, entry_id in lost:
                owner[stream, entry_id].lost.add(entry_id)
            self.lost += len(lost)
            log.warning("job-log lease lost: another shipper took over held entries", entries=len(lost))
        return len(lost)

    async def reclaim(self) -> int:
        """Take over entries other shippers read and have not renewed for ``reclaim_idle_ms``
        (they died, or stalled): up to ``batch`` entries; how many."""
        keys = await self._outboxes()
        if not keys:
            return 0
        total = await self.outbox.claim_idle(self.consumer, keys, self.reclaim_idle_ms, self.batch)
        if total:
            self.reclaimed += total
            self._check_pending = True
            log.info("reclaimed job-log events from a dead or stalled shipper", entries=total)
        return total

    # -- steps ------------------------------------------------------------------------------

    async def _read_ahead(self) -> None:
        done = False
        try:
            keys = await self._outboxes()
            if keys:
                self._next = await self._read(keys, block=False, lenient=False)
            done = True
        except Exception as exc:
            # Whatever it was, the next regular read meets it again.
            log.debug("job-log read-ahead failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            if not done:
                # Failed or cancelled: entries it may have been handed are in our pending
                # list; read that first next time.
                self._check_pending = True

    async def _outboxes(self) -> list[str]:
        if self._static is not None:
            return self._static
        now = self.clock.monotonic()
        if now - self._keys_at >= self.refresh_interval:
            source = self._source
            assert callable(source)
            found = source()
            keys: Sequence[Any] = await found if inspect.isawaitable(found) else found
            # A client without decode_responses hands bytes, whatever the hint says.
            self._keys = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
            self._keys_at = now
        return self._keys

    async def _read(self, keys: list[str], block: bool, lenient: bool = True) -> Batch | None:
        """Read a batch: this consumer's pending entries if it may have some, else new ones.

        The pending read must only happen while no batch is held (held entries are pending
        too); ``lenient=False`` (the read-ahead) never falls back to it.
        """
        self._rotation = (self._rotation + 1) % len(keys)
        order = keys[self._rotation :] + keys[: self._rotation]  # no outbox starves the others
        if self._check_pending:
            if not lenient:
                return None
            streams = await self._xreadgroup(order, True, None)
            if any(rows for _, rows in streams):
                return self._take(streams)
            self._check_pending = False
        # A read blocks no longer than the reclaim interval: an idle shipper is the one that
        # takes a dead shipper's entries over, and it looks between reads.
        longest = min(self.block_ms, max(1, int(self.reclaim_interval * 1000)))
        block_ms = longest if block and self.block_ms > 0 else None
        streams = await self._xreadgroup(order, False, block_ms, lenient)
        if not any(rows for _, rows in streams):
            return None
        return self._take(streams)

    async def _xreadgroup(
        self, keys: list[str], pending: bool, block_ms: int | None, lenient: bool = True
    ) -> Streams:
        # Entries enough for a batch of events: a batched entry holds many.
        count = max(1, min(self.batch, round(self.batch / self._per_entry)))
        got = await self.outbox.read(
            self.consumer, keys, pending=pending, count=count, block_ms=block_ms, lenient=lenient
        )
        if got.regrouped:
            log.warning("job-log outbox lost its consumer group, created it again", outboxes=len(keys))
        if got.lenient:
            # Our pending list may hold more than this read took: look there next.
            log.warning("job-log events with invalid UTF-8, read them leniently")
            self._check_pending = True
        return got.streams

    def _take(self, streams: Streams) -> Batch:
        """Parse entries up to ``batch`` events; any beyond stay pending and are read next time."""
        batch, left = take(streams, self.batch)
        if left:
            self._check_pending = True
        if batch.count:
            self._per_entry = max(1.0, batch.size / batch.count)
        return batch

    def _observe(self, backlog: int) -> None:
        self.backlog = backlog
        if backlog > self.alarm_length:
            now = self.clock.monotonic()
            if now - self._last_alarm >= ALARM_INTERVAL_S:
                self._last_alarm = now
                log.error(
                    "job-log outbox backlog over the alarm threshold: is PostgreSQL or the shipper down?",
                    backlog=backlog,
                    alarm_length=self.alarm_length,
                )
