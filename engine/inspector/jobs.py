"""One job as Redis holds it, read leniently: a hash or dead letter never fails a listing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import msgspec

from engine.core.model import JobInfo, Status, attempt_workers, lenient_number, ms_to_datetime

if TYPE_CHECKING:
    from engine.runtime import Runtime

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


def when(value: str | None) -> datetime | None:
    """A millisecond timestamp field, or None when it is not one (never an exception)."""
    return ms_to_datetime(value) if value and _DIGITS.fullmatch(value) else None


def finite_number(value: str | None, kind: type[int] | type[float]) -> Any:
    """A number field; None when unset, not a number, or not finite ("nan", "inf")."""
    number = lenient_number(value, kind)
    # Only a float can be infinite; math.isfinite() of a huge int would raise OverflowError.
    return None if isinstance(number, float) and not math.isfinite(number) else number


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
        raw_status = h.get("status") or Status.WAITING
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
        info.attempts = finite_number(h.get("attempts"), int) or 0
        info.max_attempts = finite_number(h.get("max_attempts"), int)
        info.result = _lenient_json(h.get("result"))
        info.error = h.get("error") or None
        info.traceback = h.get("traceback") or None
        info.progress = finite_number(h.get("progress"), float)
        info.created_at = when(h.get("created"))
        info.scheduled_for = when(h.get("due"))
        info.processed_at = when(h.get("processed"))
        info.finished_at = when(h.get("finished"))
        info.scheduled_at = when(h.get("tick"))
        info.worker = h.get("worker") or None
        info.attempt_workers = attempt_workers(h)
    if info.progress is not None and not math.isfinite(info.progress):
        info.progress = None
    return info


def dead_info(queue: str, job_id: str, fields: dict[str, str]) -> JobInfo:
    """A dead letter whose job data is gone (a poison entry, or failed_ttl expired it), from
    what its entry says."""
    return JobInfo(
        id=job_id or "",
        task=fields.get("task", ""),
        queue=queue,
        status=Status.FAILED,
        attempts=finite_number(fields.get("attempts"), int) or 0,
        error=fields.get("error"),
        traceback=fields.get("traceback") or None,
        finished_at=when(fields.get("at")),
    )


@dataclass(frozen=True)
class LiveJob:
    """A job Redis still holds, and when it was last replayed (not part of :class:`JobInfo`)."""

    info: JobInfo
    replayed_at: datetime | None


async def live_job(engine: Runtime, job_id: str, queue: str | None = None) -> LiveJob | None:
    """The job from Redis (None when it is not there), read leniently."""
    gateway = await engine.ready()
    if queue is not None and len(engine.layout.partitions(queue)) > 1:
        queue = None  # which partition holds it is found by its id
    if queue is None:
        queue = await gateway.find_queue(job_id)
    if queue is None:
        return None
    h = await gateway.job_hash(queue, job_id)
    if h is None:
        return None
    return LiveJob(read_info(job_id, queue, h), when(h.get("replayed")))


async def live_info(engine: Runtime, job_id: str, queue: str | None = None) -> JobInfo | None:
    """:func:`live_job` without the replay time."""
    job = await live_job(engine, job_id, queue)
    return None if job is None else job.info
