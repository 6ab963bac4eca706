"""What the dashboard pages and the JSON API show and do, independent of HTTP.

Live state (waiting, active, delayed, failed jobs) always comes from Redis. Finished jobs
and search over them come from the PostgreSQL job log when the engine has one
(``Engine(database_url=...)``, read through ``engine.history`` / ``engine.job_logs``);
without it, search scans the live lists (streams, delayed sets, dead letters) and their job
hashes, so a failed job is always found by a word of its payload.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import msgspec
import structlog

from engine import inspector
from engine.broker import ResponseError
from engine.core.errors import (
    ConfigurationError,
    JobNotFound,
    JobRunning,
    PayloadTooLarge,
    UnknownTaskError,
)
from engine.core.keys import GROUP, check_name
from engine.core.model import JobInfo, Status, json_encoder, ms_to_datetime
from engine.history import UNAVAILABLE

if TYPE_CHECKING:
    from engine.broker.gateway import Gateway
    from engine.client.app import Engine

STATUSES = ("waiting", "active", "delayed", "failed", "completed", "cancelled")
LIVE_STATUSES = ("waiting", "active", "delayed", "failed")
FINISHED_STATUSES = ("completed", "cancelled")
HISTORY_NOTICE = "enable the job log (ENGINE_DATABASE_URL) to see history"
MAX_LIMIT = 200
MAX_SEARCH = 200
SCAN_BATCH = 200
SCAN_BUDGET = 5000
"""Entries a search without the job log examines per page before it returns what it has
(with a cursor to go on), so one request never walks a million-entry stream."""
THROUGHPUT_MINUTES = 60
HISTORY_ERRORS = UNAVAILABLE
log = structlog.get_logger("engine.dashboard")
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


class DashboardError(Exception):
    """An error the API reports as JSON (and the pages as a message) with this status."""

    status_code = 400


class NotFound(DashboardError):
    status_code = 404


class Invalid(DashboardError):
    status_code = 422


class Conflict(DashboardError):
    status_code = 409


def _is_scan_cursor(cursor: str | None) -> bool:
    if not cursor:
        return False
    try:
        decode_cursor(cursor, "scan")
    except Invalid:
        return False
    return True


def history_enabled(engine: Engine) -> bool:
    """True when the engine has a PostgreSQL job log to read history from."""
    return bool(getattr(engine, "database_url", None)) and callable(getattr(engine, "history", None))


# --- validation ------------------------------------------------------------------------------


def check_status(status: str | None) -> str | None:
    if status in (None, "", "all"):
        return None
    if status not in STATUSES:
        raise Invalid(f"unknown status {status!r}: use one of {', '.join(STATUSES)} (or omit it for all)")
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
    if not _JOB_ID.match(job_id):
        raise Invalid(f"invalid job id {job_id[:80]!r}")
    return job_id


async def queue_names(engine: Engine) -> list[str]:
    gateway = await engine.ready()
    return sorted(set(await gateway.queues()) | {t.queue for t in engine.tasks.values()})


async def require_queue(engine: Engine, queue: str) -> str:
    """The queue name if it is valid and known; Invalid (422) or NotFound (404) otherwise."""
    try:
        check_name("queue", queue)
    except ConfigurationError as exc:
        raise Invalid(str(exc)) from None
    known = await queue_names(engine)
    if queue not in known:
        raise NotFound(f"unknown queue {queue!r} (known queues: {', '.join(known) or 'none'})")
    return queue


# --- reading what Redis holds, whatever it holds -----------------------------------------------

_DIGITS = re.compile(r"[0-9]{1,15}", re.ASCII)
_LENIENT_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    OverflowError,
    OSError,
    RecursionError,
    msgspec.MsgspecError,
)


def _when(value: str | None) -> datetime | None:
    """A millisecond timestamp field, or None when it is not one (never an exception)."""
    if not value or not _DIGITS.fullmatch(value):
        return None
    try:
        return ms_to_datetime(value)
    except (ValueError, OverflowError, OSError):
        return None


def _number(value: str | None, kind: type[int] | type[float]) -> Any:
    if not value:
        return None
    try:
        number = kind(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _lenient_json(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return raw


def read_info(job_id: str, queue: str, h: dict[str, str]) -> JobInfo:
    """The job a Redis hash describes. A hash someone wrote by hand (or a bug did) is shown
    field by field, whatever cannot be read left out, instead of failing the page."""
    try:
        info = JobInfo.from_hash(job_id, queue, h)
    except _LENIENT_ERRORS:
        info = None
    if info is None:
        raw_status = h.get("status") or "waiting"
        try:
            status: Any = Status(raw_status)
        except ValueError:
            status = raw_status  # shown as it is
        payload_only = {"payload": h.get("payload", ""), "task": h.get("task", "")}
        try:
            info = JobInfo.from_hash(job_id, queue, payload_only)
        except _LENIENT_ERRORS:
            info = JobInfo(id=job_id, task=h.get("task", ""), queue=queue, status=Status.WAITING, attempts=0)
            info.raw_payload = h.get("payload") or None
        info.status = cast(Status, status)
        info.attempts = _number(h.get("attempts"), int) or 0
        info.max_attempts = _number(h.get("max_attempts"), int)
        info.result = _lenient_json(h.get("result"))
        info.error = h.get("error") or None
        info.traceback = h.get("traceback") or None
        info.progress = _number(h.get("progress"), float)
        info.created_at = _when(h.get("created"))
        info.scheduled_for = _when(h.get("due"))
        info.processed_at = _when(h.get("processed"))
        info.finished_at = _when(h.get("finished"))
        info.scheduled_at = _when(h.get("tick"))
        info.worker = h.get("worker") or None
    if info.progress is not None and not math.isfinite(info.progress):
        info.progress = None
    return info


async def live_info(engine: Engine, job_id: str, queue: str | None = None) -> JobInfo | None:
    """The job from Redis (None when it is not there), read leniently."""
    gateway = await engine.ready()
    if queue is None:
        queue = await gateway.find_queue(job_id)
    if queue is None:
        return None
    h = await gateway.job_hash(queue, job_id)
    return None if h is None else read_info(job_id, queue, h)


def _log_line(raw: str) -> dict[str, Any]:
    try:
        line = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        line = None
    if not isinstance(line, dict):
        return {"at": None, "level": "?", "message": raw}
    at = line.get("at")
    when = None
    if isinstance(at, int | float) and not isinstance(at, bool):
        try:
            when = datetime.fromtimestamp(at / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            when = None
    message = line.get("message", "")
    return {
        "at": when,
        "level": str(line.get("level", "info"))[:20],
        "message": message if isinstance(message, str) else json_encoder.encode(message).decode(),
    }


async def _redis_logs(engine: Engine, queue: str, job_id: str) -> list[dict[str, Any]]:
    gateway = await engine.ready()
    lines = await gateway.redis.lrange(gateway.keys.queue(queue).logs(job_id), 0, -1)
    return [_log_line(line) for line in lines]


# --- views -----------------------------------------------------------------------------------


def job_view(info: JobInfo) -> dict[str, Any]:
    """A job as the pages and the API show it (datetimes stay datetimes until encoded)."""
    return {
        "id": info.id,
        "queue": info.queue,
        "task": info.task,
        "status": str(info.status),
        "attempts": info.attempts,
        "max_attempts": info.max_attempts,
        "args": info.args,
        "kwargs": info.kwargs,
        "result": info.result,
        "error": info.error,
        "traceback": info.traceback,
        "progress": info.progress,
        "created_at": info.created_at,
        "scheduled_for": info.scheduled_for,
        "processed_at": info.processed_at,
        "finished_at": info.finished_at,
        "scheduled_at": info.scheduled_at,
        "worker": info.worker,
        "raw_payload": info.raw_payload,
        "source": "redis",
    }


def history_view(job: Any) -> dict[str, Any]:
    """A job from the PostgreSQL history (``engine.history.HistoryJob``)."""
    return {
        "id": job.id,
        "queue": job.queue,
        "task": job.task,
        "status": str(job.status),
        "attempts": job.attempts,
        "max_attempts": None,
        "args": job.args,
        "kwargs": job.kwargs,
        "result": job.result,
        "error": job.error,
        "traceback": getattr(job, "traceback", None),
        "progress": None,
        "created_at": job.created_at,
        "scheduled_for": None,
        "processed_at": job.processed_at,
        "finished_at": job.finished_at,
        "scheduled_at": None,
        "worker": None,
        "raw_payload": None,
        "source": "history",
    }


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


# --- cursors ---------------------------------------------------------------------------------


def encode_cursor(kind: str, value: Any) -> str:
    raw = json_encoder.encode([kind, value])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str) -> Any:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got, value = msgspec.json.decode(raw, type=tuple[str, Any])
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise Invalid(f"invalid cursor {cursor[:60]!r}: pass the next_cursor of the previous page") from None
    if got != kind:
        raise Invalid(f"invalid cursor {cursor[:60]!r}: it belongs to another listing")
    return value


# --- listing and search ----------------------------------------------------------------------


@dataclass
class JobPage:
    jobs: list[dict[str, Any]]
    next_cursor: str | None = None
    source: str = "redis"
    """Where the jobs came from: "redis" (live lists) or "history" (PostgreSQL)."""
    notice: str | None = None
    scanned: int = 0
    """Live entries examined (searches without the job log)."""
    exact: dict[str, Any] | None = field(default=None)
    """The job whose id is exactly the search text, if any."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "next_cursor": self.next_cursor,
            "source": self.source,
            "notice": self.notice,
            "scanned": self.scanned,
        }


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
    queues = [queue] if queue else await queue_names(engine)
    exact = None
    if search and not cursor and _JOB_ID.match(search):
        exact = await _exact_job(engine, search, queue)
        if exact is not None and status is not None and exact["status"] != status:
            exact = None
    page = await _page(engine, queues, queue, status, task, search, limit, cursor)
    if exact is not None:
        page.exact = exact
        if all(j["id"] != exact["id"] for j in page.jobs):
            page.jobs.insert(0, exact)
    return page


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
    if history_enabled(engine) and not live_only and not _is_scan_cursor(cursor):
        try:
            return await _history_page(engine, queue, status, task, search, limit, cursor)
        except HISTORY_ERRORS as exc:
            # PostgreSQL is down or not migrated yet: Redis still answers for live jobs.
            log.warning("job log unavailable; showing live jobs", error=str(exc))
            notice = f"the job log is unavailable ({type(exc).__name__}: {exc})"
            cursor = None
    if status in FINISHED_STATUSES:
        return JobPage(jobs=[], source="redis", notice=notice)
    wanted = (status,) if status else LIVE_STATUSES
    page = await scan_jobs(
        engine, queues, wanted, matcher(task, search), limit=limit, cursor=decode_cursor(cursor, "scan")
    )
    if status is None:
        page.notice = f"showing live jobs only: {notice}"
    return page


