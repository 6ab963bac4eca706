"""The read side's Redis queries: what the inspector and the dashboard show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.keys import GROUP, Keys
from engine.core.priority import lanes_in_order

Entry = tuple[str, dict[str, str]]
"""A stream entry: its id and its fields."""


@dataclass(frozen=True)
class Scrape:
    """What ``/metrics`` reads of one queue beyond :meth:`Gateway.queue_stats`."""

    outbox_length: int | None
    outbox_extra: str | None
    """Events of batched outbox entries beyond one each (``keys.outbox_extra``), as stored."""
    stats: dict[str, str]
    """The queue's stats hash: counters and duration buckets, as the scripts write them."""
    owned: int
    """How many of the job ids asked about are this queue's."""


async def read_lanes(
    redis: Any, keys: Keys, queues: Sequence[str], *, raise_on_error: bool = True
) -> dict[str, list[str]]:
    """The lanes sets of ``queues`` in one pipeline, each as its lanes first to last; a
    queue whose set cannot be read (``raise_on_error=False``) counts as having none."""
    async with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.smembers(keys.queue(queue).lanes)
        replies = await pipe.execute(raise_on_error=raise_on_error)
    return {
        queue: lanes_in_order(queue, () if isinstance(members, Exception) else members)
        for queue, members in zip(queues, replies, strict=True)
    }


