"""Operating on jobs and on the namespace: cancel, delete, replay, purge, logs, progress,
locks, and the announcements of tasks, schedules and worker heartbeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.exceptions import ResponseError

from engine.broker.base import GatewayBase
from engine.broker.scripts import operations
from engine.broker.subscriber import Subscriber
from engine.core import flow
from engine.core.errors import ScriptCode
from engine.core.model import json_encoder
from engine.core.transitions import Retention

BEAT_TTL_S = 30
"""A worker's heartbeat key expires this long after its last beat (it beats every 5 s), so
a worker that died without a word disappears by itself."""


class Admin(GatewayBase):
    """The gateway's operator side (a mixin of :class:`~engine.broker.gateway.Gateway`)."""

    # -- jobs ------------------------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, retention: Retention) -> ScriptCode:
        """DONE, CANCEL_REQUESTED (running: its worker stops it), ALREADY_FINISHED or NO_SUCH_JOB."""
        qk = self.keys.queue(queue)
        sharded = await self.sharded_pubsub()
        return await self.scripts.run(
            operations.cancel(
                stream=qk.stream,
                delayed=qk.delayed,
                stats=qk.stats,
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
                waiting=qk.waiting,
                cancels=qk.cancels,
                job_prefix=qk.job_prefix,
                job_id=job_id,
                now_ms=self.now_ms(),
                retention_ms=retention.completed_ms,
                done_channel_prefix=qk.done_channel(""),
                cancel_channel=qk.cancel_channel,
                queue=queue,
                sharded=sharded,
            )
        )

    async def delete(self, queue: str, job_id: str) -> ScriptCode:
        """DONE, JOB_RUNNING (refused: cancel it first) or NO_SUCH_JOB."""
        qk = self.keys.queue(queue)
        return await self.scripts.run(
            operations.delete(
                stream=qk.stream,
                delayed=qk.delayed,
                dlq=qk.dlq,
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
                waiting=qk.waiting,
                job_prefix=qk.job_prefix,
                job_id=job_id,
                queue=queue,
            )
        )

    async def replay(self, queue: str, job_id: str) -> ScriptCode:
        """DONE, NOT_FAILED (nothing done) or NO_SUCH_JOB (its data is gone)."""
        qk = self.keys.queue(queue)
        return await self.scripts.run(
            operations.replay(
                stream=qk.stream,
                dlq=qk.dlq,
                stats=qk.stats,
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
                waiting=qk.waiting,
                job_prefix=qk.job_prefix,
                job_id=job_id,
                now_ms=self.now_ms(),
                queue=queue,
            )
        )

    async def purge_dlq(self, queue: str, batch: int = 500) -> int:
        """Delete every dead letter of the queue and its failed job; how many."""
        qk = self.keys.queue(queue)
        call = operations.purge(
            dlq=qk.dlq,
            outbox=qk.outbox,
            joblog_flag=qk.joblog_flag,
            outbox_extra=qk.outbox_extra,
            job_prefix=qk.job_prefix,
            batch=batch,
            queue=queue,
        )
        total = 0
        while True:
            removed = await self.scripts.run(call)
            total += removed
            if removed < batch:
                return total

    async def append_log(self, queue: str, job_id: str, level: str, message: str, keep: int) -> None:
        qk = self.keys.queue(queue)
        now = self.now_ms()
        line = json_encoder.encode({"at": now, "level": level, "message": message})
        await self.scripts.run(
            operations.log(
                logs=qk.logs(job_id),
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
                logged=qk.logged,
                job_id=job_id,
                queue=queue,
                now_ms=now,
                level=level,
                message=message,
                keep=keep,
                line=line,
            )
        )

    async def set_progress(self, queue: str, job_id: str, value: float) -> None:
        await self.redis.hset(self.keys.queue(queue).job(job_id), "progress", repr(value))

    async def switch_on_joblog(self, queues: Sequence[str]) -> None:
        """Mark these queues as keeping a job log, so their scripts write outbox events."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.set(self.keys.queue(queue).joblog_flag, "1")
            await pipe.execute()

    # -- locks -----------------------------------------------------------------------------

    async def acquire_lock(self, key: str, token: str, lease_ms: int) -> tuple[bool, int]:
        """``SET NX PX``, and the lock's remaining ms (``PTTL``: -2 gone, -1 no expiry) in
        the same round trip, so a follower can sleep until the holder's lease runs out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, token, nx=True, px=lease_ms)
            pipe.pttl(key)
            acquired, remaining_ms = await pipe.execute()
        return bool(acquired), int(remaining_ms)

    async def claim_once(self, key: str, ttl_s: int) -> bool:
        """True for the first caller within ``ttl_s`` seconds (``SET NX EX``)."""
        return bool(await self.redis.set(key, "1", nx=True, ex=ttl_s))

    async def renew_lock(self, key: str, token: str, lease_ms: int) -> bool:
        """Extend the lease if ``token`` still holds the lock; lease_ms=0 releases it."""
        code = await self.scripts.run(operations.lease(lock=key, token=token, lease_ms=lease_ms))
        return code is ScriptCode.DONE

    # -- flow control (engine.core.flow) ---------------------------------------------------

    async def set_flow(self, queue: str, fields: Mapping[str, str]) -> dict[str, str]:
        """Set (or with "" delete) fields of a queue's flow hash; a change is announced to
        its workers. The fields' previous values ("" for unset)."""
        qk = self.keys.queue(queue)
        call = operations.flow(
            flow=qk.flow,
            wake_channel=qk.wake_channel,
            sharded=await self.sharded_pubsub(),
            notice=flow.NOTICE,
            fields=fields,
        )
        return await self.scripts.run(call)

    # -- announcements: tasks, schedules, worker heartbeats ---------------------------------

    async def announce_tasks(self, mapping: Mapping[str, str]) -> None:
        """Publish task announcements (name -> JSON) for producers without the code."""
        if mapping:
            await self.redis.hset(self.keys.tasks, mapping=dict(mapping))

    async def announced_task(self, name: str) -> str | None:
        """A task's announcement (JSON), or None when no worker announced it."""
        raw: str | None = await self.redis.hget(self.keys.tasks, name)
        return raw

    async def announced_task_names(self) -> list[str]:
        return sorted(await self.redis.hkeys(self.keys.tasks))

    async def announce_schedules(self, mapping: Mapping[str, str]) -> None:
        """Publish cron schedule announcements (name -> JSON) for the dashboard and CLI."""
        if mapping:
            await self.redis.hset(self.keys.schedules, mapping=dict(mapping))

    async def cron_last_fired_ms(self, queue: str, schedule: str) -> int | None:
        """The last tick (ms) fired of a schedule of this queue, None before the first."""
        score = await self.redis.zscore(self.keys.queue(queue).cron_last, schedule)
        return None if score is None else int(score)

    async def mark_waiters(self, queue: str, ttl_ms: int) -> None:
        """Someone waits on a job of ``queue`` (``QueueKeys.waiters``): finish.lua announces
        job ends on their done channels while this lasts."""
        await self.redis.set(self.keys.queue(queue).waiters, "1", px=ttl_ms)

    # -- cron: paused schedules and recent runs (engine.cron) ------------------------------

    async def cron_pauses(self, queue: str) -> dict[str, int]:
        """Schedule name -> when it was paused (epoch ms), of the schedules of this queue."""
        raw = await self.redis.hgetall(self.keys.queue(queue).cron_paused)
        return {name: _ms(at) for name, at in raw.items()}

    async def pause_cron(self, queue: str, schedule: str, now_ms: int) -> None:
        """Mark a schedule paused (kept until resumed; an earlier pause keeps its time)."""
        await self.redis.hsetnx(self.keys.queue(queue).cron_paused, schedule, now_ms)

    async def resume_cron(self, queue: str, schedule: str, now_ms: int) -> bool:
        """Unpause a schedule so that it fires from its next tick on: its last-fired tick moves
        to now first (``ZADD GT``), then the mark goes, in that order on one node, so a leader
        reading between the two still sees it paused and none ever fires the skipped ticks.
        False (nothing done) when it was not paused: a tick due and not fired yet stays due."""
        qk = self.keys.queue(queue)
        if not await self.redis.hexists(qk.cron_paused, schedule):
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(qk.cron_last, {schedule: now_ms}, gt=True)
            pipe.hdel(qk.cron_paused, schedule)
            await pipe.execute()
        return True

    async def skip_cron_tick(self, queue: str, schedule: str, tick_ms: int) -> bool:
        """Count a tick of a paused schedule as done without firing it (``ZADD GT CH``);
        False when it already was (by this or another leader)."""
        changed = await self.redis.zadd(
            self.keys.queue(queue).cron_last, {schedule: tick_ms}, gt=True, ch=True
        )
        return bool(changed)

    async def record_cron_run(self, queue: str, schedule: str, entry: bytes, keep: int) -> None:
        """Add an encoded run to the schedule's recent runs, keeping the newest ``keep``."""
        key = self.keys.queue(queue).cron_runs(schedule)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(key, entry)
            pipe.ltrim(key, 0, keep - 1)
            await pipe.execute()

    async def cron_runs(self, queue: str, schedule: str, count: int) -> list[str]:
        """The schedule's newest ``count`` runs, encoded, newest first."""
        key = self.keys.queue(queue).cron_runs(schedule)
        return list(await self.redis.lrange(key, 0, count - 1))

    async def write_beat(self, worker_id: str, beat: bytes | str, seen_at: float | None = None) -> None:
        """Store a worker's heartbeat under its own key, expiring after :data:`BEAT_TTL_S`
        unless renewed, and note it as seen at ``seen_at`` (default: now, the engine's clock)
        in the workers zset. Two keys of different slots: one non-transactional pipeline,
        split per node in a cluster."""
        seen = self.clock.time() if seen_at is None else seen_at
        replies = await self._put_beat(worker_id, beat, seen)
        if _wrong_type(replies[1]):
            # The hash of workers an older version kept there: the zset replaces it.
            await self.redis.delete(self.keys.workers)
            replies = await self._put_beat(worker_id, beat, seen)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply

    async def _put_beat(self, worker_id: str, beat: bytes | str, seen: float) -> list[object]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.worker(worker_id), beat, ex=BEAT_TTL_S)
            pipe.zadd(self.keys.workers, {worker_id: seen})
            return list(await pipe.execute(raise_on_error=False))

    async def beats(self, since: float | None = None) -> dict[str, str]:
        """The latest heartbeat (encoded WorkerBeat) of every worker seen since ``since``
        (seconds, the engine's clock; default: within :data:`BEAT_TTL_S`), by worker id:
        ZRANGEBYSCORE, then one GET per worker, pipelined (per node in a cluster). A
        worker whose key expired is left out."""
        start = self.clock.time() - BEAT_TTL_S if since is None else since
        try:
            ids: list[str] = await self.redis.zrangebyscore(self.keys.workers, start, "+inf")
        except ResponseError as exc:
            if not _wrong_type(exc):
                raise
            return dict(await self.redis.hgetall(self.keys.workers))  # written by an older version
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.get(self.keys.worker(worker_id))
            raws = await pipe.execute()
        return {worker_id: raw for worker_id, raw in zip(ids, raws, strict=True) if raw is not None}

    async def forget_beats(self, *worker_ids: str) -> None:
        """Drop workers' heartbeats (a worker's own, when it stops cleanly)."""
        if worker_ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keys.workers, *worker_ids)
                for worker_id in worker_ids:
                    pipe.delete(self.keys.worker(worker_id))
                await pipe.execute()

    async def forget_beats_before(self, before: float) -> int:
        """Drop the entries of workers last seen before ``before`` (s, the engine's clock)
        from the workers zset (their keys expired long ago); how many."""
        try:
            return int(await self.redis.zremrangebyscore(self.keys.workers, "-inf", before))
        except ResponseError as exc:
            if _wrong_type(exc):
                return 0  # still the older version's hash: the next write_beat replaces it
            raise

    def subscriber(self) -> Subscriber:
        """A fresh subscriber, sharded or classic as the server allows (see
        :meth:`~engine.broker.base.GatewayBase.sharded_pubsub`); the caller subscribes,
        reads and closes it."""
        return Subscriber(self.redis, self.sharded_pubsub)


def _ms(value: str) -> int:
    """A time written as ms; 0 for anything else (set by hand): still a pause, never a crash."""
    try:
        return int(float(value))
    except ValueError:
        return 0


def _wrong_type(reply: object) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")
