"""What a running task sees of its job: :class:`JobContext`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from engine.core.clock import SYSTEM_CLOCK
from engine.core.model import LOG_LEVELS

if TYPE_CHECKING:
    from engine.runtime import Runtime

MAX_LOG_LINES = 1000


class JobServices(Protocol):
    """What a context needs to record a job's log lines and progress (the gateway)."""

    async def append_log(self, queue: str, job_id: str, level: str, message: str, keep: int) -> None: ...

    async def set_progress(self, queue: str, job_id: str, value: float) -> None: ...


@dataclass(slots=True, kw_only=True)
class JobContext:
    """The context passed as a task's first argument.

    ``job_id`` is stable across retries and ``attempt`` counts from 1, so a task can make
    its side effects idempotent (at-least-once delivery means an attempt may repeat).
    """

    job_id: str
    task: str
    queue: str
    attempt: int
    max_attempts: int
    timeout: float
    deadline: datetime
    """Wall-clock time at which this attempt is cancelled as timed out."""
    scheduled_at: datetime | None = None
    """For a cron job, the tick it was scheduled for; None otherwise."""
    enqueued_at: datetime | None = None
    engine: Runtime | None = field(default=None, repr=False)
    """The app running the job (an ``engine.Engine``: ``await ctx.engine.enqueue("name", ...)``
    enqueues a follow-up job by name)."""
    services: JobServices | None = field(default=None, repr=False)
    """Where log lines and progress go; None (a context made by hand) keeps them local."""
    state: dict[str, Any] = field(default_factory=dict, repr=False)
    """The worker process's shared state, as the app's ``@app.on_startup`` hooks filled it
    (a database pool, a client)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """What the producer attached to the job (``with_options(meta=...)``)."""

    def time_left(self) -> float:
        """Seconds until this attempt times out (never negative)."""
        clock = SYSTEM_CLOCK if self.engine is None else self.engine.clock
        return max(0.0, self.deadline.timestamp() - clock.time())

    async def log(self, message: str, level: str = "info") -> None:
        """Record a log line for this job (shown in ``job.logs()`` and the dashboard)."""
        if level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
        structlog.get_logger("engine.task").log(
            _LEVELS[level],
            str(message),
            job_id=self.job_id,
            task=self.task,
            queue=self.queue,
            attempt=self.attempt,
        )
        if self.services is not None:
            await self.services.append_log(self.queue, self.job_id, level, str(message), MAX_LOG_LINES)

    async def progress(self, value: float) -> None:
        """Report progress, a fraction between 0 and 1, visible in ``job.info()``."""
        if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
            raise ValueError(f"progress must be a number between 0 and 1, not {value!r}")
        if self.services is not None:
            await self.services.set_progress(self.queue, self.job_id, float(value))


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
