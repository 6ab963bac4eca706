"""The gateway: the one object the services hold to talk to Redis, composed of its roles.

:class:`Gateway` puts together :mod:`~engine.broker.producing` (enqueue),
:mod:`~engine.broker.delivery` (the worker's transitions) and :mod:`~engine.broker.admin`
(operations, locks, announcements) over one client (:mod:`~engine.broker.connection`) and
the typed script bindings (:mod:`~engine.broker.scripts.bindings`,
:mod:`~engine.broker.scripts.operations`); the plain reads around
them stay here until the read side (``reads``) takes them. Nothing here knows about tasks
or Python callables. The names below the imports are re-exported for the modules that
import them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.broker.admin import Admin
from engine.broker.connection import POOL_WAIT_S
from engine.broker.delivery import DELIVERIES, Delivery, runnable_entry
from engine.broker.outbox import Outbox
from engine.broker.producing import Coalescer, Producing
from engine.broker.reads import Reads
from engine.broker.scripts.runner import run_scripts, script_failed
from engine.core.clock import Clock
from engine.core.errors import FenceRejected, ScriptCode
from engine.core.keys import GROUP
from engine.core.model import decode_log_line
from engine.core.priority import job_lane, lanes_in_order
from engine.core.transitions import Fence, NewJob, Outcome, Retention, Started
from engine.core.urls import REDIS_SCHEMES, check_redis_url, mask_url

__all__ = [
    "DELIVERIES",
    "POOL_WAIT_S",
    "REDIS_SCHEMES",
    "Fence",
    "FenceRejected",
    "Gateway",
    "NewJob",
    "Outcome",
    "Retention",
    "ScriptCode",
    "Started",
    "check_redis_url",
    "mask_url",
    "run_scripts",
    "runnable_entry",
    "script_failed",
]


class Gateway(Producing, Delivery, Admin):
    """One Redis connection pool and the engine's scripts, for one namespace."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        connect_timeout: float = 5.0,
        max_connections: int = 100,
        clock: Clock | None = None,
        cluster: bool | None = None,
        lease_ms: int = 30_000,
    ) -> None:
        super().__init__(
            url,
            namespace,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            clock=clock,
            cluster=cluster,
            lease_ms=lease_ms,
        )
        self.reads = Reads(self.redis, self.keys)
        self.coalescer = Coalescer(self._enqueue_single, self._enqueue_mixed)

    def outbox(self) -> Outbox:
        """The job log's side of Redis (the shipper's reads, leases and acknowledgements)."""
        return Outbox(self.redis, self.keys)

    # -- reads ------------------------------------------------------------------------------

    async def dlq_entries(
        self, queue: str, count: int | None = None, newest_first: bool = True
    ) -> list[tuple[str, dict[str, str]]]:
        key = self.keys.queue(queue).dlq
        if newest_first:
            return list(await self.redis.xrevrange(key, count=count))
        return list(await self.redis.xrange(key, count=count))

    async def dlq_count(self, queue: str) -> int:
        """How many dead letters the queue holds."""
        return int(await self.redis.xlen(self.keys.queue(queue).dlq))

    async def read_logs(self, queue: str, job_id: str) -> list[dict[str, Any]]:
        """A job's log lines (``ctx.log``), oldest first."""
        lines = await self.redis.lrange(self.keys.queue(queue).logs(job_id), 0, -1)
        return [decode_log_line(line) for line in lines]

    async def job_hashes(self, queue: str, job_ids: Sequence[str]) -> list[dict[str, str]]:
        """The hash of each job ({} when there is none), a fresh job's (one that has not
        started: it has none yet, see enqueue.lua) as it would be, read from its entry."""
        qk = self.keys.queue(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(qk.job(job_id))
            hashes: list[dict[str, str]] = await pipe.execute()
        if any(not h for h in hashes):
            await self._fill_fresh(queue, job_ids, hashes)
        await self._fill_payloads(queue, job_ids, hashes)
        return hashes

    async def _fill_fresh(self, queue: str, job_ids: Sequence[str], hashes: list[dict[str, str]]) -> None:
        qk = self.keys.queue(queue)
        todo = [n for n, h in enumerate(hashes) if not h]
        async with self.redis.pipeline(transaction=False) as pipe:
            for n in todo:
                pipe.hget(qk.waiting, job_ids[n])
                # Started since the HGETALL: out of the index, and the hash has it now.
                pipe.hgetall(qk.job(job_ids[n]))
            replies = await pipe.execute()
        fresh: list[tuple[int, str, str]] = []
        for i, n in enumerate(todo):
            indexed, hashes[n] = replies[2 * i], replies[2 * i + 1]
            if indexed and not hashes[n]:
                entry_id, _, priority = indexed.partition(" ")
                fresh.append((n, entry_id, priority))
        if not fresh:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for n, entry_id, priority in fresh:
                pipe.xrange(self.keys.queue(job_lane(queue, {"pr": priority})).stream, entry_id, entry_id)
                pipe.hgetall(qk.job(job_ids[n]))  # in case it started meanwhile, and finished
            replies = await pipe.execute()
        for i, (n, entry_id, priority) in enumerate(fresh):
            entries, hashes[n] = replies[2 * i], replies[2 * i + 1]
            if entries and not hashes[n]:
                hashes[n] = fresh_job_hash(entry_id, priority, entries[0][1])

    async def _fill_payloads(self, queue: str, job_ids: Sequence[str], hashes: list[dict[str, str]]) -> None:
        """Add the payload of jobs that have not started: it is still in their stream entry."""
        pairs = zip(job_ids, hashes, strict=True)
        todo = [(i, h) for i, h in pairs if h and "payload" not in h and h.get("msg")]
        if not todo:
            return
        qk = self.keys.queue(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, h in todo:
                pipe.xrange(self.keys.queue(job_lane(queue, h)).stream, h["msg"], h["msg"])
                # Started and finished since HGETALL: the entry is gone, the hash has it.
                pipe.hget(qk.job(job_id), "payload")
            replies = await pipe.execute()
        for n, (_, h) in enumerate(todo):
            entries, payload = replies[2 * n], replies[2 * n + 1]
            if entries and "p" in entries[0][1]:
                payload = entries[0][1]["p"]
            if payload is not None:
                h["payload"] = payload

    async def job_hash(self, queue: str, job_id: str) -> dict[str, str] | None:
        return (await self.job_hashes(queue, [job_id]))[0] or None

    async def queues(self) -> list[str]:
        return sorted(await self.redis.smembers(self.keys.queues))

    async def recorded_partitions(self) -> dict[str, str]:
        """Queue name -> partition count (as stored), for queues declared partitioned."""
        return dict(await self.redis.hgetall(self.keys.partitions))

    async def record_partitions(self, queue: str, count: int) -> str:
        """Record ``queue``'s partition count unless one is recorded; returns the recorded one."""
        await self.redis.hsetnx(self.keys.partitions, queue, count)
        return str(await self.redis.hget(self.keys.partitions, queue))

    async def find_queue(self, job_id: str) -> str | None:
        """Which queue holds this job id (ids do not name their queue)."""
        queues = await self.queues()
        if not queues:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.exists(self.keys.queue(q).job(job_id))
                pipe.hexists(self.keys.queue(q).waiting, job_id)
            found = await pipe.execute()
        for n, q in enumerate(queues):
            if found[2 * n] or found[2 * n + 1]:
                return q
        return None

    async def queue_stats(self, queue: str) -> dict[str, int]:
        return (await self.queues_stats([queue]))[queue]

    async def queues_stats(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        """:meth:`queue_stats` of many queues in one pipeline (one round trip per node)."""
        if not queues:
            return {}
        now = self.now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                qk = self.keys.queue(queue)
                pipe.xlen(qk.stream)
                pipe.xpending(qk.stream, GROUP)
                pipe.get(qk.acked)
                pipe.zcard(qk.delayed)
                pipe.xlen(qk.dlq)
                pipe.hgetall(qk.stats)
                pipe.hgetall(qk.flow)
                pipe.zcount(qk.running, now, "+inf")
                pipe.get(qk.rate)
                pipe.smembers(qk.lanes)
            replies = await pipe.execute(raise_on_error=False)
        out: dict[str, dict[str, int]] = {}
        lanes: dict[str, list[str]] = {}
        for i, queue in enumerate(queues):
            mine = replies[10 * i : 10 * i + 10]
            # One reply may be an error (XPENDING of a queue that has no stream yet); all of
            # them is a server that refused the lot (a MOVED, a READONLY): not a queue of zeros.
            if all(isinstance(reply, Exception) for reply in mine):
                raise mine[0]
            out[queue] = _counts(*mine[:6])
            if not isinstance(mine[9], Exception) and len(found := lanes_in_order(queue, mine[9])) > 1:
                lanes[queue] = [name for name in found if name != queue]
        if lanes:  # a queue with priority lanes: their jobs wait and run too
            await self._add_lanes(lanes, out)
        for i, queue in enumerate(queues):
            out[queue].update(_flow_counts(out[queue]["waiting"], now, *replies[10 * i + 6 : 10 * i + 9]))
        return out

    async def _add_lanes(self, lanes: dict[str, list[str]], out: dict[str, dict[str, int]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for names in lanes.values():
                for name in names:
                    pipe.xlen(self.keys.queue(name).stream)
                    pipe.xpending(self.keys.queue(name).stream, GROUP)
                    pipe.get(self.keys.queue(name).acked)
            replies = iter(await pipe.execute(raise_on_error=False))
        for queue, names in lanes.items():
            for _ in names:
                counts = _counts(next(replies), next(replies), next(replies), 0, 0, {})
                out[queue]["waiting"] += counts["waiting"]
                out[queue]["active"] += counts["active"]

    async def flow_settings(self, queues: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each queue's flow hash (engine.core.flow): paused, concurrency, rate..."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.hgetall(self.keys.queue(queue).flow)
            replies = await pipe.execute(raise_on_error=False)
        return {q: r if isinstance(r, dict) else {} for q, r in zip(queues, replies, strict=True)}


# A fresh job's entry field -> the field of its hash (enqueue.lua, start.lua).
_ENTRY_FIELDS = {"t": "task", "p": "payload", "o": "timeout", "m": "max_attempts", "k": "tick"}
_ENTRY_FIELDS |= {"x": "exp", "c": "ck"}


def fresh_job_hash(entry_id: str, priority: str, entry: dict[str, str]) -> dict[str, str]:
    """The hash a fresh job will have once it starts, as far as it is known before: from its
    stream entry (the creation time is the entry id's)."""
    h = {"status": "waiting", "attempts": "0", "msg": entry_id, "created": entry_id.partition("-")[0]}
    h.update((_ENTRY_FIELDS[name], value) for name, value in entry.items() if name in _ENTRY_FIELDS)
    if priority:
        h["pr"] = priority
    return h


def _counts(length: Any, pending: Any, acked: Any, delayed: Any, dlq: Any, counters: Any) -> dict[str, int]:
    active = pending["pending"] if isinstance(pending, dict) else 0
    counts = counters if isinstance(counters, dict) else {}
    # Acknowledged entries linger in the stream until whole nodes of them go (finish.lua).
    lingering = int(acked) if isinstance(acked, str) and acked.isdigit() else 0
    return {
        "waiting": max(0, int(length) - active - lingering) if isinstance(length, int) else 0,
        "active": active,
        "delayed": int(delayed) if isinstance(delayed, int) else 0,
        "completed": int(counts.get("completed", 0)),
        "failed": int(counts.get("failed", 0)),
        "dlq": int(dlq) if isinstance(dlq, int) else 0,
        "retried": int(counts.get("retried", 0)),
        "cancelled": int(counts.get("cancelled", 0)),
        "enqueued": int(counts.get("enqueued", 0)),
        "reclaimed": int(counts.get("reclaimed", 0)),
        "replayed": int(counts.get("replayed", 0)),
    }


def _flow_counts(waiting: int, now_ms: int, settings: Any, running: Any, due: Any) -> dict[str, int]:
    """paused (0/1), concurrency (0: none), running (slots held), throttled (waiting jobs
    that flow control holds back right now: all of them while it binds)."""
    fields = settings if isinstance(settings, dict) else {}
    paused = fields.get("paused") == "1"
    slots = _whole(fields.get("concurrency"))
    held = int(running) if isinstance(running, int) else 0
    binding = paused or (slots is not None and held >= slots)
    interval = _real(fields.get("rate_interval"))
    next_due = _real(due)
    if interval and next_due is not None:
        burst = _whole(fields.get("rate_burst")) or 1
        binding = binding or next_due - now_ms > (burst - 1) * interval
    return {
        "paused": int(paused),
        "concurrency": int(slots or 0),
        "running": held,
        "throttled": waiting if binding else 0,
    }


def _whole(text: Any) -> int | None:
    """A field written as a whole number, or None (unset, or garbage someone wrote)."""
    try:
        return None if text is None else int(text)
    except (TypeError, ValueError):
        return None


def _real(text: Any) -> float | None:
    try:
        return None if text is None else float(text)
    except (TypeError, ValueError):
        return None
