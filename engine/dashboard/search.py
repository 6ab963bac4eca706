"""Listing and search: jobs by queue, status, task and text, from the job log or the live lists.

Live state (waiting, active, delayed, failed jobs) always comes from Redis. Finished jobs
and search over them come from the PostgreSQL job log when the engine has one
(``Engine(database_url=...)``, read through ``engine.history``); without it, search scans
the live lists (streams, delayed sets, dead letters) and their job hashes, so a failed job
is always found by a word of its payload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec
import structlog

from engine import inspector
from engine.core.model import LIVE_STATUSES, JobInfo, Status, json_encoder
from engine.dashboard.checks import JOB_ID, check_search, check_status, check_task, require_queue
from engine.dashboard.errors import Invalid, cursor_checked
from engine.dashboard.views import (
    HISTORY_ERRORS,
    HISTORY_NOTICE,
    JobPage,
    history_enabled,
    history_view,
    job_view,
)

if TYPE_CHECKING:
    from engine.client.app import Engine

log = structlog.get_logger("engine.dashboard")


def _haystack(info: JobInfo) -> str:
    parts = [info.id, info.task, info.error or "", info.raw_payload or ""]
    try:
        parts.append(json_encoder.encode([info.args, info.kwargs]).decode())
    except (TypeError, msgspec.EncodeError):
        parts.append(repr((info.args, info.kwargs)))
    return "\n".join(parts).lower()


def matcher(task: str | None, search: str | None) -> Callable[[JobInfo], bool]:
    """A predicate: the job has this task and contains the search text (case-insensitive) in
    its id, task, error or payload."""
    needle = search.lower() if search else None

    def match(info: JobInfo) -> bool:
        if task is not None and info.task != task:
            return False
        return needle is None or needle in _haystack(info)

    return match


async def list_jobs(
    engine: Engine,
    *,
    queue: str | None = None,
    status: str | None = None,
    task: str | None = None,
    search: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> JobPage:
    """Jobs filtered by queue, status, task and search text, one page at a time."""
    status = check_status(status)
    task = check_task(task)
    search = check_search(search)
    if queue is not None:
        await require_queue(engine, queue)
    queues = [queue] if queue else await inspector.queue_names(engine)
    exact = None
    if search and not cursor and JOB_ID.match(search):
        found = await inspector.live_info(engine, search, queue)
        exact = None if found is None else job_view(found)
        if exact is not None and status is not None and exact["status"] != status:
            exact = None
    page = await _page(engine, queues, queue, status, task, search, limit, cursor)
    if exact is not None:
        page.exact = exact
        if all(j["id"] != exact["id"] for j in page.jobs):
            page.jobs.insert(0, exact)
    return page


async def live_page(
    engine: Engine,
    queues: Sequence[str],
    statuses: Sequence[str],
    match: Callable[[JobInfo], bool],
    *,
    limit: int,
    cursor: str | None,
) -> JobPage:
    """A page of the live lists of ``queues`` (see :func:`engine.inspector.scan_live`)."""
    with cursor_checked():
        page = await inspector.scan_live(engine, queues, statuses, match, limit=limit, cursor=cursor)
    return JobPage([job_view(info) for info in page.jobs], page.next_cursor, "redis", scanned=page.scanned)


async def dead_letters(
    engine: Engine, queue: str, task: str | None, search: str | None, *, limit: int, cursor: str | None
) -> JobPage:
    """The dead letters of ``queue`` (checked by the caller) matching task and search text."""
    return await live_page(
        engine, [queue], [Status.FAILED], matcher(task, search), limit=limit, cursor=cursor
    )


async def _page(
    engine: Engine,
    queues: Sequence[str],
    queue: str | None,
    status: str | None,
    task: str | None,
    search: str | None,
    limit: int,
    cursor: str | None,
) -> JobPage:
    """From the job log when there is one (finished jobs, searches), else from Redis."""
    notice = HISTORY_NOTICE
    live_only = status in LIVE_STATUSES and not search
    if history_enabled(engine) and not live_only and not inspector.is_cursor(cursor, "scan"):
        try:
            return await _history_page(engine, queue, status, task, search, limit, cursor)
        except HISTORY_ERRORS as exc:
            # PostgreSQL is down or not migrated yet: Redis still answers for live jobs.
            log.warning("job log unavailable; showing live jobs", error=str(exc))
            notice = f"the job log is unavailable ({type(exc).__name__}: {exc})"
            cursor = None
    if status is not None and status not in LIVE_STATUSES:
        return JobPage(jobs=[], source="redis", notice=notice)
    wanted = (status,) if status else LIVE_STATUSES
    page = await live_page(engine, queues, wanted, matcher(task, search), limit=limit, cursor=cursor)
    if status is None:
        page.notice = f"showing live jobs only: {notice}"
    return page


async def _history_page(
    engine: Engine,
    queue: str | None,
    status: str | None,
    task: str | None,
    search: str | None,
    limit: int,
    cursor: str | None,
) -> JobPage:
    with cursor_checked():
        inner = inspector.decode_cursor(cursor, "history")
    try:
        result = await engine.history(
            queue=queue, status=status, task=task, search=search, limit=limit, cursor=inner
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    nxt = result.next_cursor
    return JobPage(
        jobs=[history_view(j) for j in result.jobs],
        next_cursor=None if nxt is None else inspector.encode_cursor("history", nxt),
        source="history",
    )
