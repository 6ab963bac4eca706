"""Operating on jobs and on the namespace: cancel, delete, replay, purge, logs, progress,
locks, and the announcements of tasks, schedules and worker heartbeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.broker.base import GatewayBase
from engine.broker.scripts import bindings
from engine.core.errors import ScriptCode
from engine.core.model import json_encoder
from engine.core.transitions import Retention


class Admin(GatewayBase):
    """The gateway's operator side (a mixin of :class:`~engine.broker.gateway.Gateway`)."""

    # -- jobs ------------------------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, retention: Retention) -> ScriptCode:
        """DONE, CANCEL_REQUESTED (running: its worker stops it), ALREADY_FINISHED or NO_SUCH_JOB."""
        qk = self.keys.queue(queue)
        return await self.scripts.run(
            bindings.cancel(
                stream=qk.stream,
                delayed=qk.delayed,
                stats=qk.stats,
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
                job_prefix=qk.job_prefix,
                job_id=job_id,
                now_ms=self.now_ms(),
                retention_ms=retention.completed_ms,
                done_channel_prefix=self.keys.done_channel(""),
                cancel_channel=self.keys.cancel_channel,
                queue=queue,
            )
        )

    async def delete(self, queue: str, job_id: str) -> ScriptCode:
        """DONE, JOB_RUNNING (refused: cancel it first) or NO_SUCH_JOB."""
        qk = self.keys.queue(queue)
        return await self.scripts.run(
            bindings.delete(
                stream=qk.stream,
                delayed=qk.delayed,
                dlq=qk.dlq,
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
                job_prefix=qk.job_prefix,
                job_id=job_id,
                queue=queue,
            )
        )

    async def replay(self, queue: str, job_id: str) -> ScriptCode:
        """DONE, NOT_FAILED (nothing done) or NO_SUCH_JOB (its data is gone)."""
        qk = self.keys.queue(queue)
        return await self.scripts.run(
            bindings.replay(
                stream=qk.stream,
                dlq=qk.dlq,
                stats=qk.stats,
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
                job_prefix=qk.job_prefix,
                job_id=job_id,
                now_ms=self.now_ms(),
                queue=queue,
            )
        )

    async def purge_dlq(self, queue: str, batch: int = 500) -> int:
        """Delete every dead letter of the queue and its failed job; how many."""
        qk = self.keys.queue(queue)
        call = bindings.purge(
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
            bindings.log(
                logs=qk.logs(job_id),
                outbox=qk.outbox,
                joblog_flag=qk.joblog_flag,
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
        code = await self.scripts.run(bindings.lease(lock=key, token=token, lease_ms=lease_ms))
        return code is ScriptCode.DONE

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

    async def write_beat(self, worker_id: str, beat: bytes) -> None:
        await self.redis.hset(self.keys.workers, worker_id, beat)

    async def beats(self) -> dict[str, str]:
        """Every worker's latest heartbeat (encoded WorkerBeat), by worker id."""
        return dict(await self.redis.hgetall(self.keys.workers))

    async def forget_beats(self, *worker_ids: str) -> None:
        if worker_ids:
            await self.redis.hdel(self.keys.workers, *worker_ids)

    def subscriber(self) -> Any:
        """A fresh pub/sub connection (the caller subscribes, reads and closes it)."""
        return self.redis.pubsub(ignore_subscribe_messages=True)