async def _exact_job(engine: Engine, job_id: str, queue: str | None) -> dict[str, Any] | None:
    info = await live_info(engine, job_id, queue)
    return None if info is None else job_view(info)


async def _history_page(
    engine: Engine,
    queue: str | None,
    status: str | None,
    task: str | None,
    search: str | None,
    limit: int,
    cursor: str | None,
) -> JobPage:
    inner = decode_cursor(cursor, "history")
    try:
        result = await engine.history(
            queue=queue, status=status, task=task, search=search, limit=limit, cursor=inner
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    nxt = result.next_cursor
    return JobPage(
        jobs=[history_view(j) for j in result.jobs],
        next_cursor=None if nxt is None else encode_cursor("history", nxt),
        source="history",
    )


async def scan_jobs(
    engine: Engine,
    queues: Sequence[str],
    statuses: Sequence[str],
    match: Callable[[JobInfo], bool],
    *,
    limit: int,
    cursor: Any = None,
    budget: int = SCAN_BUDGET,
) -> JobPage:
    """Walk the live lists of ``queues`` (dead letters newest first, delayed set soonest
    first, stream: waiting/active oldest first) and keep the jobs ``match`` accepts."""
    gateway = await engine.ready()
    wanted = set(statuses)
    # Dead letters first: a failed job is what people search for most.
    kinds = [kind for kind, statuses_of in _SOURCES if wanted & statuses_of]
    sources = [(q, kind) for kind in kinds for q in queues]
    index, position = 0, None
    if cursor is not None:
        index, position = _scan_position(cursor, [kind for _, kind in sources])
    jobs: list[dict[str, Any]] = []
    scanned = 0
    while index < len(sources):
        q, kind = sources[index]
        batch = await _read_batch(gateway, q, kind, position)
        if not batch:
            index, position = index + 1, None
            continue
        hashes = await gateway.job_hashes(q, [job_id or "-" for _, job_id, _ in batch])
        for (pos, job_id, fields), h in zip(batch, hashes, strict=True):
            scanned += 1
            position = pos
            info = _info(q, job_id, h, fields if kind == "dlq" else None)
            if info is None or str(info.status) not in wanted or not match(info):
                continue
            jobs.append(job_view(info))
            if len(jobs) >= limit:
                return JobPage(jobs, encode_cursor("scan", [index, position]), "redis", scanned=scanned)
        if scanned >= budget:
            return JobPage(jobs, encode_cursor("scan", [index, position]), "redis", scanned=scanned)
    return JobPage(jobs, None, "redis", scanned=scanned)


_SOURCES = (("dlq", {"failed"}), ("delayed", {"delayed"}), ("stream", {"waiting", "active"}))
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)
_MAX_STREAM_PART = 2**64 - 1


