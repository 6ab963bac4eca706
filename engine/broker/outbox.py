"""The job log's Redis side: the outbox streams the shipper reads, leases, acknowledges and measures.

Every state change of a job appends an event to its queue's outbox stream (see
``engine/broker/scripts/*.lua``); :class:`engine.history.shipper.Shipper` drains them with
the consumer group ``shipper`` through one :class:`Outbox`, which holds the only redis
client the shipper uses. It knows nothing of PostgreSQL or of the events' meaning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from redis.exceptions import NoScriptError, ResponseError

from engine.broker import scripts
from engine.broker.connection import is_cluster, xreadgroup
from engine.broker.scripts import operations
from engine.broker.scripts.runner import Lua, run_scripts
from engine.core.keys import Keys, outbox_extra, outbox_job_prefix, outbox_waiting

__all__ = ["GROUP", "Delivery", "Outbox", "Streams", "outbox_events", "outbox_key", "queue_outboxes"]

GROUP = "shipper"
"""The consumer group every shipper reads the outboxes with."""

Streams = list[tuple[str, list[tuple[str, dict[str, str] | None]]]]
"""Entries read, per outbox: [(stream, [(entry id, fields, or None for a deleted entry)])]."""


def outbox_key(namespace: str, queue: str) -> str:
    """The outbox stream of a queue: ``{ns}:{queue}:outbox`` (the queue is the hash tag)."""
    return Keys(namespace).queue(queue).outbox


def outbox_events(length: Any, extra: Any) -> int:
    """An outbox's backlog in events, from the replies of XLEN on it and GET on its count of
    events beyond one per entry (:func:`engine.core.keys.outbox_extra`). Anything else (an error,
    a count someone overwrote) counts as 0: it is only a measurement."""
    events = length if isinstance(length, int) else 0
    if isinstance(extra, str | bytes) and extra.isdigit() and extra.isascii():
        events += int(extra)
    return events


def queue_outboxes(redis: Any, namespace: str) -> Callable[[], Awaitable[list[str]]]:
    """An ``outboxes`` callable for the shipper: the outbox of every queue the app knows."""
    return Outbox(redis, Keys(namespace)).streams


@dataclass(frozen=True, slots=True)
class Delivery:
    """What :meth:`Outbox.read` got, and what it had to do on the way."""

    streams: Streams
    regrouped: bool = False
    """An outbox had lost its consumer group (it was deleted) and got a new one."""
    lenient: bool = False
    """Some entry held bytes that are not UTF-8: the pending list was read again undecoded
    and decoded leniently, so it may hold more entries than ``streams`` shows."""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _entries(reply: Any) -> Streams:
    """XREADGROUP's reply as :data:`Streams`, RESP2 or RESP3, str or bytes."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    out: Streams = []
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


