"""The outbox's wire format, as the Lua scripts write it: decoding and checking events.

An outbox entry is one event (its fields) or a batch of them (``b``, a JSON array); each is
checked once, before anything is written, into an :class:`Event` whose values PostgreSQL
accepts, so one odd entry can never make a batch fail. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import structlog

from engine.core.model import LOG_LEVELS as LOG_LEVELS  # re-exported for the history API
from engine.core.model import STATUSES as ALL_STATUSES
from engine.core.partitions import base_queue

log = structlog.get_logger("engine.history")

STATUSES = tuple(str(s) for s in ALL_STATUSES)
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
    worker: str | None = None
    """The worker that ran the attempt a retry/completed/failed/cancelled event records."""


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
    worker: str | None = None
    id: str = ""


_RAW_BATCH = msgspec.json.Decoder(list[RawEvent])


class _Garbage(Exception):
    pass


def without_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL characters.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _name(value: str | None, key: str, *, required: bool = True) -> str:
    if value is None:
        if required:
            raise _Garbage(f"missing field {key!r}")
        return ""
    if len(value) > _MAX_NAME:
        raise _Garbage(f"field {key!r} is longer than {_MAX_NAME} characters")
    return without_nul(value)


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
    return msgspec.json.encode(without_nul(value)).decode()


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


def check_events(raws: Sequence[RawEvent]) -> tuple[list[Event], int, int]:
    """:func:`check_event` over a batch: ``(events, garbage, superseded)``.

    An enqueued event is left out, not even checked, when a newer state event of its job
    in the batch passed the check with the job's payload and creation time: that one makes
    the same row (see :mod:`engine.history.superseded`), and checking the enqueue was half
    the checks of a batch of jobs enqueued and run since the last one. Log lines keep their
    order; the enqueued events kept come last (rows do not depend on the order of states).
    """
    events: list[Event] = []
    enqueued: list[RawEvent] = []
    newest: dict[str, int] = {}  # job id -> version of its newest checked state with facts
    garbage = 0
    for raw in raws:
        if raw.e == "enqueued":
            enqueued.append(raw)
            continue
        event = check_event(raw)
        if event is None:
            garbage += 1
            continue
        events.append(event)
        if (
            event.payload is not None
            and event.status is not None
            and event.version > newest.get(event.job_id, 0)
        ):
            newest[event.job_id] = event.version
    superseded = 0
    for raw in enqueued:
        newer, v = newest.get(raw.j), raw.v
        if newer is not None and v is not None and v.isascii() and v.isdigit() and int(v) < newer:
            superseded += 1
            continue
        event = check_event(raw)
        if event is None:
            garbage += 1
        else:
            events.append(event)
    return events, garbage, superseded


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
    queue = base_queue(_name(raw.q, "q"))  # the history knows queues, not their partitions
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
            level=without_nul(raw.level.strip().lower()[:20]) or "info",
            message=without_nul(raw.message),
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
        error=without_nul(raw.error) if raw.error else None,
        traceback=without_nul(raw.traceback) if raw.traceback else None,
        processed_ms=_int(raw.processed, "processed", _MAX_MS, required=False),
        finished_ms=_int(raw.finished, "finished", _MAX_MS, required=kind != "retry"),
        due_ms=_int(raw.due, "due", _MAX_MS) if kind == "retry" else None,
        worker=without_nul(raw.worker)[:_MAX_NAME] if raw.worker else None,
    )