def _scan_position(cursor: Any, kinds: Sequence[str]) -> tuple[int, Any]:
    """(source index, position in it) from a scan cursor, or Invalid: a cursor is input."""
    invalid = Invalid("invalid cursor: pass the next_cursor of the previous page")
    if not isinstance(cursor, list) or len(cursor) != 2:
        raise invalid
    index, position = cursor
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(kinds):
        raise invalid
    if position is None or index == len(kinds):
        return index, position
    if kinds[index] == "delayed":
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < 2**53:
            raise invalid
    elif not (
        isinstance(position, str)
        and _STREAM_ID.fullmatch(position)
        and all(int(part) <= _MAX_STREAM_PART for part in position.split("-"))
    ):
        raise invalid
    return index, position


async def _read_batch(
    gateway: Gateway, queue: str, kind: str, position: Any
) -> list[tuple[Any, str, dict[str, str]]]:
    """Up to SCAN_BATCH (position, job id, entry fields) after ``position``."""
    qk = gateway.keys.queue(queue)
    redis = gateway.redis
    if kind == "delayed":
        offset = int(position or 0)
        ids = await redis.zrange(qk.delayed, offset, offset + SCAN_BATCH - 1)
        return [(offset + i + 1, job_id, {}) for i, job_id in enumerate(ids)]
    if kind == "stream":
        start = "-" if position is None else f"({position}"
        entries = await redis.xrange(qk.stream, min=start, count=SCAN_BATCH)
    else:
        end = "+" if position is None else f"({position}"
        entries = await redis.xrevrange(qk.dlq, max=end, count=SCAN_BATCH)
    return [(entry_id, (fields or {}).get("j", ""), fields or {}) for entry_id, fields in entries]


