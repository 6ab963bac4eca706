"""The job history in PostgreSQL: connection pool, migrations, batch writes, queries, retention.

Redis holds the live state of every job; the Lua script behind each state change also appends
an *event* to its queue's outbox stream, and :mod:`engine.shipper` hands those events here in
batches. :meth:`JobLog.write` applies a batch in one transaction and is idempotent and
order-insensitive:

- a job row only moves forward: an event is applied when its version ``v`` is larger than the
  version stored (the row remembers the ``v`` of the event it reflects);
- facts that never change (payload, creation time, task name) are filled in whenever they
  arrive, so a job first seen through a late event (completed before enqueued) is created
  from what that event carries and completed by the enqueue event later;
- every log line and every failed attempt's error becomes one ``job_logs`` row keyed by its
  outbox entry id, so shipping an entry twice adds nothing;
- a ``deleted`` event (a job deleted, a dead-letter queue purged) deletes the job's rows and
  leaves a tombstone, so an event of the job from that outbox entry or an earlier one that
  arrives late (another shipper's, a dead shipper's reclaimed entries) writes nothing.

Reads (:meth:`JobLog.history`, :meth:`JobLog.job`, :meth:`JobLog.logs`) serve the dashboard;
:meth:`JobLog.prune` is the retention policy (failed jobs are kept unless asked).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import asyncpg.exceptions
import msgspec
import structlog

from engine.core.errors import ConfigurationError, ConnectionFailed
from engine.streams import mask_url

__all__ = [
    "EVENT_TYPES",
    "LOG_LEVELS",
    "SCHEMA_VERSION",
    "STATUSES",
    "TOMBSTONE_RETENTION",
    "Event",
    "HistoryJob",
    "HistoryPage",
    "JobLog",
    "LogLine",
    "RawEvent",
    "check_event",
    "decode_entry",
    "is_data_error",
    "parse_event",
    "schema_sql",
]

log = structlog.get_logger("engine.joblog")

SCHEMA_VERSION = 1
"""Version of ``schema.sql``; :meth:`JobLog.migrate` records it in ``engine_schema_version``."""

_MIGRATE_LOCK = 0x656E67696E6501  # pg_advisory_xact_lock key: "engine" + 1
# Held shared by every write and exclusively by a write that deletes jobs (see JobLog.write).
_DELETE_LOCK = 0x656E67696E6502
# How long a deleted job's tombstone is kept: far longer than any event of it can wait in
# an outbox (a dead shipper's entries are taken over within about a visibility timeout).
TOMBSTONE_RETENTION = timedelta(days=7)

STATUSES = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
EVENT_TYPES = ("enqueued", "retry", "completed", "failed", "cancelled", "replayed", "log", "deleted")

# Status a job has after each state event (``enqueued`` carries its own).
_STATUS_AFTER = {
    "retry": "delayed",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "replayed": "waiting",
}
# Fields each event type must carry besides e, j, q, t (and v, task for state events).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "enqueued": ("payload", "status"),
    "retry": ("attempts", "error", "due"),
    "completed": ("attempts", "result", "finished"),
    "failed": ("attempts", "error", "finished"),
    "cancelled": ("attempts", "finished"),
    "replayed": (),
    "log": ("level", "message"),
    "deleted": (),
}
# Limits that keep every value inside what PostgreSQL accepts (so one odd entry can never
# make a whole batch fail): btree index rows must stay under ~2.7 kB (an index holds a queue
# or task name and a job id: 2 x 200 characters of up to 4 bytes), int columns are 32 bit.
# Engine names are at most 100 characters (engine.core.keys.check_name), job ids 26.
_MAX_NAME = 200
_MAX_INT32 = 2**31 - 1
_MAX_INT64 = 2**63 - 1
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_LIMIT = 1000


def schema_sql() -> str:
    """The text of ``engine/schema.sql`` (shipped inside the package)."""
    return resources.files("engine").joinpath("schema.sql").read_text(encoding="utf-8")


# --- events ----------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, gc=False):
    """One outbox event, checked and typed. Times are ms since the epoch. ``entry_id`` is the
    outbox entry's id (with ``.index`` for an event of a batched entry)."""

    entry_id: str
    type: str
    job_id: str
    queue: str
    task: str
    at_ms: int
    version: int
    """The job's ``v`` after this event; 0 for a log line that carries none."""
    status: str | None = None
    """The job's status after the event (None for a log line)."""
    payload: str | None = None
    """Valid JSON text (an invalid one arrives here encoded as a JSON string)."""
    created_ms: int | None = None
    attempts: int | None = None
    result: str | None = None
    error: str | None = None
    traceback: str | None = None
    processed_ms: int | None = None
    finished_ms: int | None = None
    due_ms: int | None = None
    level: str | None = None
    message: str | None = None


