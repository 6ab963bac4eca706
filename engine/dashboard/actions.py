"""What the dashboard changes: retry, cancel, delete, replay and purge dead letters, enqueue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from engine import inspector
from engine.core.errors import ConfigurationError, JobNotFound, JobRunning, PayloadTooLarge, UnknownTaskError
from engine.core.model import FINAL_STATUSES, Status
from engine.core.partitions import base_queue, is_partition
from engine.dashboard.checks import (
    check_job_id,
    check_job_ids,
    check_search,
    check_task,
    require_queue,
)
from engine.dashboard.errors import Conflict, Invalid, NotFound
from engine.dashboard.schemas import (
    Cancelled,
    Deleted,
    Enqueued,
    EnqueueRequest,
    Purged,
    QueueFlow,
    Replayed,
    Retried,
    Skipped,
)
from engine.dashboard.search import matcher

if TYPE_CHECKING:
    from engine.client.app import Engine

ENQUEUE_OPTIONS = ("delay", "queue", "idempotency_key", "max_attempts", "timeout")


async def retry_job(engine: Engine, job_id: str) -> Retried:
    check_job_id(job_id)
    info = await inspector.live_info(engine, job_id)
    if info is None:
        raise NotFound(f"no job with id {job_id!r}")
    if info.status != Status.FAILED:
        raise Conflict(f"job {job_id} is {info.status}: only failed jobs can be retried")
    try:
        done = await engine.dlq(info.queue).replay(job_id)
    except JobNotFound as exc:
        raise NotFound(str(exc)) from None
    if not done:
        raise Conflict(f"job {job_id} is no longer failed")
    return Retried(id=job_id, queue=info.queue, status="waiting")


async def cancel_job(engine: Engine, job_id: str) -> Cancelled:
    check_job_id(job_id)
    info = await inspector.live_info(engine, job_id)
    if info is None:
        raise NotFound(f"no job with id {job_id!r}")
    handle = engine.job(job_id, info.queue)
    if info.status in FINAL_STATUSES:
        raise Conflict(f"job {job_id} is {info.status}: only unfinished jobs can be cancelled")
    if not await handle.cancel():
        raise Conflict(f"job {job_id} finished before it could be cancelled")
    running = info.status == Status.ACTIVE
    return Cancelled(id=job_id, queue=info.queue, status="cancelling" if running else "cancelled")


async def delete_job(engine: Engine, job_id: str) -> Deleted:
    check_job_id(job_id)
    try:
        deleted = await engine.job(job_id).delete()
    except JobRunning as exc:
        raise Conflict(str(exc)) from None
    if not deleted:
        raise NotFound(f"no job with id {job_id!r}")
    return Deleted(id=job_id, deleted=True)


async def replay_jobs(engine: Engine, queue: str, job_ids: Sequence[str]) -> Replayed:
    await require_queue(engine, queue)
    job_ids = check_job_ids(job_ids)
    dead = engine.dlq(queue)
    replayed: list[str] = []
    skipped: list[Skipped] = []
    for job_id in job_ids:
        try:
            if await dead.replay(job_id):
                replayed.append(job_id)
            else:
                skipped.append(Skipped(id=job_id, reason="not failed"))
        except JobNotFound:
            skipped.append(Skipped(id=job_id, reason="its data is gone"))
    return Replayed(replayed=len(replayed), ids=replayed, skipped=skipped)


async def replay_matching(engine: Engine, queue: str, task: str | None, search: str | None) -> Replayed:
    await require_queue(engine, queue)
    task, search = check_task(task), check_search(search)
    gateway = await engine.ready()
    replayed = 0
    for info in await inspector.dead_matching(engine, queue, matcher(task, search)):
        if info.task and await gateway.replay(queue, info.id) == 1:
            replayed += 1
    return Replayed(replayed=replayed)


async def purge_dead(engine: Engine, queue: str, task: str | None, search: str | None) -> Purged:
    """Delete the dead letters of a queue (only the matching ones when filtered)."""
    await require_queue(engine, queue)
    task, search = check_task(task), check_search(search)
    if task is None and search is None:
        return Purged(purged=await engine.dlq(queue).purge())
    gateway = await engine.ready()
    purged = 0
    for info in await inspector.dead_matching(engine, queue, matcher(task, search)):
        if await gateway.delete(queue, info.id) == 1:
            purged += 1
    return Purged(purged=purged)


async def set_paused(engine: Engine, queue: str, paused: bool) -> QueueFlow:
    name = await require_queue(engine, queue)
    if paused:
        await engine.pause(name)
    else:
        await engine.resume(name)
    return QueueFlow(queue=name, paused=paused)


async def enqueue(engine: Engine, request: EnqueueRequest) -> Enqueued:
    """Enqueue a job by task name (the body already checked against ``EnqueueRequest``); the
    arguments are checked against the task's signature, every mistake an Invalid naming it."""
    options = {name: getattr(request, name) for name in ENQUEUE_OPTIONS if getattr(request, name) is not None}
    try:
        job = await engine.with_options(request.task, **options).enqueue(*request.args, **request.kwargs)
    except UnknownTaskError as exc:
        raise Invalid(str(exc)) from None
    except (TypeError, ValueError, OverflowError, ConfigurationError, PayloadTooLarge) as exc:
        # ConfigurationError and PayloadTooLarge are ValueErrors: named for the reader.
        raise Invalid(str(exc)) from None
    except msgspec.MsgspecError as exc:
        raise Invalid(f"the arguments cannot be encoded: {exc}") from None
    except RecursionError:
        raise Invalid("the arguments are nested too deeply") from None
    target = job.queue or request.queue or ""
    return Enqueued(
        id=job.id,
        task=request.task,
        queue=base_queue(target),
        partition=target if is_partition(target) else None,
        status="delayed" if request.delay else "waiting",
    )