def _info(queue: str, job_id: str, h: dict[str, str], dead: dict[str, str] | None) -> JobInfo | None:
    if h:
        return read_info(job_id, queue, h)
    if dead is None:
        return None
    # A dead letter whose job data is gone (a poison entry, or failed_ttl expired it).
    return JobInfo(
        id=job_id or "",
        task=dead.get("task", ""),
        queue=queue,
        status=Status.FAILED,
        attempts=_number(dead.get("attempts"), int) or 0,
        error=dead.get("error"),
        traceback=dead.get("traceback") or None,
        finished_at=_when(dead.get("at")),
    )


# --- one job ---------------------------------------------------------------------------------


async def job_detail(engine: Engine, job_id: str) -> dict[str, Any]:
    """Everything about one job: fields, log lines, timeline and the actions it allows."""
    check_job_id(job_id)
    gateway = await engine.ready()
    queue = await gateway.find_queue(job_id)
    h = None if queue is None else await gateway.job_hash(queue, job_id)
    logs: list[dict[str, Any]] = []
    history_logs = await _history_logs(engine, job_id)
    if queue is not None and h is not None:
        view = job_view(read_info(job_id, queue, h))
        redis_logs = await _redis_logs(engine, queue, job_id)
        logs = history_logs if len(history_logs) >= len(redis_logs) else redis_logs
        view["replayed_at"] = _when(h.get("replayed"))
    else:
        old = await _history_job(engine, job_id)
        if old is None:
            raise NotFound(f"no job with id {job_id!r}" + ("" if history_enabled(engine) else _gone_hint()))
        view = history_view(old)
        view["replayed_at"] = None
        logs = history_logs
    if view["max_attempts"] is None:
        view["max_attempts"] = await _task_max_attempts(engine, view["task"])
    status = view["status"]
    live = view["source"] == "redis"
    view["logs"] = logs
    view["timeline"] = timeline(view, logs)
    view["actions"] = {
        "retry": live and status == "failed",
        "cancel": live and status in ("waiting", "delayed", "active"),
        "delete": live and status != "active",
    }
    return view