class Reads:
    """Read-only queries over one namespace's keys (``gateway.reads``)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.sessions = Sessions(redis, keys)

    # -- the live lists, a batch at a time ----------------------------------------------------

    async def lanes(self, queues: Sequence[str]) -> dict[str, list[str]]:
        """Each queue's (or partition's) priority lanes, first to last (engine.core.priority):
        the queue alone for one that never had a job of another priority."""
        return await read_lanes(self.redis, self.keys, queues, raise_on_error=False)

    async def delayed_ids(self, queue: str, offset: int, count: int) -> list[str]:
        """Job ids of the delayed set, soonest due first, from position ``offset``."""
        ids: list[str] = await self.redis.zrange(self.keys.queue(queue).delayed, offset, offset + count - 1)
        return ids

    async def stream_entries(self, queue: str, after: str | None, count: int) -> list[Entry]:
        """Entries of the queue's stream (waiting and active jobs), oldest first, after the
        entry id ``after`` (from the start when None)."""
        start = "-" if after is None else f"({after}"
        return list(await self.redis.xrange(self.keys.queue(queue).stream, min=start, count=count))

    async def dead_entries(self, queue: str, before: str | None, count: int) -> list[Entry]:
        """Entries of the dead-letter stream, newest first, before the entry id ``before``."""
        end = "+" if before is None else f"({before}"
        return list(await self.redis.xrevrange(self.keys.queue(queue).dlq, max=end, count=count))

    # -- queues ---------------------------------------------------------------------------------

    async def oldest_waiting(self, queues: Sequence[str]) -> dict[str, int | None]:
        """When (epoch ms) the oldest entry no worker was handed yet was added to each queue;
        None if none. Two pipelines over all the queues: a round trip per node each.

        Entries up to the group's last-delivered id were handed to workers (they are active,
        or gone); the first entry after it is the oldest one still waiting. A queue with
        priority lanes counts its oldest entry of any.
        """
        lanes = await self.lanes(queues)
        names = [(queue, name) for queue in queues for name in lanes[queue]]
        streams = [self.keys.queue(name).stream for _, name in names]
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            groups = await pipe.execute(raise_on_error=False)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, info in zip(streams, groups, strict=True):
                last = None
                if not isinstance(info, Exception):  # no stream yet
                    last = next((g.get("last-delivered-id") for g in info if g.get("name") == GROUP), None)
                pipe.xrange(stream, min="-" if last in (None, "0-0") else f"({last}", count=1)
            firsts = await pipe.execute(raise_on_error=False)
        out: dict[str, int | None] = dict.fromkeys(queues)
        for (queue, _), entries in zip(names, firsts, strict=True):
            if isinstance(entries, Exception):
                raise entries
            if entries:
                ms = int(str(entries[0][0]).split("-", 1)[0])
                known = out[queue]
                out[queue] = ms if known is None else min(known, ms)
        return out

    async def task_throughput(
        self, queues: Sequence[str], minutes: Sequence[int]
    ) -> dict[str, tuple[int, int]]:
        """Task -> (completed, failed) over ``minutes``, summed over ``queues``: finish.lua
        counts each task's outcomes per minute (``c:<task>``, ``f:<task>``) too."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                for minute in minutes:
                    pipe.hgetall(self.keys.queue(queue).throughput(minute))
            hashes = await pipe.execute()
        out: dict[str, list[int]] = {}
        for fields in hashes:
            for field, value in fields.items():
                kind, _, task = field.partition(":")
                if task and kind in ("c", "f") and str(value).isdigit():
                    out.setdefault(task, [0, 0])[kind == "f"] += int(value)
        return {task: (completed, failed) for task, (completed, failed) in out.items()}

    async def throughput(self, queues: Sequence[str], minutes: Sequence[int]) -> list[tuple[int, int]]:
        """(completed, failed) of each minute (minutes since the epoch), summed over ``queues``,
        in one pipeline."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                qk = self.keys.queue(queue)
                for minute in minutes:
                    pipe.hmget(qk.throughput(minute), "completed", "failed")
            rows = await pipe.execute()
        totals = [[0, 0] for _ in minutes]
        for i, (completed, failed) in enumerate(rows):
            total = totals[i % len(minutes)]
            total[0] += int(completed or 0)
            total[1] += int(failed or 0)
        return [(completed, failed) for completed, failed in totals]

    async def scrape(self, queue: str, job_ids: Sequence[str]) -> Scrape:
        """The outbox backlog, the stats hash and which of ``job_ids`` (running somewhere)
        are this queue's, in one round trip; a key of the wrong type reads as empty."""
        qk = self.keys.queue(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(qk.outbox)
            pipe.get(qk.outbox_extra)
            pipe.hgetall(qk.stats)
            for job_id in job_ids:
                pipe.exists(qk.job(job_id))
            outbox, extra, stats, *owned = await pipe.execute(raise_on_error=False)
        return Scrape(
            outbox_length=outbox if isinstance(outbox, int) else None,
            outbox_extra=extra if isinstance(extra, str) else None,
            stats=stats if isinstance(stats, dict) else {},
            owned=sum(1 for hit in owned if hit == 1),
        )

    # -- what workers announce --------------------------------------------------------------

    async def task_announcements(self) -> dict[str, str]:
        """Task name -> encoded ``TaskAnnouncement``, as workers announced them."""
        return dict(await self.redis.hgetall(self.keys.tasks))

    async def schedule_announcements(self) -> dict[str, str]:
        """Schedule name -> encoded ``ScheduleAnnouncement``."""
        return dict(await self.redis.hgetall(self.keys.schedules))

    async def cron_state(self, queue: str, name: str) -> tuple[float | None, str | None]:
        """(last fire of schedule ``name`` in epoch ms, the token of the queue's scheduler
        lock), None where there is none."""
        qk = self.keys.queue(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(qk.cron_last, name)
            pipe.get(qk.cron_leader)
            last, token = await pipe.execute()
        return (None if last is None else float(last)), (token or None)


class Sessions:
    """Dashboard sessions ended before their expiry (``gateway.reads.sessions``).

    The one write next to the reads: the dashboard's logout has no other broker role to
    live in, and it is a single key per session, checked on every request."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def revoke(self, session_id: str, ttl_s: int) -> None:
        """Mark the session ended, for ``ttl_s`` seconds (until it would expire anyway)."""
        await self.redis.set(self.keys.revoked_session(session_id), "1", ex=max(1, ttl_s))

    async def is_revoked(self, session_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.revoked_session(session_id)))
