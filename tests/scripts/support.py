"""Setting the scene for a script under test: jobs in each state, through the other bindings."""

from __future__ import annotations

from typing import Any

from engine.broker.gateway import Gateway
from engine.broker.scripts import bindings
from engine.broker.scripts.bindings import StartRow
from engine.broker.scripts.runner import Call
from engine.core.keys import GROUP
from engine.core.priority import lane
from engine.core.transitions import Fence, NewJob, Outcome, Retention

Q = "q"
PAYLOAD = b'{"args":[1],"kwargs":{}}'
WORKER = "w1"
KEEP = Retention(completed_ms=0, failed_ms=0)


def job(job_id: str, **options: Any) -> NewJob:
    return NewJob(id=job_id, task="t", payload=PAYLOAD, **options)


def enqueue_call(
    gw: Gateway, jobs: list[NewJob], *, fence: Fence | None = None, now_ms: int | None = None, queue: str = Q
) -> Call[list[tuple[str, bool]]]:
    qk = gw.keys.queue(queue)
    first = jobs[0]
    return bindings.enqueue(
        stream=gw.keys.queue(lane(queue, first.priority)).stream,
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
        now_ms=gw.now_ms() if now_ms is None else now_ms,
        wake_channel=qk.wake_channel,
        queue=queue,
        fence_token=fence.token if fence else "",
        fence_schedule=fence.schedule if fence else "",
        fence_tick_ms=fence.tick_ms if fence else 0,
        task=first.task,
        due_ms=first.due_ms,
        timeout=first.timeout,
        max_attempts=first.max_attempts,
        idempotency_key=first.idempotency_key,
        idempotency_ttl_ms=first.idempotency_ttl_ms,
        tick_ms=first.tick_ms,
        priority=first.priority,
        expires_ms=first.expires_ms,
        concurrency_key=first.concurrency_key,
        sharded=bool(gw.sharded),
        jobs=[(j.id, j.payload) for j in jobs],
    )


async def waiting(gw: Gateway, *job_ids: str, queue: str = Q) -> None:
    """Jobs waiting in the queue's stream, with its consumer group in place."""
    await gw.ensure_group(queue)
    await gw.scripts.run(enqueue_call(gw, [job(i) for i in job_ids], queue=queue))


async def active(gw: Gateway, *job_ids: str, consumer: str = WORKER) -> list[StartRow]:
    """Jobs started by ``consumer``: their entries pending to it."""
    await waiting(gw, *job_ids)
    qk = gw.keys.queue(Q)
    call = bindings.start(
        stream=qk.stream,
        dlq=qk.dlq,
        flow=qk.flow,
        running=qk.running,
        rate=qk.rate,
        waiting=qk.waiting,
        joblog_flag=qk.joblog_flag,
        job_prefix=qk.job_prefix,
        lease_ms=30_000,
        worker=consumer,
        read=len(job_ids),
    )
    rows = await gw.scripts.run(call)
    assert [row.run for row in rows] == [True] * len(job_ids)
    return rows


async def failed(gw: Gateway, job_id: str) -> str:
    """A dead-lettered job; its dead letter's entry id."""
    (row,) = await active(gw, job_id)
    await gw.finish([Outcome(Q, row.entry_id, job_id, "failed", "boom", "tb")], KEEP)
    h = await gw.redis.hgetall(gw.keys.queue(Q).job(job_id))
    dead: str = h["dlq"]
    return dead


async def pending_to(gw: Gateway, queue: str = Q) -> dict[str, str]:
    """Entry id -> the consumer it is pending to."""
    rows = await gw.redis.xpending_range(gw.keys.queue(queue).stream, GROUP, "-", "+", 100)
    return {row["message_id"]: row["consumer"] for row in rows}