class Outbox:
    """The outbox streams of one namespace, read with the consumer group ``shipper``.

    ``keys`` is needed only by :meth:`streams`; a shipper given its stream keys can do
    without. The groups known to exist are remembered, so each is created once.
    """

    def __init__(self, redis: Any, keys: Keys | None = None) -> None:
        # redis-py's hints are unions of bytes/str that fight decode_responses; typed loosely.
        self.redis: Any = redis
        self.keys = keys
        self._ack = Lua(scripts.source("ack"))
        self._versions = Lua(scripts.source("versions"))
        self._renew = Lua(scripts.source("renew"))
        self._ready: set[str] = set()  # outboxes whose group exists

    async def streams(self) -> list[str]:
        """The outbox of every queue the app knows, sorted."""
        if self.keys is None:
            raise RuntimeError("this Outbox was built without keys: pass the stream keys instead")
        names = await self.redis.smembers(self.keys.queues)
        return sorted(self.keys.queue(_text(n)).outbox for n in names)

    async def ensure_groups(self, keys: Sequence[str]) -> None:
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

    async def read(
        self,
        consumer: str,
        keys: Sequence[str],
        *,
        pending: bool,
        count: int,
        block_ms: int | None,
        lenient: bool,
    ) -> Delivery:
        """XREADGROUP up to ``count`` entries per outbox: ``consumer``'s own pending ones
        (``pending``) or new ones, blocking up to ``block_ms`` (None: not at all).

        An outbox that lost its group gets it back and is read again. Entries whose bytes
        are not UTF-8 raise UnicodeDecodeError unless ``lenient``; then the pending list is
        read again undecoded (they are in it by now) and decoded with replacements.
        """
        if is_cluster(self.redis) and len(keys) > 1:
            return await self._read_each(consumer, keys, pending, count, block_ms, lenient)
        ids = ["0" if pending else ">"] * len(keys)
        regrouped = False
        for attempt in range(2):
            try:
                try:
                    reply = await xreadgroup(
                        self.redis, GROUP, consumer, keys, ids, count=count, block_ms=block_ms
                    )
                except UnicodeDecodeError:
                    if not lenient:
                        raise
                    # The pending list again, undecoded: the entries are in it by now.
                    pending_ids = ["0"] * len(keys)
                    reply = await xreadgroup(
                        self.redis,
                        GROUP,
                        consumer,
                        keys,
                        pending_ids,
                        count=count,
                        block_ms=None,
                        NEVER_DECODE=True,
                    )
                    return Delivery(_entries(reply), regrouped, lenient=True)
                return Delivery(_entries(reply), regrouped)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt:
                    raise
                self._ready.difference_update(keys)
                await self.ensure_groups(keys)
                regrouped = True
        raise AssertionError("unreachable")

    async def _read_each(
        self,
        consumer: str,
        keys: Sequence[str],
        pending: bool,
        count: int,
        block_ms: int | None,
        lenient: bool,
    ) -> Delivery:
        """:meth:`read` in a cluster, where one read cannot span the outboxes' slots: each
        outbox without blocking, then, if none had anything, the wait a blocking read had."""
        parts = [
            await self.read(consumer, [key], pending=pending, count=count, block_ms=None, lenient=lenient)
            for key in keys
        ]
        streams = [stream for part in parts for stream in part.streams if stream[1]]
        if not streams and block_ms:
            await anyio.sleep(block_ms / 1000)
        return Delivery(
            streams, any(part.regrouped for part in parts), lenient=any(part.lenient for part in parts)
        )

    async def renew(self, consumer: str, held: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
        """Renew ``consumer``'s lease on the entries it holds, per outbox (``renew.lua``, the
        workers' script); the (stream, entry id) pairs another consumer has taken over."""
        streams = [stream for stream, ids in held.items() if ids]
        if not streams:
            return []
        # No concurrency slots (KEYS[2]) and so no lease length (ARGV[3]) for outbox entries.
        calls = [(self._renew, [stream], [GROUP, consumer, 0, *held[stream]]) for stream in streams]
        replies = await run_scripts(self.redis, calls)
        return [
            (stream, _text(entry_id))
            for stream, reply in zip(streams, replies, strict=True)
            for entry_id in reply
        ]

    async def claim_idle(self, consumer: str, keys: Sequence[str], min_idle_ms: int, limit: int) -> int:
        """Take over, for ``consumer``, up to ``limit`` entries other consumers have not
        renewed for ``min_idle_ms`` (XAUTOCLAIM); how many."""
        await self.ensure_groups(keys)
        total = 0
        for key in keys:
            cursor = "0-0"
            while total < limit:
                try:
                    # XAUTOCLAIM looks at COUNT * 10 pending entries per call at most: follow
                    # the cursor past live shippers' entries to the dead ones'.
                    reply = await self.redis.execute_command(
                        "XAUTOCLAIM", key, GROUP, consumer, min_idle_ms, cursor,
                        "COUNT", limit - total, "JUSTID",
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
        return total

    async def moved_on(self, asked: Mapping[str, Sequence[tuple[str, str]]]) -> list[list[int]]:
        """Per outbox, per (job id, version) asked: 1 if the job has had a newer state event
        since, 0 if not, -1 if its hash is gone (``versions.lua``); one round trip."""
        calls = [
            operations.versions(
                outbox=stream,
                waiting=outbox_waiting(stream),
                job_prefix=outbox_job_prefix(stream),
                jobs=pairs,
            )
            for stream, pairs in asked.items()
        ]
        return await run_scripts(self.redis, [(self._versions, call.keys, call.args) for call in calls])

    async def ack(self, done: Mapping[str, Sequence[tuple[str, int]]], measure: Sequence[str]) -> int:
        """Acknowledge and delete committed entries, given per outbox as (entry id, events it
        holds beyond its first) (``ack.lua``), and measure the backlog of ``measure`` in the
        same round trip: the events in those outboxes afterwards."""
        acks = [
            operations.ack(outbox=stream, outbox_extra=outbox_extra(stream), group=GROUP, entries=ids)
            for stream, ids in done.items()
        ]
        calls = [(self._ack, call.keys, call.args) for call in acks]
        # run_scripts' pipeline, by hand: it must know whether a call was rerun.
        async with self.redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            _queue_lengths(pipe, measure)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        reloaded = False
        for reply, (script, keys, args) in zip(replies, calls, strict=False):
            if isinstance(reply, NoScriptError):
                await script(self.redis, keys, args)  # the server lost it: this loads it again
                reloaded = True
            elif isinstance(reply, Exception):
                raise reply
        if reloaded:
            # The lengths were read before the rerun acknowledgement deleted anything.
            return await self.backlog(measure)
        return _backlog(replies[len(calls) :])

    async def backlog(self, keys: Sequence[str]) -> int:
        """The events waiting in these outboxes (their length plus what batched entries hold
        beyond one event each)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            _queue_lengths(pipe, keys)
            replies = await pipe.execute(raise_on_error=False)
        return _backlog(replies)


def _queue_lengths(pipe: Any, keys: Sequence[str]) -> None:
    for key in keys:
        pipe.xlen(key)
        pipe.get(outbox_extra(key))


def _backlog(replies: list[Any]) -> int:
    """The backlog in events, from the replies of :func:`_queue_lengths`."""
    return sum(outbox_events(replies[i], replies[i + 1]) for i in range(0, len(replies), 2))
