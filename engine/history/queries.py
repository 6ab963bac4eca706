"""Reads of the job history: pages of jobs (filters, search, cursors), one job, its logs."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from engine.history.events import STATUSES, without_nul

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_LIMIT = 1000

JOB_COLUMNS = (
    "id, queue_name, task_name, payload::text AS payload, attempts, status, result::text AS result, "
    "error, traceback, created_at, processed_at, finished_at, updated_at"
)


class HistoryJob(msgspec.Struct, frozen=True):
    """A job as the history knows it."""

    id: str
    queue: str
    task: str
    status: str
    attempts: int
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any
    error: str | None
    created_at: datetime
    processed_at: datetime | None
    finished_at: datetime | None
    traceback: str | None = None
    """With ``error``: of the failed attempt that set the status (every one is in the logs)."""
    payload: Any = None
    """The stored payload as decoded JSON (a string if the engine sent invalid JSON)."""
    updated_at: datetime | None = None


class HistoryPage(msgspec.Struct, frozen=True):
    jobs: list[HistoryJob]
    next_cursor: str | None
    """Pass as ``cursor=`` for the next (older) page; None on the last page."""


class LogLine(msgspec.Struct, frozen=True):
    job_id: str
    level: str
    content: str
    logged_at: datetime


def _decode_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:  # cannot happen for jsonb, but never fail a read on it
        return text


def _history_job(row: asyncpg.Record) -> HistoryJob:
    payload = _decode_json(row["payload"])
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if isinstance(payload, dict):
        if isinstance(payload.get("args"), list):
            args = payload["args"]
        if isinstance(payload.get("kwargs"), dict):
            kwargs = payload["kwargs"]
    return HistoryJob(
        id=row["id"],
        queue=row["queue_name"],
        task=row["task_name"],
        status=row["status"],
        attempts=row["attempts"],
        args=args,
        kwargs=kwargs,
        result=_decode_json(row["result"]),
        error=row["error"],
        created_at=row["created_at"],
        processed_at=row["processed_at"],
        finished_at=row["finished_at"],
        traceback=row["traceback"],
        payload=payload,
        updated_at=row["updated_at"],
    )


def encode_cursor(created_at: datetime, job_id: str) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    raw = msgspec.json.encode([micros, job_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    problem = "it is not a cursor returned by history()"
    if not isinstance(cursor, str) or not cursor or len(cursor) > 4000:
        raise ValueError(f"invalid history cursor {str(cursor)[:60]!r}: {problem}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, job_id = msgspec.json.decode(raw, type=tuple[int, str])
        created_at = _EPOCH + timedelta(microseconds=micros)
    except (binascii.Error, ValueError, msgspec.DecodeError, OverflowError):
        raise ValueError(f"invalid history cursor {cursor[:60]!r}: {problem}") from None
    return created_at, job_id


def _check_time(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    return value


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def history(
    conn: asyncpg.Connection,
    *,
    queue: str | None = None,
    status: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    search: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> HistoryPage:
    """Jobs newest first (by creation time), filtered; ``next_cursor`` pages on.

    ``since`` is inclusive, ``until`` exclusive (both timezone-aware). ``search`` matches
    a substring (case-insensitive) of the job id, task name, error or payload.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    for name, value in (("queue", queue), ("task", task), ("search", search)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    since = _check_time("since", since)
    until = _check_time("until", until)
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if queue is not None:
        where.append(f"queue_name = {arg(queue)}")
    if status is not None:
        where.append(f"status = {arg(status)}")
    if task is not None:
        where.append(f"task_name = {arg(task)}")
    if since is not None:
        where.append(f"created_at >= {arg(since)}")
    if until is not None:
        where.append(f"created_at < {arg(until)}")
    if search:
        pattern = arg(_like_pattern(without_nul(search)))
        where.append(
            f"(id ILIKE {pattern} OR task_name ILIKE {pattern} OR error ILIKE {pattern}"
            f" OR payload::text ILIKE {pattern})"
        )
    if cursor is not None:
        created_at, job_id = decode_cursor(cursor)
        where.append(f"(created_at, id) < ({arg(created_at)}, {arg(job_id)})")
    sql = f"SELECT {JOB_COLUMNS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at DESC, id DESC LIMIT {arg(limit + 1)}"
    records = await conn.fetch(sql, *args)
    jobs = [_history_job(r) for r in records[:limit]]
    next_cursor = None
    if len(records) > limit:
        last = records[limit - 1]
        next_cursor = encode_cursor(last["created_at"], last["id"])
    return HistoryPage(jobs=jobs, next_cursor=next_cursor)


async def job(conn: asyncpg.Connection, job_id: str) -> HistoryJob | None:
    row = await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
    return None if row is None else _history_job(row)


async def logs(conn: asyncpg.Connection, job_id: str, limit: int = 1000) -> list[LogLine]:
    """A job's log lines (its own and one error line per failed attempt), oldest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    records = await conn.fetch(
        "SELECT job_id, level, content, logged_at FROM job_logs WHERE job_id = $1"
        " ORDER BY logged_at, id LIMIT $2",
        job_id,
        limit,
    )
    return [
        LogLine(job_id=r["job_id"], level=r["level"], content=r["content"], logged_at=r["logged_at"])
        for r in records
    ]