class RawEvent(msgspec.Struct, gc=False):
    """An outbox event as a script wrote it, every value text, not yet checked (see
    :func:`check_event`). ``id`` is the outbox entry id (for an event of a batched entry,
    the entry id and its index in the batch); ``q`` and ``t`` come from the entry for a
    batched event."""

    e: str
    j: str
    q: str | None = None
    t: str | None = None
    v: str | None = None
    task: str | None = None
    status: str | None = None
    payload: str | None = None
    created: str | None = None
    attempts: str | None = None
    processed: str | None = None
    result: str | None = None
    finished: str | None = None
    error: str | None = None
    traceback: str | None = None
    due: str | None = None
    level: str | None = None
    message: str | None = None
    id: str = ""


_RAW_BATCH = msgspec.json.Decoder(list[RawEvent])


class _Garbage(Exception):
    pass


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL characters.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _name(value: str | None, key: str, *, required: bool = True) -> str:
    if value is None:
        if required:
            raise _Garbage(f"missing field {key!r}")
        return ""
    if len(value) > _MAX_NAME:
        raise _Garbage(f"field {key!r} is longer than {_MAX_NAME} characters")
    return _text(value)


def _int(value: str | None, key: str, maximum: int, *, required: bool = True) -> int | None:
    if value is None or value == "":
        if required:
            raise _Garbage(f"missing field {key!r}")
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise _Garbage(f"field {key!r} is not a non-negative integer: {value[:40]!r}")
    number = int(value)
    if number > maximum:
        raise _Garbage(f"field {key!r} is out of range: {value}")
    return number


def _req_int(value: str | None, key: str, maximum: int) -> int:
    number = _int(value, key, maximum)
    assert number is not None
    return number


def _json(value: str, key: str, entry_id: str) -> str:
    """Valid JSON text as is; anything else kept as a JSON string (nothing is lost)."""
    # PostgreSQL's jsonb refuses the NUL escape that JSON itself allows.
    if "\\u0000" not in value:
        try:
            msgspec.json.decode(value)
        except msgspec.DecodeError:
            pass
        else:
            return value
    log.warning("job-log event with invalid JSON, stored as a string", entry=entry_id, field=key)
    return msgspec.json.encode(_text(value)).decode()


def _garbage(entry_id: str, reason: str, kind: object = None, job_id: object = None) -> None:
    log.error(
        "skipping a garbage job-log event",
        entry=entry_id,
        reason=reason,
        event_type=str(kind)[:40] if kind is not None else None,
        job_id=str(job_id)[:100] if job_id is not None else None,
    )


def _raw(entry_id: str, fields: object) -> RawEvent | None:
    """The fields of a one-event entry (or one item of a batch) as a RawEvent; None, logged,
    when they are not a map of text values with ``e`` and ``j``."""
    try:
        raw = msgspec.convert(fields, RawEvent)
    except msgspec.ValidationError as exc:
        get = fields.get if isinstance(fields, dict) else {}.get
        _garbage(entry_id, f"malformed entry: {exc}", get("e"), get("j"))
        return None
    raw.id = entry_id
    return raw


