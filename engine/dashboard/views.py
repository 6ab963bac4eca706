"""How jobs look on the pages and in the API: one job as a dict, a page of them, the history notice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.core.model import JobInfo
from engine.history import UNAVAILABLE

if TYPE_CHECKING:
    from engine.client.app import Engine

HISTORY_NOTICE = "enable the job log (ENGINE_DATABASE_URL) to see history"
HISTORY_ERRORS = UNAVAILABLE


def history_enabled(engine: Engine) -> bool:
    """True when the engine has a PostgreSQL job log to read history from."""
    return bool(getattr(engine, "database_url", None)) and callable(getattr(engine, "history", None))


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
        "attempt_workers": info.attempt_workers,
        "raw_payload": info.raw_payload,
        "partition": info.partition,
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
        "attempt_workers": [],
        "raw_payload": None,
        "partition": None,
        "source": "history",
    }


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
