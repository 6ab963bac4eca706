"""Checks of what a request names (status, limit, search text, task, job ids, queue): Invalid or NotFound."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from engine import inspector
from engine.core.errors import ConfigurationError
from engine.core.keys import check_name
from engine.core.model import LIVE_STATUSES, STATUSES
from engine.dashboard.errors import Invalid, NotFound

if TYPE_CHECKING:
    from engine.client.app import Engine

# The order the API documents and the pages offer: the live statuses first, as a queue's
# page lists them, then the finished ones.
STATUS_CHOICES: tuple[str, ...] = tuple(
    str(s) for s in (*LIVE_STATUSES, *(s for s in STATUSES if s not in LIVE_STATUSES))
)
MAX_LIMIT = 200
MAX_SEARCH = 200
MAX_BULK_IDS = 1000
JOB_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


def check_status(status: str | None) -> str | None:
    if status in (None, "", "all"):
        return None
    if status not in STATUS_CHOICES:
        raise Invalid(
            f"unknown status {status!r}: use one of {', '.join(STATUS_CHOICES)} (or omit it for all)"
        )
    return status


def check_limit(value: Any, default: int = 50) -> int:
    if value in (None, ""):
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise Invalid(f"limit must be an integer from 1 to {MAX_LIMIT}, not {value!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit}")
    return limit


def check_search(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > MAX_SEARCH:
        raise Invalid(f"search text is limited to {MAX_SEARCH} characters")
    if "\x00" in value:
        raise Invalid("search text cannot contain NUL characters")
    return value or None


def check_task(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    try:
        return check_name("task", value)
    except ConfigurationError as exc:
        raise Invalid(str(exc)) from None


def check_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise Invalid(f"invalid job id {job_id[:80]!r}")
    return job_id


def check_job_ids(job_ids: Any) -> list[str]:
    """A non-empty list of valid job ids (every one checked before anything is done)."""
    if not isinstance(job_ids, list) or not job_ids:
        raise Invalid("give 'ids' (a non-empty list of job ids) or 'all': true (with task/search filters)")
    if len(job_ids) > MAX_BULK_IDS:
        raise Invalid(f"at most {MAX_BULK_IDS} ids at a time (or 'all': true with task/search filters)")
    for job_id in job_ids:
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise Invalid(f"invalid job id {str(job_id)[:80]!r}: nothing was replayed")
    return list(dict.fromkeys(job_ids))


def check_queue_name(queue: Any) -> str:
    try:
        return check_name("queue", queue)
    except ConfigurationError as exc:
        raise Invalid(str(exc)) from None


async def require_queue(engine: Engine, queue: str) -> str:
    """The queue name if it is valid and known; Invalid (422) or NotFound (404) otherwise."""
    check_queue_name(queue)
    known = await inspector.queue_names(engine)
    if queue not in known:
        raise NotFound(f"unknown queue {queue!r} (known queues: {', '.join(known) or 'none'})")
    return queue