async def _task_max_attempts(engine: Engine, task: str) -> int | None:
    """The attempts a job of ``task`` gets when it was enqueued without its own limit."""
    for known in await tasks(engine):
        if known["name"] == task:
            return int(known["max_attempts"])
    return None


def _gone_hint() -> str:
    return " (finished jobs expire from Redis after result_ttl; " + HISTORY_NOTICE + ")"


async def _history_logs(engine: Engine, job_id: str) -> list[dict[str, Any]]:
    reader = getattr(engine, "job_logs", None)
    if not history_enabled(engine) or not callable(reader):
        return []
    try:
        lines = await reader(job_id)
    except HISTORY_ERRORS as exc:
        log.warning("job log unavailable", error=str(exc))
        return []
    return [{"at": line.logged_at, "level": line.level, "message": line.content} for line in lines]


async def _history_job(engine: Engine, job_id: str) -> Any:
    if not history_enabled(engine):
        return None
    try:
        page = await engine.history(search=job_id, limit=20)
    except HISTORY_ERRORS as exc:
        log.warning("job log unavailable", error=str(exc))
        return None
    for job in page.jobs:
        if job.id == job_id:
            return job
    return None


def timeline(view: dict[str, Any], logs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job's life as (time, what) steps, oldest first."""
    steps: list[dict[str, Any]] = []

    def add(at: datetime | None, label: str, kind: str) -> None:
        if at is not None:
            steps.append({"at": at, "label": label, "kind": kind})

    add(view.get("created_at"), "enqueued", "waiting")
    if view["status"] == "delayed" and view.get("scheduled_for"):
        add(view["scheduled_for"], "due (retry or delay)", "delayed")
    for line in logs:
        if line["level"] in ("error", "critical"):
            # The last line of a traceback names the exception; only the end can hold it.
            first = str(line["message"])[-4096:].strip().splitlines()
            last = first[-1] if first else ""
            add(line["at"], "error: " + (last if len(last) <= 300 else last[:299] + "…"), "failed")
    add(view.get("replayed_at"), "replayed (attempts reset)", "waiting")
    attempt = view.get("attempts") or 0
    add(view.get("processed_at"), f"attempt {attempt} started" if attempt else "started", "active")
    if view["status"] in ("completed", "failed", "cancelled"):
        add(view.get("finished_at"), view["status"], view["status"])
    epoch = datetime.fromtimestamp(0, tz=UTC)
    steps.sort(key=lambda s: s["at"] or epoch)
    return steps


# --- actions ---------------------------------------------------------------------------------


async def retry_job(engine: Engine, job_id: str) -> dict[str, Any]:
    check_job_id(job_id)
    info = await live_info(engine, job_id)
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
    return {"id": job_id, "queue": info.queue, "status": "waiting"}


async def cancel_job(engine: Engine, job_id: str) -> dict[str, Any]:
    check_job_id(job_id)
    info = await live_info(engine, job_id)
    if info is None:
        raise NotFound(f"no job with id {job_id!r}")
    handle = engine.job(job_id, info.queue)
    if info.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
        raise Conflict(f"job {job_id} is {info.status}: only unfinished jobs can be cancelled")
    if not await handle.cancel():
        raise Conflict(f"job {job_id} finished before it could be cancelled")
    running = info.status == Status.ACTIVE
    return {"id": job_id, "queue": info.queue, "status": "cancelling" if running else "cancelled"}


async def delete_job(engine: Engine, job_id: str) -> dict[str, Any]:
    check_job_id(job_id)
    try:
        deleted = await engine.job(job_id).delete()
    except JobRunning as exc:
        raise Conflict(str(exc)) from None
    if not deleted:
        raise NotFound(f"no job with id {job_id!r}")
    return {"id": job_id, "deleted": True}


MAX_BULK_IDS = 1000


def check_job_ids(job_ids: Any) -> list[str]:
    """A non-empty list of valid job ids (every one checked before anything is done)."""
    if not isinstance(job_ids, list) or not job_ids:
        raise Invalid("give 'ids' (a non-empty list of job ids) or 'all': true (with task/search filters)")
    if len(job_ids) > MAX_BULK_IDS:
        raise Invalid(f"at most {MAX_BULK_IDS} ids at a time (or 'all': true with task/search filters)")
    for job_id in job_ids:
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise Invalid(f"invalid job id {str(job_id)[:80]!r}: nothing was replayed")
    return list(dict.fromkeys(job_ids))


async def replay_jobs(engine: Engine, queue: str, job_ids: Sequence[str]) -> dict[str, Any]:
    await require_queue(engine, queue)
    job_ids = check_job_ids(job_ids)
    dead = engine.dlq(queue)
    replayed: list[str] = []
    skipped: list[dict[str, str]] = []
    for job_id in job_ids:
        try:
            if await dead.replay(job_id):
                replayed.append(job_id)
            else:
                skipped.append({"id": job_id, "reason": "not failed"})
        except JobNotFound:
            skipped.append({"id": job_id, "reason": "its data is gone"})
    return {"replayed": len(replayed), "ids": replayed, "skipped": skipped}


async def _dead_matching(engine: Engine, queue: str, match: Callable[[JobInfo], bool]) -> list[JobInfo]:
    """Every dead letter of ``queue`` that ``match`` accepts, read leniently."""
    gateway = await engine.ready()
    found: list[JobInfo] = []
    position = None
    while True:
        batch = await _read_batch(gateway, queue, "dlq", position)
        if not batch:
            return found
        hashes = await gateway.job_hashes(queue, [job_id or "-" for _, job_id, _ in batch])
        for (pos, job_id, fields), h in zip(batch, hashes, strict=True):
            position = pos
            info = _info(queue, job_id, h, fields)
            if info is not None and info.id and match(info):
                found.append(info)


async def replay_matching(engine: Engine, queue: str, task: str | None, search: str | None) -> dict[str, Any]:
    await require_queue(engine, queue)
    task, search = check_task(task), check_search(search)
    gateway = await engine.ready()
    replayed = 0
    for info in await _dead_matching(engine, queue, matcher(task, search)):
        if info.task and await gateway.replay(queue, info.id) == 1:
            replayed += 1
    return {"replayed": replayed}


async def purge_dead(engine: Engine, queue: str, task: str | None, search: str | None) -> dict[str, Any]:
    """Delete the dead letters of a queue (only the matching ones when filtered)."""
    await require_queue(engine, queue)
    task, search = check_task(task), check_search(search)
    if task is None and search is None:
        return {"purged": await engine.dlq(queue).purge()}
    gateway = await engine.ready()
    purged = 0
    for info in await _dead_matching(engine, queue, matcher(task, search)):
        if await gateway.delete(queue, info.id) == 1:
            purged += 1
    return {"purged": purged}


async def enqueue(engine: Engine, body: Any) -> dict[str, Any]:
    """Enqueue from a JSON body: {task, args?, kwargs?, delay?, queue?, idempotency_key?,
    max_attempts?, timeout?}; every mistake is an Invalid naming it."""

    if not isinstance(body, dict):
        raise Invalid('the body must be a JSON object like {"task": "name", "args": [], "kwargs": {}}')
    allowed = {"task", "args", "kwargs", "delay", "queue", "idempotency_key", "max_attempts", "timeout"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    task = body.get("task")
    if not isinstance(task, str) or not task:
        raise Invalid("field 'task' is required: the name of a registered task")
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(args, list):
        raise Invalid("field 'args' must be a JSON array")
    if not isinstance(kwargs, dict):
        raise Invalid("field 'kwargs' must be a JSON object")
    options: dict[str, Any] = {}
    for name in ("delay", "queue", "idempotency_key", "max_attempts", "timeout"):
        if body.get(name) is not None:
            options[name] = body[name]
    if "queue" in options:
        try:
            check_name("queue", options["queue"])
        except ConfigurationError as exc:
            raise Invalid(str(exc)) from None
    try:
        job = await engine.with_options(task, **options).enqueue(*args, **kwargs)
    except UnknownTaskError as exc:
        raise Invalid(str(exc)) from None
    except (TypeError, ValueError, OverflowError, ConfigurationError, PayloadTooLarge) as exc:
        # ConfigurationError and PayloadTooLarge are ValueErrors: named for the reader.
        raise Invalid(str(exc)) from None
    except msgspec.MsgspecError as exc:
        raise Invalid(f"the arguments cannot be encoded: {exc}") from None
    except RecursionError:
        raise Invalid("the arguments are nested too deeply") from None
    delayed = bool(options.get("delay"))
    return {"id": job.id, "task": task, "queue": job.queue, "status": "delayed" if delayed else "waiting"}


# --- queues, workers, cron, tasks ------------------------------------------------------------


async def queue_lags(engine: Engine, queues: Sequence[str]) -> dict[str, float]:
    """Seconds since the oldest waiting entry of each queue was added (0 when none waits).

    Entries up to the group's last-delivered id were handed to workers (they are active, or
    gone); the first entry after it is the oldest one still waiting.
    """
    gateway = await engine.ready()
    now = time.time()
    out: dict[str, float] = {}
    for queue in queues:
        stream = gateway.keys.queue(queue).stream
        last: str | None = None
        try:
            for group in await gateway.redis.xinfo_groups(stream):
                if group.get("name") == GROUP:
                    last = group.get("last-delivered-id")
        except ResponseError:
            pass  # no stream yet
        start = "-" if last in (None, "0-0") else f"({last}"
        entries = await gateway.redis.xrange(stream, min=start, count=1)
        if not entries:
            out[queue] = 0.0
            continue
        added_ms = int(str(entries[0][0]).split("-", 1)[0])
        out[queue] = max(0.0, now - added_ms / 1000)
    return out


async def queue_summaries(engine: Engine) -> list[dict[str, Any]]:
    stats = await engine.stats()
    lags = await queue_lags(engine, list(stats))
    return [{"name": q, **counts, "lag_seconds": round(lags.get(q, 0.0), 3)} for q, counts in stats.items()]


async def throughput(
    engine: Engine, queues: Sequence[str], minutes: int = THROUGHPUT_MINUTES
) -> list[dict[str, Any]]:
    """Per minute, summed over ``queues``: completed, failed and the failure rate."""
    totals: dict[int, list[int]] = {}
    for queue in queues:
        for minute, completed, failed in await inspector.throughput(engine, queue, minutes):
            row = totals.setdefault(minute, [0, 0])
            row[0] += completed
            row[1] += failed
    if not totals:
        now = int(time.time() // 60) * 60
        totals = {now - 60 * i: [0, 0] for i in range(minutes)}
    out = []
    for minute in sorted(totals):
        completed, failed = totals[minute]
        done = completed + failed
        out.append(
            {
                "minute": datetime.fromtimestamp(minute, tz=UTC),
                "completed": completed,
                "failed": failed,
                "failure_rate": round(failed / done, 4) if done else 0.0,
            }
        )
    return out


async def workers(engine: Engine) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "id": beat.id,
            "host": beat.host,
            "pid": beat.pid,
            "queues": beat.queues,
            "concurrency": beat.concurrency,
            "busy": beat.busy,
            "processed": beat.processed,
            "running": beat.running,
            "started_at": datetime.fromtimestamp(beat.started_at, tz=UTC),
            "seen_at": datetime.fromtimestamp(beat.seen_at, tz=UTC),
            "seen_seconds_ago": round(max(0.0, now - beat.seen_at), 1),
        }
        for beat in await inspector.workers(engine)
    ]


async def cron(engine: Engine) -> list[dict[str, Any]]:
    rows = await inspector.cron_schedules(engine)
    return [
        {
            "name": row.name,
            "expr": row.expr,
            "tz": row.tz,
            "queue": row.queue,
            "misfire": row.misfire,
            "next_run": row.next_run,
            "last_run": row.last_run,
            "leader": row.leader,
        }
        for row in rows
    ]


async def tasks(engine: Engine) -> list[dict[str, Any]]:
    """Tasks of this app and those workers announced, with the signature callers must match."""
    from engine.core.taskdef import TaskAnnouncement

    out: dict[str, dict[str, Any]] = {}
    gateway = await engine.ready()
    for name, raw in (await gateway.redis.hgetall(gateway.keys.tasks)).items():
        try:
            ann = msgspec.json.decode(raw, type=TaskAnnouncement)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        sig = ann.signature()
        out[name] = {
            "name": name,
            "queue": ann.queue,
            "timeout": ann.timeout,
            "max_attempts": ann.max_attempts,
            "signature": None if sig is None else f"{name}{sig}",
        }
    for name, task in engine.tasks.items():
        sig = task.spec.signature
        out[name] = {
            "name": name,
            "queue": task.queue,
            "timeout": task.timeout,
            "max_attempts": task.max_attempts,
            "signature": None if sig is None else f"{name}{sig}",
        }
    return [out[k] for k in sorted(out)]


async def overview(engine: Engine) -> dict[str, Any]:
    queues = await queue_summaries(engine)
    keys = ("waiting", "active", "delayed", "completed", "failed", "dlq")
    totals = {k: sum(int(q[k]) for q in queues) for k in keys}
    beats = await workers(engine)
    return {
        "queues": queues,
        "totals": totals,
        "throughput": await throughput(engine, [q["name"] for q in queues]),
        "workers": beats,
        "history": history_enabled(engine),
    }
