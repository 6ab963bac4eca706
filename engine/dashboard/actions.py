"""What the dashboard changes: retry, cancel, delete (one job or a filtered selection), replay
and purge dead letters, pause queues and cron schedules, run a schedule now, enqueue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

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
    BULK_SCAN_BUDGET,
    MAX_BULK_JOBS,
    BulkRequest,
    BulkResult,
    Cancelled,
    Deleted,
    Enqueued,
    EnqueueRequest,
    Purged,
    QueueFlow,
    Replayed,
    Retried,
    ScheduleRan,
    ScheduleState,
    Skipped,
)
from engine.dashboard.search import matcher

if TYPE_CHECKING:
    from engine.client.app import Engine
    from engine.client.cronctl import ScheduleTarget

ENQUEUE_OPTIONS = ("delay", "queue", "idempotency_key", "max_attempts", "timeout")
BulkAction = Literal["retry", "cancel", "delete"]
# The live statuses each bulk action applies to: a running job cannot be deleted (cancel
# it first) and only a failed one retried.
BULK_STATUSES: dict[str, tuple[Status, ...]] = {
    "retry": (Status.FAILED,),
    "cancel": (Status.WAITING, Status.DELAYED, Status.ACTIVE),
    "delete": (Status.WAITING, Status.DELAYED, Status.FAILED),
}


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


async def bulk(engine: Engine, queue: str, action: BulkAction, request: BulkRequest) -> BulkResult:
    """Retry, cancel or delete every job of the selection (see ``BulkRequest``), one by one;
    refused whole past ``MAX_BULK_JOBS``. A job that changed state since it was read is
    skipped, not an error."""
    name = await require_queue(engine, queue)
    allowed = BULK_STATUSES[action]
    if request.status is not None and request.status not in allowed:
        raise Invalid(
            f"{action} applies to {', '.join(allowed)} jobs, not {request.status} ones: "
            "pick another status or leave it out"
        )
    statuses = (request.status,) if request.status else allowed
    match = matcher(request.task or None, request.search or None)
    # One past the limit: enough to tell "too many" from "all of them".
    page = await inspector.scan_live(
        engine, [name], statuses, match, limit=MAX_BULK_JOBS + 1, budget=BULK_SCAN_BUDGET
    )
    if len(page.jobs) > MAX_BULK_JOBS:
        raise Invalid(
            f"the selection holds more than {MAX_BULK_JOBS:,} jobs, and a bulk {action} touches at "
            f"most {MAX_BULK_JOBS:,} per request: narrow it by status, task or search"
        )
    if page.next_cursor is not None:
        raise Invalid(
            f"the queue holds more than {BULK_SCAN_BUDGET:,} live jobs of those statuses, more than "
            f"a bulk {action} examines per request: narrow it by status"
        )
    done = 0
    if not request.dry_run:
        for info in page.jobs:
            done += await _apply(engine, action, info.id, base_queue(info.queue))
    return BulkResult(
        action=action,
        queue=name,
        matched=len(page.jobs),
        done=done,
        skipped=0 if request.dry_run else len(page.jobs) - done,
        dry_run=request.dry_run,
        limit=MAX_BULK_JOBS,
    )


async def _apply(engine: Engine, action: BulkAction, job_id: str, queue: str) -> int:
    """1 when ``action`` was done to the job, 0 when its state no longer allowed it."""
    try:
        if action == "retry":
            return int(await engine.dlq(queue).replay(job_id))
        if action == "cancel":
            return int(await engine.job(job_id, queue).cancel())
        return int(await engine.job(job_id, queue).delete())
    except (JobNotFound, JobRunning):
        return 0


async def _schedule(engine: Engine, name: str) -> ScheduleTarget:
    """This app's schedule or an announced one; NotFound naming the known ones otherwise."""
    try:
        return await engine.schedule_target(name)
    except ConfigurationError as exc:
        raise NotFound(str(exc)) from None


async def set_schedule_paused(engine: Engine, name: str, paused: bool) -> ScheduleState:
    name = (await _schedule(engine, name)).name
    if paused:
        await engine.pause_schedule(name)
    else:
        await engine.resume_schedule(name)
    return ScheduleState(schedule=name, paused=paused)


async def run_schedule(engine: Engine, name: str) -> ScheduleRan:
    target = await _schedule(engine, name)
    try:
        job = await engine.run_schedule(target.name)
    except UnknownTaskError as exc:
        raise NotFound(str(exc)) from None
    return ScheduleRan(schedule=target.name, id=job.id, queue=target.queue)


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