def decode_entry(entry_id: str, fields: dict[str, str]) -> tuple[list[RawEvent], int, int]:
    """The events of one outbox entry, not yet checked: ``(events, garbage, extra)``.

    An entry is one event (its fields) or, written by a script that changed a batch of
    jobs, a batch: ``b`` a JSON array of events that share the entry's ``q`` and ``t``, and
    ``n`` their number. ``garbage`` counts what was skipped as unreadable (an event, or the
    whole entry); ``extra`` is what the entry adds to the outbox's count of events beyond
    one per entry (see :func:`engine.core.keys.outbox_extra`).
    """
    batch = fields.get("b") if isinstance(fields, dict) else None
    if batch is None:
        raw = _raw(entry_id, fields)
        return ([raw], 0, 0) if raw is not None else ([], 1, 0)
    count = fields.get("n")
    extra = int(count) - 1 if isinstance(count, str) and count.isascii() and count.isdigit() else 0
    extra = max(0, min(extra, _MAX_INT32))
    q, t = fields.get("q"), fields.get("t")
    try:
        raws = _RAW_BATCH.decode(batch)
    except msgspec.ValidationError:
        # Some event of the batch is malformed: take the others one by one.
        items = msgspec.json.decode(batch)
        if not isinstance(items, list):
            _garbage(entry_id, "unreadable batch: 'b' is not an array of events")
            return [], 1, extra
        found = [_raw(f"{entry_id}.{i}", item) for i, item in enumerate(items)]
        raws = [raw for raw in found if raw is not None]
        garbage = len(found) - len(raws)
    except msgspec.DecodeError as exc:
        _garbage(entry_id, f"unreadable batch: {exc}")
        return [], 1, extra
    else:
        garbage = 0
        for i, raw in enumerate(raws):
            raw.id = f"{entry_id}.{i}"  # each needs an id of its own: job_logs rows are keyed by it
    for raw in raws:
        raw.q, raw.t = q, t
    return raws, garbage, extra


def check_event(raw: RawEvent) -> Event | None:
    """Check and type one event; garbage is logged and gives None."""
    try:
        return _check(raw)
    except _Garbage as exc:
        _garbage(raw.id, str(exc), raw.e, raw.j)
        return None


def parse_event(entry_id: str, fields: dict[str, str]) -> Event | None:
    """Check and type a one-event outbox entry; garbage is logged and gives None."""
    raw = _raw(entry_id, fields)
    return check_event(raw) if raw is not None else None


