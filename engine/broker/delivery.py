"""Delivering jobs to workers: group, read, start, finish, bury, renew, reclaim, promote."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from redis.exceptions import ResponseError

from engine.broker import connection
from engine.broker.base import GatewayBase
from engine.broker.reads import read_lanes
from engine.broker.scripts import bindings
from engine.broker.scripts.bindings import Throttle
from engine.broker.scripts.runner import script_failed
from engine.core.errors import ScriptCode
from engine.core.keys import GROUP
from engine.core.priority import lane_queue
from engine.core.transitions import Outcome, Retention, Started

# The field under which reclaim() reports how often an entry was delivered (not a field of
# the entry: entries hold j, t, p and one-letter options, see enqueue.lua).
DELIVERIES = "#deliveries"

Entry = tuple[str, str, dict[str, str]]
"""(queue, entry id, fields) of a stream entry read or reclaimed."""


class StartBatch(list[Started]):
    """The jobs start.lua started; ``held``: entries given to it that flow control holds
    back (still pending to this worker, untouched); ``throttles``: what it said of each
    queue with flow control (engine.core.flow)."""

    def __init__(self, started: Sequence[Started] = ()) -> None:
        super().__init__(started)
        self.held: list[Entry] = []
        self.throttles: dict[str, Throttle] = {}

    def merge(self, other: StartBatch) -> None:
        self.extend(other)
        self.held += other.held
        self.throttles.update(other.throttles)


def runnable_entry(queue: str, entry_id: str, fields: dict[str, str]) -> Started | None:
    """A fresh job's entry holds everything a worker needs to run it (``enqueue.lua``), so
    an idle worker can start it at once and confirm it with ``start.lua`` meanwhile; None
    for other entries (retried, replayed, garbage), which must go through ``start.lua``."""
    if not fields.get("j") or not fields.get("t") or "p" not in fields or "g" in fields or "x" in fields:
        # "g": enqueued while the queue had flow control, "x": it may have expired (see
        # enqueue.lua): only start.lua may start it.
        return None
    return entry_job(queue, entry_id, fields, confirmed=anyio.Event())


def entry_job(queue: str, entry_id: str, fields: dict[str, str], confirmed: Any = None) -> Started:
    """The job a fresh job's entry describes, on its first attempt (enqueue.lua)."""
    # The creation time is the entry id's (enqueue.lua).
    options = ("1", fields.get("o"), fields.get("m"), fields.get("k"), entry_id.split("-", 1)[0])
    return Started.parse(
        queue, entry_id, fields.get("j", ""), fields.get("t"), fields.get("p"), options, confirmed=confirmed
    )


def _given(fields: dict[str, str]) -> list[str]:
    """An entry's fields as start.lua takes them (flat), when they describe a fresh job: it
    then need not read them again (none: it reads them if need be)."""
    if "t" not in fields or "p" not in fields:
        return []
    return [x for name, value in fields.items() if name != DELIVERIES for x in (name, value)]


