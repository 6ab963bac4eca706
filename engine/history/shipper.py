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
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from engine.broker import Redis, ResponseError, scripts
from engine.broker.gateway import run_scripts
from engine.core.keys import Keys, outbox_extra, outbox_job_prefix
from engine.history import Event, JobLog, RawEvent, check_event, decode_entry, is_data_error

__all__ = ["GROUP", "Shipper", "outbox_events", "outbox_key", "queue_outboxes"]

log = structlog.get_logger("engine.history.shipper")

GROUP = "shipper"
"""The consumer group every shipper reads the outboxes with."""

ALARM_INTERVAL = 30.0
MAX_BACKOFF = 5.0

Outboxes = Callable[[], Awaitable[Sequence[str]]] | Sequence[str]


def outbox_key(namespace: str, queue: str) -> str:
    """The outbox stream of a queue: ``{ns}:{queue}:outbox`` (the queue is the hash tag)."""
    return Keys(namespace).queue(queue).outbox


def queue_outboxes(redis: Redis, namespace: str) -> Callable[[], Awaitable[list[str]]]:
    """An ``outboxes`` callable for :class:`Shipper`: the outbox of every queue the app knows."""
    keys = Keys(namespace)
    client: Any = redis

    async def outboxes() -> list[str]:
        names = await client.smembers(keys.queues)
        return sorted(outbox_key(namespace, n.decode() if isinstance(n, bytes) else n) for n in names)

    return outboxes


@dataclass
class _Batch:
    """Entries read and not yet acknowledged: retried as they are until they are."""

    ids: dict[str, list[tuple[str, int]]]  # stream -> (entry id, events beyond its first)
    raws: list[RawEvent]  # as read; checked into ``events`` before the first write
    streams: list[str]  # the outbox of each raw event
    count: int  # entries
    size: int  # events, garbage included
    superseded: int = 0  # enqueued events left out: their jobs have had a newer event
    events: list[Event] | None = None
    committed: bool = False
    skipped: int = 0
    rejected: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)  # entries another shipper has taken over since


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def outbox_events(length: Any, extra: Any) -> int:
    """An outbox's backlog in events, from the replies of XLEN on it and GET on its count of
    events beyond one per entry (:func:`engine.core.keys.outbox_extra`). Anything else (an error,
    a count someone overwrote) counts as 0: it is only a measurement."""
    events = length if isinstance(length, int) else 0
    if isinstance(extra, str | bytes) and extra.isdigit() and extra.isascii():
        events += int(extra)
    return events


