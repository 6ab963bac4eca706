"""Job envelope, statuses and the read model (:class:`JobInfo`)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec

from engine.core.partitions import base_queue, is_partition


class Status(StrEnum):
    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The one status vocabulary: every list of statuses elsewhere is one of these.
STATUSES: tuple[Status, ...] = tuple(Status)
FINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
# What Redis can list without the job log: the stream, the delayed set and the DLQ.
LIVE_STATUSES: tuple[Status, ...] = (Status.WAITING, Status.ACTIVE, Status.DELAYED, Status.FAILED)
# The one log-level vocabulary: ctx.log(level=), job_logs.level, the dashboard's filter.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Payload(msgspec.Struct, frozen=True):
    """A job's arguments as stored (JSON) in Redis and in the ``jobs.payload`` column."""

    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    meta: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    """The job's ``meta`` (a trace id...), left out of the JSON when there is none."""

    @property
    def meta_or_empty(self) -> dict[str, Any]:
        """``meta``, or {} for a job that has none."""
        return self.meta if isinstance(self.meta, dict) else {}


payload_decoder = msgspec.json.Decoder(Payload)
json_encoder = msgspec.json.Encoder()
json_decoder = msgspec.json.Decoder()


def ms_to_datetime(value: str | bytes | int | None) -> datetime | None:
    """Milliseconds since the epoch as a datetime; None when unset, or when the value is
    not a time a datetime can hold (garbage someone wrote into a hash must show, not crash
    a page or a listing)."""
    if value is None or value in ("", b""):
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def lenient_number(raw: str | None, kind: type[int] | type[float]) -> Any:
    """A number read back from Redis, or None when unset or not a number (tampered data)."""
    try:
        return kind(raw) if raw else None
    except (ValueError, OverflowError):
        return None


def _status(raw: str | None) -> Status:
    try:
        return Status(raw or "waiting")
    except ValueError:
        return Status.FAILED  # not a status the engine writes: the hash was tampered with


class JobInfo(msgspec.Struct, kw_only=True):
    """A snapshot of one job, as ``job.info()`` and the dashboard see it."""

    id: str
    task: str
    queue: str
    status: Status
    attempts: int
    max_attempts: int | None = None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: float | None = None
    created_at: datetime | None = None
    scheduled_for: datetime | None = None
    processed_at: datetime | None = None
    finished_at: datetime | None = None
    scheduled_at: datetime | None = None
    worker: str | None = None
    """The worker (``host-pid-suffix``) running the job, or that ran its last attempt."""
    attempt_workers: list[str] = []
    """The worker of each attempt so far, first attempt first (the last one is ``worker``)."""
    raw_payload: str | None = None
    """The stored payload as text, set only when it could not be decoded."""
    meta: dict[str, Any] = {}
    """What the producer attached to the job (``with_options(meta=...)``, enqueue hooks)."""
    partition: str | None = None
    """The partition holding the job, when its queue is partitioned (``queue`` names the
    queue itself)."""

    def __post_init__(self) -> None:
        if is_partition(self.queue):
            self.partition, self.queue = self.queue, base_queue(self.queue)

    @classmethod
    def from_hash(cls, job_id: str, queue: str, h: dict[str, str]) -> JobInfo:
        """Build from the job's Redis hash (decoded strings, see ``scripts/enqueue.lua``)."""
        raw_payload = h.get("payload") or ""
        try:
            payload = payload_decoder.decode(raw_payload) if raw_payload else Payload()
            raw_payload = ""
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            payload = Payload()  # garbage is shown as it is (raw_payload), never a crash
        try:
            result = json_decoder.decode(h["result"]) if h.get("result") else None
        except (msgspec.DecodeError, RecursionError):
            result = h["result"]
        return cls(
            id=job_id,
            task=h.get("task", ""),
            queue=queue,
            status=_status(h.get("status")),
            attempts=lenient_number(h.get("attempts"), int) or 0,
            max_attempts=lenient_number(h.get("max_attempts"), int),
            args=payload.args,
            kwargs=payload.kwargs,
            meta=payload.meta_or_empty,
            result=result,
            error=h.get("error") or None,
            traceback=h.get("traceback") or None,
            progress=lenient_number(h.get("progress"), float),
            created_at=ms_to_datetime(h.get("created")),
            scheduled_for=ms_to_datetime(h.get("due")),
            processed_at=ms_to_datetime(h.get("processed")),
            finished_at=ms_to_datetime(h.get("finished")),
            scheduled_at=ms_to_datetime(h.get("tick")),
            worker=h.get("worker") or None,
            attempt_workers=attempt_workers(h),
            raw_payload=raw_payload or None,
        )


def attempt_workers(h: dict[str, str]) -> list[str]:
    # finish.lua appends a retried attempt's worker to "ran"; "worker" ran the latest one.
    workers = (h.get("ran") or "").splitlines()
    last = h.get("worker")
    return [*workers, last] if last else workers


def decode_log_line(raw: str) -> dict[str, Any]:
    """A stored log line (see Gateway.append_log); one someone overwrote shows as text."""
    try:
        line = json_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        line = None
    if isinstance(line, dict) and isinstance(line.get("message"), str):
        return line
    return {"at": 0, "level": "unknown", "message": raw}


class WorkerBeat(msgspec.Struct):
    """What a worker publishes about itself every few seconds (dashboard: workers page)."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: float
    seen_at: float
    busy: int
    processed: int
    running: list[str]