def _check(raw: RawEvent) -> Event:
    kind = raw.e
    required = _REQUIRED.get(kind)
    if required is None:
        raise _Garbage(f"unknown event type {kind[:40]!r}")
    for key in required:
        if getattr(raw, key) is None:
            raise _Garbage(f"{kind} event without field {key!r}")
    entry_id = raw.id
    job_id = _name(raw.j, "j")
    queue = _name(raw.q, "q")
    if not job_id or not queue:
        raise _Garbage("empty job id or queue name")
    at_ms = _req_int(raw.t, "t", _MAX_MS)
    if kind == "deleted":
        # Its place in the outbox is what counts (see JobLog.write), not a version: the
        # job's hash, which holds the version, is gone.
        return Event(
            entry_id=entry_id, type=kind, job_id=job_id, queue=queue, task="", at_ms=at_ms, version=0
        )
    if kind == "log":
        assert raw.level is not None and raw.message is not None  # required
        return Event(
            entry_id=entry_id,
            type=kind,
            job_id=job_id,
            queue=queue,
            task=_name(raw.task, "task", required=False),
            at_ms=at_ms,
            version=_int(raw.v, "v", _MAX_INT64, required=False) or 0,
            level=_text(raw.level.strip().lower()[:20]) or "info",
            message=_text(raw.message),
        )
    task = _name(raw.task, "task")
    version = _req_int(raw.v, "v", _MAX_INT64)
    if version < 1:
        raise _Garbage("version 'v' must be at least 1")
    if kind == "enqueued":
        assert raw.status is not None and raw.payload is not None  # required
        if raw.status not in ("waiting", "delayed"):
            raise _Garbage(f"enqueued event with status {raw.status[:40]!r}")
        return Event(
            entry_id=entry_id,
            type=kind,
            job_id=job_id,
            queue=queue,
            task=task,
            at_ms=at_ms,
            version=version,
            status=raw.status,
            payload=_json(raw.payload, "payload", entry_id),
            created_ms=_int(raw.created, "created", _MAX_MS, required=False) or at_ms,
            attempts=0,
        )
    # Every state event after the enqueue carries the job's payload and creation time (older
    # engines wrote none): enough to make the whole row if its enqueue event is never written.
    payload = raw.payload
    created_ms = _int(raw.created, "created", _MAX_MS, required=False) if payload else None
    payload = _json(payload, "payload", entry_id) if payload and created_ms is not None else None
    if kind == "replayed":
        return Event(
            entry_id=entry_id,
            type=kind,
            job_id=job_id,
            queue=queue,
            task=task,
            at_ms=at_ms,
            version=version,
            status="waiting",
            payload=payload,
            created_ms=created_ms,
            attempts=0,
        )
    result = raw.result
    return Event(
        entry_id=entry_id,
        type=kind,
        job_id=job_id,
        queue=queue,
        task=task,
        at_ms=at_ms,
        version=version,
        status=_STATUS_AFTER[kind],
        payload=payload,
        created_ms=created_ms,
        attempts=_req_int(raw.attempts, "attempts", _MAX_INT32),
        result=_json(result, "result", entry_id) if kind == "completed" and result is not None else None,
        error=_text(raw.error) if raw.error else None,
        traceback=_text(raw.traceback) if raw.traceback else None,
        processed_ms=_int(raw.processed, "processed", _MAX_MS, required=False),
        finished_ms=_int(raw.finished, "finished", _MAX_MS, required=kind != "retry"),
        due_ms=_int(raw.due, "due", _MAX_MS) if kind == "retry" else None,
    )


# --- results ---------------------------------------------------------------------------------


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