class Delivery(GatewayBase):
    """The gateway's worker side (a mixin of :class:`~engine.broker.gateway.Gateway`)."""

    async def ensure_group(self, queue: str) -> None:
        """The consumer group of a queue (or partition), and of each lane it is known to have."""
        await self.remember_queue(lane_queue(queue))
        for name in self.lanes_of(queue):
            try:
                # Id 0: a group created after jobs were added still delivers them.
                await self.redis.xgroup_create(self.keys.queue(name).stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def refresh_lanes(self, queues: Sequence[str]) -> list[str]:
        """Learn which priority lanes ``queues`` have (one pipeline; enqueue.lua records a
        lane and creates its group when its first job comes): the queues whose lanes changed."""
        changed = []
        for queue, found in (await read_lanes(self.redis, self.keys, queues)).items():
            lanes = tuple(found)
            if lanes != self.lanes_of(queue):
                changed.append(queue)
                if len(lanes) > 1:
                    self.lanes[queue] = lanes
                else:
                    self.lanes.pop(queue, None)
        return changed

    def read_groups(self, queues: Sequence[str]) -> list[list[str]]:
        """The queues one blocking read can serve together: all of them on one server, each
        by itself in a cluster (a read cannot span slots, and every queue has its own)."""
        return [[q] for q in queues] if self.cluster else [list(queues)]

    async def read(
        self, queues: Sequence[str], consumer: str, count: int, block_ms: int | None
    ) -> list[Entry]:
        """XREADGROUP new entries of several queues (one in a cluster: see
        :meth:`read_groups`); [(queue, entry id, fields)]."""
        names = [name for q in queues for name in self.lanes_of(q)]
        streams = [self.keys.queue(name).stream for name in names]
        ids = [">"] * len(streams)

        async def through_redis_py() -> Any:
            return await connection.xreadgroup(
                self.redis, GROUP, consumer, streams, ids, count=count, block_ms=block_ms
            )

        out: list[Entry] = []
        by_stream = dict(zip(streams, names, strict=True))
        if self.reader is None or not block_ms:
            reply = await through_redis_py()
        else:
            # The reply as hiredis reads it: fields as a flat list (redis-py's, a dict).
            command = connection.xreadgroup_command(
                GROUP, consumer, streams, ids, count=count, block_ms=block_ms
            )
            reply = await self.reader.request(command, through_redis_py, waits_s=block_ms / 1000, alone=True)
        if not reply:
            return out
        for stream, entries in reply:
            queue = by_stream[stream]
            for entry_id, fields in entries:
                if isinstance(fields, list):
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
                out.append((queue, entry_id, fields or {}))
        return out

    async def fetch(self, queues: Sequence[str], worker_id: str, count: int) -> StartBatch:
        """Read up to ``count`` new entries per queue and mark them active, in one round trip
        (no blocking: an empty answer means the streams are drained, or flow control holds
        them back: see ``throttles``)."""
        return await self.start(worker_id, {queue: ["read", count] for queue in queues})

    async def start_entries(self, worker_id: str, entries: Sequence[Entry]) -> StartBatch:
        """Mark entries already read (blocking read, reclaim) active.

        Should start.lua fail on some entry, the entries are started one by one and the one
        it fails on is buried (:meth:`bury`) with the reason: the others start as usual."""
        try:
            return await self._start_entries(worker_id, entries)
        except ResponseError as exc:
            if not script_failed(exc):
                raise
            batch = StartBatch()
            for queue, entry_id, fields in entries:
                try:
                    batch.merge(await self._start_entries(worker_id, [(queue, entry_id, fields)]))
                except ResponseError as alone:
                    if not script_failed(alone):
                        raise
                    await self.bury(queue, entry_id, fields.get("j", ""), f"could not start: {alone}")
            return batch

    async def _start_entries(self, worker_id: str, entries: Sequence[Entry]) -> StartBatch:
        per_queue: dict[str, list[Any]] = {}
        deliveries: dict[tuple[str, str], int] = {}  # by queue too: streams share entry ids
        for queue, entry_id, fields in entries:
            per_queue.setdefault(queue, []).append((entry_id, fields.get("j", ""), fields))
            if DELIVERIES in fields:
                deliveries[queue, entry_id] = int(fields[DELIVERIES])
        batch = await self.start(worker_id, per_queue)
        if deliveries:
            for job in batch:
                job.deliveries = deliveries.get((job.queue, job.entry_id), 1)
        if batch.held:
            given = {(queue, entry_id): fields for queue, entry_id, fields in entries}
            batch.held = [(queue, entry_id, given[queue, entry_id]) for queue, entry_id, _ in batch.held]
        return batch

    async def start(self, worker_id: str, per_queue: dict[str, list[Any]]) -> StartBatch:
        """Run start.lua per queue (all in one round trip): per queue, a list of (entry id,
        job id, the entry's fields as read or {}), or ``["read", count]`` to read up to count
        new entries."""
        batch = StartBatch()
        if not per_queue:
            return batch
        calls = []
        lanes: dict[str, tuple[str, ...]] = {}
        given: dict[tuple[str, str], dict[str, str]] = {}  # (queue, entry id) -> its fields
        for queue, flat in per_queue.items():
            qk = self.keys.queue(queue)
            reading = len(flat) == 2 and flat[0] == "read"
            pairs = []
            if not reading:
                for entry_id, job_id, fields in flat:
                    pairs.append((entry_id, job_id, _given(fields)))
                    given[queue, entry_id] = fields
            if reading and queue in self.lanes:
                lanes[queue] = self.lanes[queue]
            calls.append(
                bindings.start(
                    stream=qk.stream,
                    dlq=qk.dlq,
                    flow=qk.flow,
                    running=qk.running,
                    rate=qk.rate,
                    waiting=qk.waiting,
                    joblog_flag=qk.joblog_flag,
                    job_prefix=qk.job_prefix,
                    lease_ms=self.lease_ms,
                    worker=worker_id,
                    entries=pairs,
                    read=int(flat[1]) if reading else None,
                    lanes=[self.keys.queue(name).stream for name in lanes.get(queue, ())],
                )
            )
        replies = await self.scripts.run_many(calls)
        for queue, rows in zip(per_queue, replies, strict=True):
            if rows.throttle is not None:
                batch.throttles[lane_queue(queue)] = rows.throttle
            names = lanes.get(queue)
            for row in rows:
                name = names[row.lane - 1] if names and row.lane else queue
                if row.fresh:
                    batch.append(entry_job(name, row.entry_id, given[queue, row.entry_id]))
                elif row.run:
                    batch.append(
                        Started.parse(name, row.entry_id, row.job_id, row.task, row.payload, row.options)
                    )
                elif row.held:
                    batch.held.append((name, row.entry_id, {"j": row.job_id}))
                elif row.expired:
                    job = Started.parse(name, row.entry_id, row.job_id, row.task, "", ("1", "", "", "", ""))
                    job.expired = True
                    batch.append(job)
        return batch

    async def finish(self, outcomes: Sequence[Outcome], retention: Retention) -> int:
        """Record outcomes and XACK their entries: one script per queue, one round trip.

        Should the script fail on some outcome (data no check foresaw), the batch is split
        until that outcome stands alone, and it is buried (:meth:`bury`): every other
        outcome is recorded, and the call never fails the same way twice."""
        try:
            return await self._finish(outcomes, retention)
        except ResponseError as exc:
            if not script_failed(exc):
                raise
            if len(outcomes) == 1:
                (outcome,) = outcomes
                reason = f"could not record its outcome ({outcome.kind}): {exc}"
                return await self.bury(outcome.queue, outcome.entry_id, outcome.job_id, reason)
            half = len(outcomes) // 2
            return await self.finish(outcomes[:half], retention) + await self.finish(
                outcomes[half:], retention
            )

    async def _finish(self, outcomes: Sequence[Outcome], retention: Retention) -> int:
        per_queue: dict[str, list[Outcome]] = {}
        for outcome in outcomes:
            per_queue.setdefault(outcome.queue, []).append(outcome)
        now = self.now_ms()
        sharded = await self.sharded_pubsub()
        calls = []
        for queue, batch in per_queue.items():
            qk = self.keys.queue(queue)
            calls.append(
                bindings.finish(
                    stream=qk.stream,
                    delayed=qk.delayed,
                    dlq=qk.dlq,
                    stats=qk.stats,
                    outbox=qk.outbox,
                    joblog_flag=qk.joblog_flag,
                    throughput=qk.throughput(now // 60_000),
                    outbox_extra=qk.outbox_extra,
                    running=qk.running,
                    waiters=qk.waiters,
                    cancels=qk.cancels,
                    logged=qk.logged,
                    job_prefix=qk.job_prefix,
                    now_ms=now,
                    completed_retention_ms=retention.completed_ms,
                    failed_retention_ms=retention.failed_ms,
                    done_channel_prefix=qk.done_channel(""),
                    wake_channel=qk.wake_channel,
                    queue=queue,
                    sharded=sharded,
                    outcomes=batch,
                )
            )
        replies = await self.scripts.run_many(calls)
        return sum(sum(recorded) for recorded in replies)

    async def bury(self, queue: str, entry_id: str, job_id: str, reason: str) -> int:
        """Acknowledge an entry that cannot be started or recorded, leaving a dead letter
        with ``reason`` (bury.lua); 1 if it was still pending."""
        qk = self.keys.queue(queue)
        code = await self.scripts.run(
            bindings.bury(
                stream=qk.stream,
                dlq=qk.dlq,
                stats=qk.stats,
                waiting=qk.waiting,
                job_prefix=qk.job_prefix,
                entry_id=entry_id,
                job_id=job_id,
                reason=reason,
            )
        )
        return int(code is ScriptCode.DONE)

    async def unblock_reads(self) -> int:
        """End this process's blocking reads at once, delivering nothing (see
        :func:`engine.broker.connection.unblock_reads`): how a stopping worker stops fetching
        without waiting out BLOCK and without stranding what a cancelled read got."""
        return await connection.unblock_reads(self.redis)

    async def renew(self, consumer: str, entries: dict[str, list[str]]) -> list[tuple[str, str]]:
        """Renew the leases of in-flight entries per queue; returns (queue, entry) pairs lost."""
        queues = [q for q, ids in entries.items() if ids]
        replies = await self.scripts.run_many(
            [
                bindings.renew(
                    stream=self.keys.queue(q).stream,
                    running=self.keys.queue(q).running,
                    consumer=consumer,
                    lease_ms=self.lease_ms,
                    entry_ids=entries[q],
                )
                for q in queues
            ]
        )
        return [(queue, entry) for queue, lost in zip(queues, replies, strict=True) for entry in lost]

    async def reclaim(self, queue: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """XAUTOCLAIM entries idle past ``min_idle_ms``; same shape as :meth:`read`."""
        qk = self.keys.queue(queue)
        claimed = await self.scripts.run(
            bindings.reclaim(
                stream=qk.stream, stats=qk.stats, consumer=consumer, min_idle_ms=min_idle_ms, count=count
            )
        )
        return [
            (queue, c.entry_id, {"j": c.job_id, DELIVERIES: str(c.deliveries)} if c.job_id else {})
            for c in claimed
        ]

    async def promote(self, queues: Sequence[str], limit: int = 1000) -> dict[str, tuple[int, int | None]]:
        """Move due delayed jobs of each queue back to its stream, the scripts of all of them
        in one pipeline (a round trip per node): queue -> (how many, due ms of the next or None)."""
        now = self.now_ms()
        replies = await self.scripts.run_many(
            [
                bindings.promote(
                    delayed=qk.delayed, stream=qk.stream, job_prefix=qk.job_prefix, now_ms=now, limit=limit
                )
                for qk in map(self.keys.queue, queues)
            ]
        )
        return {queue: (p.moved, p.next_due_ms) for queue, p in zip(queues, replies, strict=True)}