def _entries(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str] | None]]]]:
    """XREADGROUP's reply as [(stream, [(entry id, fields or None)])], RESP2 or RESP3, str or bytes."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    out: list[tuple[str, list[tuple[str, dict[str, str] | None]]]] = []
    for stream, entries in items:
        if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], list):
            entries = entries[0]  # RESP3 shape: {stream: [[entries]]}
        rows: list[tuple[str, dict[str, str] | None]] = []
        for entry_id, fields in entries or ():
            if isinstance(entry_id, bytes):
                entry_id = entry_id.decode()
                if fields:
                    fields = {_text(k): _text(v) for k, v in fields.items()}
            rows.append((entry_id, fields))
        out.append((_text(stream), rows))
    return out


# How long the shipper steps aside at a time while its worker is saturated.
BUSY_PAUSE = 0.25
# How long a batch may wait for workers to get through its jobs (see _skip_superseded), and
# how often it looks.
HOLD_MAX = 1.0
HOLD_POLL = 0.05


class Shipper:
    """Consumer group 'shipper' on each queue's outbox; acknowledges (XACK + XDEL) only after the
    PostgreSQL commit.

    ``outboxes`` is a list of stream keys or an async callable returning them (refreshed every
    ``refresh_interval`` seconds, so new queues are picked up). ``consumer`` names this shipper
    in the group; give each live shipper its own name. Metrics: ``shipped`` (events written, or
    ``superseded``: enqueued events left out because a newer event of the job makes the same
    row), ``skipped`` (garbage events acknowledged without a row), ``failures`` (failed
    attempts), ``backlog`` (events in the outboxes when last seen: not yet shipped),
    ``reclaimed`` (entries taken over from dead shippers), ``lost`` (held entries another
    shipper took over: this one stalled past the timeout; both write them, which is harmless).

    ``visibility_timeout`` (seconds; pass the engine's) is the lease on the entries a shipper
    holds: :meth:`run` renews it every third of the timeout and takes over other shippers'
    entries idle for longer than ``reclaim_idle_ms`` (the timeout by default; lower only in
    tests: below the renewal interval it takes live shippers' entries too).

    The JobLog may be left unconnected: the shipper connects it when it first has something
    to write (and keeps trying, in :meth:`run`, while PostgreSQL cannot be reached).
    """

    def __init__(
        self,
        redis: Redis,
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
        # redis-py's hints are unions of bytes/str that fight decode_responses; typed loosely.
        self.redis: Any = redis
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
        self._ready: set[str] = set()  # outboxes whose group exists
        self._inflight: _Batch | None = None  # read, not yet acknowledged: retried as it is
        self._next: _Batch | None = None  # read ahead while PostgreSQL commits the one in flight
        self._check_pending = True  # our own pending entries (a crash, a truncated read) first
        self._rotation = 0
        self._per_entry = 1.0  # events per entry lately: how many entries make a batch
        self._ack_script = self.redis.register_script(scripts.source("ack"))
        self._versions_script = self.redis.register_script(scripts.source("versions"))
        self._renew_script = self.redis.register_script(scripts.source("renew"))
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
            await anyio.sleep(self.renew_interval)
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
                if self._inflight is None and time.monotonic() >= self._next_reclaim:
                    await self.reclaim()
                    self._next_reclaim = time.monotonic() + self.reclaim_interval
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
                delay = min(MAX_BACKOFF, 0.05 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
                waiting = self._inflight.size if self._inflight is not None else 0
                log.warning(
                    "job-log shipping failed, retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                    batch=waiting,
                    committed=self._inflight.committed if self._inflight is not None else None,
                    failures=self.failures,
                )
                await anyio.sleep(delay)

    async def _step_aside(self) -> bool:
        """While the worker this shipper lives in is saturated, leave it the CPU and let the
        outbox absorb the burst (it is what the outbox is for): it ships, in full batches,
        once the burst is over. A backlog past half the alarm length ships regardless, so
        under sustained load the log lags by a bounded amount instead of without end."""
        if self.busy is None or not self.busy():
            return False
        keys = await self._outboxes()
        if keys:
            await self._measure(keys)  # keeps the backlog, and its alarm, current meanwhile
        if self.backlog >= self.alarm_length // 2:
            return False
        await anyio.sleep(BUSY_PAUSE)
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
                        await anyio.sleep(self.block_ms / 1000)
                    return 0
                await self._ensure_groups(keys)
                batch = await self._read(keys, block)
                if batch is None:
                    await self._measure(keys)
                    return 0
                self._inflight = batch
        batch = self._inflight
        if not batch.committed:
            if not self.joblog.connected:
                await self.joblog.connect()  # PostgreSQL was down when the shipper started
            if batch.events is None:
                await self._skip_superseded(batch)
                batch.events = [e for e in map(check_event, batch.raws) if e is not None]
                batch.skipped += len(batch.raws) - len(batch.events)
            if self._next is None and not self._check_pending and batch.size >= self.batch:
                # A full batch: more is likely waiting. Read and parse it while PostgreSQL
                # commits this one (the read-ahead is held, and retried, like this batch).
                error: Exception | None = None
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read_ahead)
                    try:
                        await self._write(batch)
                    except Exception as exc:  # let the read-ahead finish, then report
                        error = exc
                if error is not None:
                    raise error
            else:
                await self._write(batch)
            batch.committed = True
        await self._ack(batch)
        self._inflight = None
        self.shipped += len(batch.events or ()) - len(batch.rejected) + batch.superseded
        self.superseded += batch.superseded
        self.skipped += batch.skipped + len(batch.rejected)
        return batch.count

    async def renew(self) -> int:
        """Renew the lease on the entries this shipper holds (the batch being written and the
        one read ahead), so no other shipper takes them over; how many it had lost."""
        held: dict[str, list[str]] = {}
        owner: dict[tuple[str, str], _Batch] = {}
        for batch in (self._inflight, self._next):
            if batch is not None:
                for stream, ids in batch.ids.items():
                    for entry_id, _ in ids:
                        if entry_id not in batch.lost:
                            held.setdefault(stream, []).append(entry_id)
                            owner[stream, entry_id] = batch
        if not held:
            return 0
        calls = [(self._renew_script, [stream], [GROUP, self.consumer, *ids]) for stream, ids in held.items()]
        replies = await run_scripts(self.redis, calls)
        lost = [
            (stream, _text(entry_id))
            for stream, reply in zip(held, replies, strict=True)
            for entry_id in reply
        ]
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
        await self._ensure_groups(keys)
        total = 0
        for key in keys:
            cursor = "0-0"
            while total < self.batch:
                try:
                    # XAUTOCLAIM looks at COUNT * 10 pending entries per call at most: follow
                    # the cursor past live shippers' entries to the dead ones'.
                    reply = await self.redis.execute_command(
                        "XAUTOCLAIM", key, GROUP, self.consumer, self.reclaim_idle_ms, cursor,
                        "COUNT", self.batch - total, "JUSTID",
                    )  # fmt: skip
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        self._ready.discard(key)
                        break
                    raise
                cursor = _text(reply[0])
                total += len(reply[1])
                if cursor == "0-0":
                    break
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
        now = time.monotonic()
        if now - self._keys_at >= self.refresh_interval:
            source = self._source
            assert callable(source)
            found = source()
            keys = await found if inspect.isawaitable(found) else found
            self._keys = [_text(k) for k in keys]
            self._keys_at = now
        return self._keys

    async def _ensure_groups(self, keys: Sequence[str]) -> None:
        for key in keys:
            if key in self._ready:
                continue
            try:
                # Id 0: events written before the first shipper started are shipped too.
                await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._ready.add(key)

    async def _read(self, keys: list[str], block: bool, lenient: bool = True) -> _Batch | None:
        """Read a batch: this consumer's pending entries if it may have some, else new ones.

        The pending read must only happen while no batch is held (held entries are pending
        too); ``lenient=False`` (the read-ahead) never falls back to it.
        """
        self._rotation = (self._rotation + 1) % len(keys)
        order = keys[self._rotation :] + keys[: self._rotation]  # no outbox starves the others
        if self._check_pending:
            if not lenient:
                return None
            streams = await self._xreadgroup(order, "0", None)
            if any(rows for _, rows in streams):
                return self._take(streams)
            self._check_pending = False
        # A read blocks no longer than the reclaim interval: an idle shipper is the one that
        # takes a dead shipper's entries over, and it looks between reads.
        longest = min(self.block_ms, max(1, int(self.reclaim_interval * 1000)))
        block_ms = longest if block and self.block_ms > 0 else None
        streams = await self._xreadgroup(order, ">", block_ms, lenient)
        if not any(rows for _, rows in streams):
            return None
        return self._take(streams)

    async def _xreadgroup(
        self, keys: list[str], start: str, block_ms: int | None, lenient: bool = True
    ) -> list[tuple[str, list[tuple[str, dict[str, str] | None]]]]:
        streams = dict.fromkeys(keys, start)
        # Entries enough for a batch of events: a batched entry holds many.
        count = max(1, min(self.batch, round(self.batch / self._per_entry)))
        for attempt in range(2):
            try:
                try:
                    reply = await self.redis.xreadgroup(
                        GROUP, self.consumer, streams, count=count, block=block_ms
                    )
                except UnicodeDecodeError:
                    if not lenient:
                        raise
                    # Bytes that are not UTF-8 in some entry: the entries are in our pending
                    # list by now; read them again undecoded and decode leniently.
                    log.warning("job-log events with invalid UTF-8, reading them leniently")
                    self._check_pending = True
                    args: list[Any] = ["XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", count]
                    args += ["STREAMS", *keys, *(["0"] * len(keys))]
                    reply = await self.redis.execute_command(*args, NEVER_DECODE=True)
                return _entries(reply)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt:
                    raise
                # The outbox was deleted (and its group with it): create it again.
                log.warning("job-log outbox lost its consumer group, creating it again", error=str(exc))
                self._ready.difference_update(keys)
                await self._ensure_groups(keys)
        raise AssertionError("unreachable")

    def _take(self, streams: list[tuple[str, list[tuple[str, dict[str, str] | None]]]]) -> _Batch:
        """Parse entries up to ``batch`` events; any beyond stay pending and are read next time."""
        ids: dict[str, list[tuple[str, int]]] = {}
        raws: list[RawEvent] = []
        sources: list[str] = []
        skipped = size = count = 0
        for stream, rows in streams:
            taken: list[tuple[str, int]] = []
            for entry_id, fields in rows:
                if size >= self.batch:
                    self._check_pending = True
                    break
                if fields:
                    parsed, garbage, extra = decode_entry(entry_id, fields)
                else:
                    log.warning("job-log entry without data (deleted), acknowledging it", entry=entry_id)
                    parsed, garbage, extra = [], 1, 0
                raws += parsed
                sources += [stream] * len(parsed)
                skipped += garbage
                size += len(parsed) + garbage
                taken.append((entry_id, extra))
            if taken:
                ids[stream] = taken
                count += len(taken)
        if count:
            self._per_entry = max(1.0, size / count)
        return _Batch(ids=ids, raws=raws, streams=sources, count=count, size=size, skipped=skipped)

    async def _skip_superseded(self, batch: _Batch) -> None:
        """Leave out the enqueued events of jobs that have had a newer state event since.

        Every state event after the enqueue carries the job's payload and creation time, so
        the newer one (shipped already, in this batch or still in the outbox) makes the same
        row: one write per job instead of two. While workers are getting through the jobs
        of the batch (a backlog draining), wait for them a little, up to ``HOLD_MAX``
        seconds: the shipper then trails the workers and writes each job once. Jobs nobody
        is getting to are written as they are at once.
        """
        newer = {raw.j for raw in batch.raws if raw.e not in ("enqueued", "log")}
        asked = [
            (stream, raw)
            for stream, raw in zip(batch.streams, batch.raws, strict=True)
            if raw.e == "enqueued" and raw.j not in newer and raw.v is not None and raw.v.isdigit()
        ]
        skip: set[int] = set()
        start = time.monotonic()
        await self._trail(asked, start)
        while asked:
            per_stream: dict[str, list[RawEvent]] = {}
            for stream, raw in asked:
                per_stream.setdefault(stream, []).append(raw)
            still: list[tuple[str, RawEvent]] = []
            moved = await self._moved_on(per_stream)
            for (stream, raws), codes in zip(per_stream.items(), moved, strict=True):
                for raw, code in zip(raws, codes, strict=True):
                    if code == 1:
                        skip.add(id(raw))
                    elif code == 0:
                        still.append((stream, raw))  # (-1: its hash is gone: write what we know)
            elapsed = time.monotonic() - start
            if not still or len(still) == len(asked) or elapsed >= HOLD_MAX:
                break  # done, or nobody is getting to these jobs now
            await anyio.sleep(HOLD_POLL)  # a few still running: they are about to finish
            asked = still
        if skip:
            kept = [(s, raw) for s, raw in zip(batch.streams, batch.raws, strict=True) if id(raw) not in skip]
            batch.streams = [s for s, _ in kept]
            batch.raws = [raw for _, raw in kept]
            batch.superseded += len(skip)

    async def _trail(self, asked: list[tuple[str, RawEvent]], start: float) -> None:
        """Wait, up to ``HOLD_MAX`` seconds from ``start``, while workers are between the
        first and the last of these jobs of each outbox (they run in about the order they
        were enqueued in): a look at two jobs per outbox, not at each of them every time."""
        while time.monotonic() - start < HOLD_MAX:
            ends: dict[str, list[RawEvent]] = {}
            for stream, raw in asked:
                ends.setdefault(stream, [raw, raw])[1] = raw
            if not any(codes == [1, 0] for codes in await self._moved_on(ends)):
                return
            await anyio.sleep(HOLD_POLL)

    async def _moved_on(self, per_stream: dict[str, list[RawEvent]]) -> list[list[int]]:
        """Per outbox, per enqueued event: 1 if its job has had a newer state event since, 0
        if not, -1 if the job's hash is gone (``versions.lua``)."""
        calls = [
            (
                self._versions_script,
                [stream],
                [outbox_job_prefix(stream), *(x for r in raws for x in (r.j, r.v))],
            )
            for stream, raws in per_stream.items()
        ]
        return await run_scripts(self.redis, calls)

    async def _write(self, batch: _Batch) -> None:
        assert batch.events is not None
        try:
            await self.joblog.write(batch.events)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            # PostgreSQL refuses something in the batch itself: retrying would fail forever.
            # Write it in halves to set only the offending events aside.
            log.error("PostgreSQL refused a job-log batch, isolating the bad events", error=str(exc))
            await self._write_bisect(batch, batch.events)

    async def _write_bisect(self, batch: _Batch, events: list[Event]) -> None:
        try:
            await self.joblog.write(events)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(events) == 1:
                event = events[0]
                batch.rejected.append(event.entry_id)
                log.error(
                    "skipping a job-log event PostgreSQL refuses",
                    entry=event.entry_id,
                    event_type=event.type,
                    job_id=event.job_id,
                    error=str(exc),
                )
                return
            middle = len(events) // 2
            await self._write_bisect(batch, events[:middle])
            await self._write_bisect(batch, events[middle:])

    async def _ack(self, batch: _Batch) -> None:
        keys = await self._outboxes()
        acks = [
            (self._ack_script, [stream, outbox_extra(stream)], [GROUP, *(x for pair in ids for x in pair)])
            for stream, ids in batch.ids.items()
        ]
        replies = await run_scripts(self.redis, acks, lambda pipe: self._queue_lengths(pipe, keys))
        self._observe_lengths(replies[len(acks) :])

    async def _measure(self, keys: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self._queue_lengths(pipe, keys)
            replies = await pipe.execute(raise_on_error=False)
        self._observe_lengths(replies)

    @staticmethod
    def _queue_lengths(pipe: Any, keys: list[str]) -> None:
        for key in keys:
            pipe.xlen(key)
            pipe.get(outbox_extra(key))

    def _observe_lengths(self, replies: list[Any]) -> None:
        """The backlog in events, from the replies of :meth:`_queue_lengths`."""
        self._observe(sum(outbox_events(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)))

    def _observe(self, backlog: int) -> None:
        self.backlog = backlog
        if backlog > self.alarm_length:
            now = time.monotonic()
            if now - self._last_alarm >= ALARM_INTERVAL:
                self._last_alarm = now
                log.error(
                    "job-log outbox backlog over the alarm threshold: is PostgreSQL or the shipper down?",
                    backlog=backlog,
                    alarm_length=self.alarm_length,
                )
