"""Writing jobs: enqueue (batched, fenced for cron) and the single-enqueue coalescer."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TypedDict

from engine.broker.base import GatewayBase
from engine.broker.scripts import bindings
from engine.broker.scripts.runner import Call
from engine.core.keys import Keys
from engine.core.priority import lane
from engine.core.transitions import Fence, NewJob

Written = tuple[str, bool]
"""A job's id (the existing job's when its idempotency key or id was taken) and whether
it was added."""


class Coalescer:
    """Single enqueues: sent at once when no other is on its way, else together with every
    one issued meanwhile, in one pipelined round trip. So many concurrent producers (a web
    app's requests) enqueue at the rate of batches, not of round trips, and a lone one pays
    nothing for it."""

    def __init__(
        self,
        send_one: Callable[[str, NewJob], Awaitable[Written]],
        send_mixed: Callable[[Sequence[tuple[str, NewJob]]], Awaitable[list[Written]]],
    ) -> None:
        self._send_one = send_one
        self._send_mixed = send_mixed
        # Single enqueues on their way, those waiting to go, and who sends them.
        self._sending = 0
        self._waiting: list[tuple[str, NewJob, asyncio.Future[Written]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, queue: str, job: NewJob) -> Written:
        if not self._sending:
            self._sending += 1
            try:
                return await self._send_one(queue, job)
            finally:
                self._sending -= 1
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Written] = loop.create_future()
        self._waiting.append((queue, job, done))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        """Send what submit() callers queued, batch after batch, until none is left."""
        batch: list[tuple[str, NewJob, asyncio.Future[Written]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                self._sending += 1
                try:
                    results = await self._send_mixed([(queue, job) for queue, job, _ in batch])
                except Exception as exc:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                finally:
                    self._sending -= 1
                for (_, _, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            # Cancelled (the loop is shutting down): nothing may wait for us forever.
            for _, _, done in [*batch, *self._waiting]:
                done.cancel()  # a no-op for those already answered
            self._waiting = []
            self._flusher = None


class _QueueNames(TypedDict):
    """The key names ``bindings.enqueue`` takes for one queue and priority."""

    stream: str
    delayed: str
    stats: str
    outbox: str
    joblog_flag: str
    cron_leader: str
    cron_last: str
    outbox_extra: str
    flow: str
    lanes: str
    waiting: str
    job_prefix: str
    idem_prefix: str
    wake_channel: str


@functools.lru_cache(maxsize=4096)
def _queue_names(keys: Keys, queue: str, priority: int) -> _QueueNames:
    """Computed once per queue and priority: building these dozen names cost as much as the
    rest of a single enqueue's call (a queue, its partitions and lanes are few)."""
    qk = keys.queue(queue)
    return _QueueNames(
        stream=keys.queue(lane(queue, priority)).stream,
        delayed=qk.delayed,
        stats=qk.stats,
        outbox=qk.outbox,
        joblog_flag=qk.joblog_flag,
        cron_leader=qk.cron_leader,
        cron_last=qk.cron_last,
        outbox_extra=qk.outbox_extra,
        flow=qk.flow,
        lanes=qk.lanes,
        waiting=qk.waiting,
        job_prefix=qk.job_prefix,
        idem_prefix=qk.idem_prefix,
        wake_channel=qk.wake_channel,
    )


class Producing(GatewayBase):
    """The gateway's producer side (a mixin of :class:`~engine.broker.gateway.Gateway`)."""

    coalescer: Coalescer

    async def enqueue(
        self, queue: str, jobs: Sequence[NewJob], chunk: int = 1000, fence: Fence | None = None
    ) -> list[Written]:
        """Write jobs atomically per chunk; a big batch goes in one round trip (pipelined).

        With ``fence`` (cron), the write happens only while the caller holds the leader lock
        and only for a tick newer than the schedule's last one; otherwise FenceRejected.
        Returns (job id, added) per job: the id is the existing job's when its idempotency
        key (or id) was taken.
        """
        await self.remember_queue(queue)
        calls = self._enqueue_calls(queue, jobs, chunk, fence, await self.sharded_pubsub())
        if fence is not None and len(calls) > 1:
            # Each call checks the fence and advances the schedule's last tick: a second
            # call would always find its tick fired.
            raise ValueError("a fenced enqueue takes jobs of one task and options, at most one chunk")
        replies = (
            [await self.scripts.run(calls[0])] if len(calls) == 1 else await self.scripts.run_many(calls)
        )
        return [written for reply in replies for written in reply]

    async def enqueue_one(self, queue: str, job: NewJob) -> Written:
        """Write one job, coalesced with the single enqueues issued meanwhile (:class:`Coalescer`)."""
        return await self.coalescer.submit(queue, job)

    async def _enqueue_single(self, queue: str, job: NewJob) -> Written:
        """One job in one script call (the path of every ``await task.enqueue()`` that has
        no other on its way)."""
        await self.remember_queue(queue)
        sharded = await self.sharded_pubsub()
        call = self._enqueue_call(queue, job, [(job.id, job.payload)], self.now_ms(), None, sharded)
        if self.direct is None:
            return (await self.scripts.run(call))[0]
        reply = await self.direct.run(self.scripts.script(call.script), self.redis, call.keys, call.args)
        return call.decode(reply)[0]

    async def _enqueue_mixed(self, batch: Sequence[tuple[str, NewJob]]) -> list[Written]:
        """Jobs of any queues, tasks and options in one round trip; results in batch order."""
        per_queue: dict[str, list[NewJob]] = {}
        for queue, job in batch:
            per_queue.setdefault(queue, []).append(job)
        calls: list[Call[list[Written]]] = []
        spans: dict[str, tuple[int, int]] = {}
        sharded = await self.sharded_pubsub()
        for queue, jobs in per_queue.items():
            await self.remember_queue(queue)
            queue_calls = self._enqueue_calls(queue, jobs, 1000, None, sharded)
            spans[queue] = (len(calls), len(calls) + len(queue_calls))
            calls += queue_calls
        replies = await self.scripts.run_many(calls)
        written = {queue: iter([w for r in replies[a:b] for w in r]) for queue, (a, b) in spans.items()}
        return [next(written[queue]) for queue, _ in batch]

    def _enqueue_calls(
        self, queue: str, jobs: Sequence[NewJob], chunk: int, fence: Fence | None, sharded: bool
    ) -> list[Call[list[Written]]]:
        now = self.now_ms()
        calls: list[Call[list[Written]]] = []
        for start in range(0, len(jobs), chunk):
            # Jobs of one enqueue share task and options; group runs of equal ones anyway.
            first: NewJob | None = None
            pairs: list[tuple[str, bytes]] = []
            for job in jobs[start : start + chunk]:
                if first is None or job.shared() != first.shared():
                    if first is not None:
                        calls.append(self._enqueue_call(queue, first, pairs, now, fence, sharded))
                    first, pairs = job, []
                pairs.append((job.id, job.payload))
            assert first is not None
            calls.append(self._enqueue_call(queue, first, pairs, now, fence, sharded))
        return calls

    def _enqueue_call(
        self,
        queue: str,
        shared: NewJob,
        pairs: list[tuple[str, bytes]],
        now: int,
        fence: Fence | None,
        sharded: bool,
    ) -> Call[list[Written]]:
        """The call writing ``pairs`` (id, payload), jobs sharing ``shared``'s task and options."""
        return bindings.enqueue(
            **_queue_names(self.keys, queue, shared.priority),
            now_ms=now,
            queue=queue,
            fence_token=fence.token if fence else "",
            fence_schedule=fence.schedule if fence else "",
            fence_tick_ms=fence.tick_ms if fence else 0,
            task=shared.task,
            due_ms=shared.due_ms,
            timeout=shared.timeout,
            max_attempts=shared.max_attempts,
            idempotency_key=shared.idempotency_key,
            idempotency_ttl_ms=shared.idempotency_ttl_ms,
            tick_ms=shared.tick_ms,
            priority=shared.priority,
            expires_ms=shared.expires_ms,
            concurrency_key=shared.concurrency_key,
            sharded=sharded,
            jobs=pairs,
            fresh_ids=shared.fresh_id,
        )