def _encode_cursor(created_at: datetime, job_id: str) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    raw = msgspec.json.encode([micros, job_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
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


# --- SQL -------------------------------------------------------------------------------------

_MS = "('epoch'::timestamptz + {} * interval '1 millisecond')"
_NEWER = "excluded.version > j.version"

# One statement for all job rows of a batch (ids unique within it, sorted so concurrent
# shippers lock rows in the same order). State columns move only with a newer version and
# are then what that event says (so collapsing a job's events within a batch to the newest
# one gives the same row as applying them one by one; processed_at, which not every event
# carries, only moves forward in time); facts that never change are filled in whenever they
# are missing. The WHERE clause makes a re-shipped batch touch nothing at all.
_UPSERT_JOBS = f"""
INSERT INTO jobs AS j (id, queue_name, task_name, payload, attempts, status, result, error, traceback,
                       created_at, processed_at, finished_at, due_at, last_event, version)
SELECT u.id, u.queue_name, u.task_name, u.payload::jsonb, u.attempts, u.status, u.result::jsonb,
       u.error, u.traceback, {_MS.format("u.created")}, {_MS.format("u.processed")},
       {_MS.format("u.finished")}, {_MS.format("u.due")}, u.last_event, u.version
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[],
            $14::text[], $15::bigint[])
     AS u(id, queue_name, task_name, payload, attempts, status, result, error, traceback,
          created, processed, finished, due, last_event, version)
ORDER BY u.id
ON CONFLICT (id) DO UPDATE SET
    task_name = CASE WHEN j.task_name = '' THEN excluded.task_name ELSE j.task_name END,
    payload = COALESCE(j.payload, excluded.payload),
    created_at = CASE WHEN j.payload IS NOT NULL THEN j.created_at  -- exact: from the enqueue event
                      WHEN excluded.payload IS NOT NULL THEN excluded.created_at
                      ELSE LEAST(j.created_at, excluded.created_at) END,
    attempts = CASE WHEN {_NEWER} THEN excluded.attempts ELSE j.attempts END,
    status = CASE WHEN {_NEWER} THEN excluded.status ELSE j.status END,
    result = CASE WHEN {_NEWER} THEN excluded.result ELSE j.result END,
    error = CASE WHEN {_NEWER} THEN excluded.error ELSE j.error END,
    traceback = CASE WHEN {_NEWER} THEN excluded.traceback ELSE j.traceback END,
    processed_at = CASE WHEN {_NEWER} THEN GREATEST(excluded.processed_at, j.processed_at)
                        ELSE j.processed_at END,
    finished_at = CASE WHEN {_NEWER} THEN excluded.finished_at ELSE j.finished_at END,
    due_at = CASE WHEN {_NEWER} THEN excluded.due_at ELSE j.due_at END,
    last_event = CASE WHEN {_NEWER} THEN excluded.last_event ELSE j.last_event END,
    version = GREATEST(j.version, excluded.version),
    updated_at = now()
WHERE {_NEWER}
   OR (j.payload IS NULL AND excluded.payload IS NOT NULL)
   OR (j.task_name = '' AND excluded.task_name <> '')
   OR (j.payload IS NULL AND excluded.created_at < j.created_at)
"""

_INSERT_LOGS = f"""
INSERT INTO job_logs (job_id, content, level, logged_at, event_id)
SELECT u.job_id, u.content, u.level, {_MS.format("u.at")}, u.event_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) WITH ORDINALITY
     AS u(job_id, content, level, at, event_id, n)
ORDER BY u.n
ON CONFLICT (job_id, event_id) DO NOTHING
"""

# A re-shipped deletion keeps the later position.
_UPSERT_TOMBSTONES = """
INSERT INTO deleted_jobs AS d (id, queue_name, entry_ms, entry_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
ON CONFLICT (id) DO UPDATE SET entry_ms = excluded.entry_ms, entry_seq = excluded.entry_seq,
                               deleted_at = now()
WHERE (excluded.entry_ms, excluded.entry_seq) > (d.entry_ms, d.entry_seq)
"""

_JOB_COLUMNS = (
    "id, queue_name, task_name, payload::text AS payload, attempts, status, result::text AS result, "
    "error, traceback, created_at, processed_at, finished_at, updated_at"
)


class _Rows:
    """Column arrays for ``_UPSERT_JOBS`` and ``_INSERT_LOGS``, built from one batch."""

    __slots__ = ("jobs", "logs")

    def __init__(self, events: Sequence[Event]) -> None:
        latest: dict[str, Event] = {}  # job id -> its state event with the highest version
        facts: dict[str, Event] = {}  # job id -> an event with its payload, the enqueue's first
        earliest: dict[str, int] = {}  # job id -> earliest time seen in the batch
        processed_max: dict[str, int] = {}  # job id -> start of its latest attempt seen
        log_only: dict[str, Event] = {}
        log_job: list[str] = []
        log_content: list[str] = []
        log_level: list[str] = []
        log_at: list[int] = []
        log_entry: list[str] = []
        for ev in events:
            job_id = ev.job_id
            at = ev.at_ms if ev.processed_ms is None else min(ev.at_ms, ev.processed_ms)
            seen = earliest.get(job_id)
            if seen is None or at < seen:
                earliest[job_id] = at
            if ev.processed_ms is not None and ev.processed_ms > processed_max.get(job_id, -1):
                processed_max[job_id] = ev.processed_ms
            if ev.type == "log":
                log_job.append(job_id)
                log_content.append(ev.message or "")
                log_level.append(ev.level or "info")
                log_at.append(ev.at_ms)
                log_entry.append(ev.entry_id)
                if job_id not in log_only:
                    log_only[job_id] = ev
                continue
            current = latest.get(job_id)
            if current is None or ev.version > current.version:
                latest[job_id] = ev
            if ev.type == "enqueued" or (ev.payload is not None and job_id not in facts):
                facts[job_id] = ev
            if ev.type in ("retry", "failed"):
                # Every failed attempt leaves an error line with its traceback.
                log_job.append(job_id)
                log_content.append(f"{ev.error or ''}\n\n{ev.traceback or ''}")
                log_level.append("error")
                log_at.append(ev.at_ms)
                log_entry.append(ev.entry_id)

        ids: list[str] = []
        queues: list[str] = []
        tasks: list[str] = []
        payloads: list[str | None] = []
        attempts: list[int] = []
        statuses: list[str] = []
        results: list[str | None] = []
        errors: list[str | None] = []
        tracebacks: list[str | None] = []
        created: list[int] = []
        processed: list[int | None] = []
        finished: list[int | None] = []
        due: list[int | None] = []
        last_event: list[str] = []
        versions: list[int] = []
        for job_id, ev in latest.items():
            first = facts.get(job_id)
            ids.append(job_id)
            queues.append(ev.queue)
            tasks.append(first.task if first is not None and first.task else ev.task)
            attempts.append(ev.attempts or 0)
            statuses.append(ev.status or "waiting")
            results.append(ev.result)
            errors.append(ev.error)
            tracebacks.append(ev.traceback)
            processed.append(processed_max.get(job_id))
            finished.append(ev.finished_ms)
            due.append(ev.due_ms)
            last_event.append(ev.type)
            versions.append(ev.version)
            if first is not None:
                payloads.append(first.payload)
                created.append(first.created_ms if first.created_ms is not None else first.at_ms)
            else:
                payloads.append(None)
                created.append(earliest[job_id])
        for job_id, ev in log_only.items():
            if job_id in latest:
                continue
            # Known so far only from its log lines: a placeholder that any state event
            # overrides (version 0), running since it logs.
            ids.append(job_id)
            queues.append(ev.queue)
            tasks.append(ev.task)
            payloads.append(None)
            attempts.append(0)
            statuses.append("active")
            results.append(None)
            errors.append(None)
            tracebacks.append(None)
            created.append(earliest[job_id])
            processed.append(None)
            finished.append(None)
            due.append(None)
            last_event.append("log")
            versions.append(0)
        self.jobs: tuple[list[Any], ...] = (
            ids,
            queues,
            tasks,
            payloads,
            attempts,
            statuses,
            results,
            errors,
            tracebacks,
            created,
            processed,
            finished,
            due,
            last_event,
            versions,
        )
        self.logs: tuple[list[Any], ...] = (log_job, log_content, log_level, log_at, log_entry)


def _position(entry_id: str) -> tuple[int, int]:
    """Where an event stands in its outbox: its entry id ``ms-seq`` (of a batched entry's
    event, ``ms-seq.index``: the events of one entry stand together). Entry ids of a stream
    only grow, and a job's events all go to its queue's outbox. An id that is not one (only
    hand-made events have them) stands first."""
    ms, _, seq = entry_id.partition(".")[0].partition("-")
    if ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit() and len(ms) <= 18 and len(seq) <= 18:
        return int(ms), int(seq)
    return 0, 0


def is_data_error(exc: BaseException) -> bool:
    """True when PostgreSQL (or asyncpg's encoder) refused the data itself, not the connection.

    Such a batch fails the same way every time; the shipper then writes it in halves to set
    the offending events aside instead of retrying it forever.
    """
    if isinstance(
        exc,
        asyncpg.exceptions.DataError
        | asyncpg.exceptions.IntegrityConstraintViolationError
        | asyncpg.exceptions.ProgramLimitExceededError,
    ):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


# --- the store -------------------------------------------------------------------------------


class JobLog:
    """The PostgreSQL job history: one asyncpg pool, shared by the shipper and the dashboard."""

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 60.0,
        schema: str | None = None,
        migrate_on_connect: bool = False,
    ) -> None:
        self.migrate_on_connect = migrate_on_connect
        self.url = _check_database_url(database_url)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigurationError(
                f"invalid pool size min_size={min_size} max_size={max_size}: need 0 <= min_size <= max_size"
            )
        if connect_timeout <= 0:
            raise ConfigurationError("connect_timeout must be > 0 seconds")
        if schema is not None and (not schema or len(schema) > 63 or "\x00" in schema):
            raise ConfigurationError(f"invalid schema name {schema!r}")
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.schema = schema
        self._pool: asyncpg.Pool | None = None

    # -- lifetime ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the pool; raises ConnectionFailed (URL password masked) if the server is unreachable."""
        if self._pool is not None:
            return
        settings = {"application_name": "engine"}
        if self.schema is not None:
            settings["search_path"] = self.schema
        where = mask_url(self.url)
        try:
            with anyio.fail_after(self.connect_timeout):
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    timeout=self.connect_timeout,
                    command_timeout=self.command_timeout,
                    server_settings=settings,
                )
        except TimeoutError:
            raise ConnectionFailed(
                f"cannot reach PostgreSQL at {where}: no answer within {self.connect_timeout:g}s"
            ) from None
        except (asyncpg.exceptions.ClientConfigurationError, ValueError) as exc:
            raise ConfigurationError(f"invalid PostgreSQL URL {where!r}: {self._scrub(exc)}") from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConnectionFailed(f"cannot reach PostgreSQL at {where}: {self._scrub(exc)}") from None
        if self.migrate_on_connect:
            # Workers bring the schema up to date themselves: zero set-up, and idempotent.
            await self.migrate()

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        password = urlsplit(self.url).password
        return text.replace(password, "***") if password else text

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> JobLog:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._pool is not None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("JobLog is not connected: await joblog.connect() first")
        return self._pool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            yield conn

    async def migrate(self) -> int:
        """Apply ``schema.sql`` (idempotent, serialised by an advisory lock); the schema version."""
        sql = schema_sql()
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO engine_schema_version (version) VALUES ($1) ON CONFLICT (version) DO NOTHING",
                SCHEMA_VERSION,
            )
            version: int = await conn.fetchval("SELECT max(version) FROM engine_schema_version")
        return version

    # -- writes -----------------------------------------------------------------------------

    async def write(self, events: Sequence[Event]) -> None:
        """Apply a batch of events in one transaction (idempotent, order-insensitive).

        A ``deleted`` event deletes the job's rows (its log lines go with them) and records
        a tombstone with the event's outbox position; events of the job from the same entry
        or an earlier one are dropped, in this batch and in any later one. Shippers work on
        an outbox side by side, so such an event may well be written after the deletion.
        A write holds a lock shared by all writes, and one that deletes holds it alone: so a
        write that started before a deletion commits before it (and its rows are deleted),
        and one that starts after it sees its tombstones.
        """
        if not events:
            return
        deletions: dict[str, tuple[tuple[int, int], str]] = {}  # job id -> (position, queue)
        rest: list[Event] = []
        for ev in events:
            if ev.type != "deleted":
                rest.append(ev)
                continue
            position = _position(ev.entry_id)
            seen = deletions.get(ev.job_id)
            if seen is None or position > seen[0]:
                deletions[ev.job_id] = (position, ev.queue)
        async with self._conn() as conn, conn.transaction():
            if deletions:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _DELETE_LOCK)
                ids = sorted(deletions)
                await conn.execute(
                    _UPSERT_TOMBSTONES,
                    ids,
                    [deletions[i][1] for i in ids],
                    [deletions[i][0][0] for i in ids],
                    [deletions[i][0][1] for i in ids],
                )
                # Before the events of this batch: one from after the deletion makes a new row.
                await conn.execute("DELETE FROM jobs WHERE id = ANY($1::text[])", ids)
            else:
                await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", _DELETE_LOCK)
            if not rest:
                return
            tombstones = await conn.fetch(
                "SELECT id, entry_ms, entry_seq FROM deleted_jobs WHERE id = ANY($1::text[])",
                list({ev.job_id for ev in rest}),
            )
            if tombstones:
                deleted_at = {r["id"]: (r["entry_ms"], r["entry_seq"]) for r in tombstones}
                rest = [
                    ev
                    for ev in rest
                    if ev.job_id not in deleted_at or _position(ev.entry_id) > deleted_at[ev.job_id]
                ]
            rows = _Rows(rest)
            if rows.jobs[0]:
                await conn.execute(_UPSERT_JOBS, *rows.jobs)
            if rows.logs[0]:
                await conn.execute(_INSERT_LOGS, *rows.logs)

    # -- reads ------------------------------------------------------------------------------

    async def history(
        self,
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
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {_MAX_LIMIT}, not {limit!r}")
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
            pattern = arg(_like_pattern(_text(search)))
            where.append(
                f"(id ILIKE {pattern} OR task_name ILIKE {pattern} OR error ILIKE {pattern}"
                f" OR payload::text ILIKE {pattern})"
            )
        if cursor is not None:
            created_at, job_id = _decode_cursor(cursor)
            where.append(f"(created_at, id) < ({arg(created_at)}, {arg(job_id)})")
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at DESC, id DESC LIMIT {arg(limit + 1)}"
        async with self._conn() as conn:
            records = await conn.fetch(sql, *args)
        jobs = [_history_job(r) for r in records[:limit]]
        next_cursor = None
        if len(records) > limit:
            last = records[limit - 1]
            next_cursor = _encode_cursor(last["created_at"], last["id"])
        return HistoryPage(jobs=jobs, next_cursor=next_cursor)

    async def job(self, job_id: str) -> HistoryJob | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
        return None if row is None else _history_job(row)

    async def logs(self, job_id: str, limit: int = 1000) -> list[LogLine]:
        """A job's log lines (its own and one error line per failed attempt), oldest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        async with self._conn() as conn:
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

    # -- retention --------------------------------------------------------------------------

    async def prune(
        self,
        *,
        completed_older_than: timedelta,
        failed_older_than: timedelta | None = None,
        batch: int = 5000,
    ) -> int:
        """Delete finished jobs (and their logs) older than the cutoffs; the number of jobs deleted.

        Completed and cancelled jobs go after ``completed_older_than``; failed jobs are kept
        unless ``failed_older_than`` is given. Tombstones of deleted jobs go after
        ``TOMBSTONE_RETENTION``. Deletes ``batch`` rows per statement, each its
        own transaction, so the table is never locked for long.
        """
        for name, value in (
            ("completed_older_than", completed_older_than),
            ("failed_older_than", failed_older_than),
        ):
            if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
                raise ValueError(f"{name} must be a non-negative timedelta, not {value!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, not {batch!r}")
        now = datetime.now(UTC)
        plan: list[tuple[list[str], datetime]] = [(["completed", "cancelled"], now - completed_older_than)]
        if failed_older_than is not None:
            plan.append((["failed"], now - failed_older_than))
        sql = (
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status = ANY($1::text[])"
            " AND finished_at < $2 LIMIT $3)"
        )
        total = 0
        for statuses, cutoff in plan:
            while True:
                async with self._conn() as conn:
                    reply = await conn.execute(sql, statuses, cutoff, batch)
                deleted = int(reply.rsplit(" ", 1)[-1])
                total += deleted
                if deleted < batch:
                    break
        while True:
            async with self._conn() as conn:
                reply = await conn.execute(
                    "DELETE FROM deleted_jobs WHERE id IN (SELECT id FROM deleted_jobs WHERE deleted_at < $1"
                    " LIMIT $2)",
                    now - TOMBSTONE_RETENTION,
                    batch,
                )
            if int(reply.rsplit(" ", 1)[-1]) < batch:
                break
        if total:
            log.info("pruned the job history", deleted=total)
        return total


def _check_database_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("PostgreSQL URL is empty: pass database_url= or set ENGINE_DATABASE_URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"invalid PostgreSQL URL {mask_url(url)!r}: it must start with postgresql:// "
            "(for example postgresql://user:password@localhost:5432/app)"
        )
    return url
