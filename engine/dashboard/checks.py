"""Checks of what a request names (status, limit, search text, task, job ids, queue): Invalid or NotFound.

Each one converts through the type ``schemas.py`` declares for it (the one the OpenAPI
document describes), so the pages, the API and the document agree on what is valid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import inspector
from engine.dashboard import decoding, schemas
from engine.dashboard.errors import Invalid, NotFound
from engine.dashboard.schemas import JOB_ID, MAX_BULK_IDS, MAX_LIMIT, MAX_SEARCH, STATUS_CHOICES

if TYPE_CHECKING:
    from engine.client.app import Engine

__all__ = [
    "JOB_ID",
    "MAX_BULK_IDS",
    "MAX_LIMIT",
    "MAX_SEARCH",
    "STATUS_CHOICES",
    "check_job_id",
    "check_job_ids",
    "check_limit",
    "check_queue_name",
    "check_search",
    "check_status",
    "check_task",
    "require_queue",
]


def check_status(status: str | None) -> str | None:
    if status in (None, "", "all"):
        return None
    checked: str = decoding.checked(schemas.JobsQuery, {"status": status}, "status").status
    return checked


def check_limit(value: Any, default: int = 50) -> int:
    if value in (None, ""):
        return default
    if isinstance(value, str):
        limit: int = decoding.checked_number(schemas.Limit, value, "limit")
    else:
        limit = decoding.checked(schemas.Limit, value, "limit")
    return limit


def check_search(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    decoding.checked(schemas.SearchText, value, "search text")
    return value or None


def check_task(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    task: str = decoding.checked(schemas.TaskName, value, "task")
    return task


def check_job_id(job_id: str) -> str:
    checked: str = decoding.checked(schemas.JobId, job_id, "job id")
    return checked


def check_job_ids(job_ids: Any) -> list[str]:
    """A non-empty list of valid job ids (every one checked before anything is done)."""
    if job_ids is None:
        raise Invalid("give 'ids' (a non-empty list of job ids) or 'all': true (with task/search filters)")
    ids: list[str] = decoding.checked(schemas.ReplayRequest, {"ids": job_ids}, "ids").ids
    return list(dict.fromkeys(ids))


def check_queue_name(queue: Any) -> str:
    name: str = decoding.checked(schemas.QueueName, queue, "queue")
    return name


async def require_queue(engine: Engine, queue: str) -> str:
    """The queue name if it is valid and known; Invalid (422) or NotFound (404) otherwise."""
    check_queue_name(queue)
    known = await inspector.queue_names(engine)
    if queue not in known:
        raise NotFound(f"unknown queue {queue!r} (known queues: {', '.join(known) or 'none'})")
    return queue
