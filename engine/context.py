"""What a running task sees of its job: :class:`JobContext`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from engine.core.clock import SYSTEM_CLOCK
from engine.core.model import LOG_LEVELS, ms_to_datetime

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
    _times: tuple[float, int | None, int | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """What :meth:`_for_attempt` left the three datetimes as: deadline (epoch seconds),
    scheduled_at and enqueued_at (epoch ms or None)."""

    @classmethod
    def _for_attempt(
        cls,
        *,
        job_id: str,
        task: str,
        queue: str,
        attempt: int,
        max_attempts: int,
        timeout: float,
        deadline_s: float,
        scheduled_ms: int | None,
        enqueued_ms: int | None,
        engine: Runtime | None,
        services: JobServices | None,
        state: dict[str, Any],
        meta: dict[str, Any],
    ) -> JobContext:
        """The worker's context for one attempt: as the constructor makes it, but with
        ``deadline``, ``scheduled_at`` and ``enqueued_at`` made only when first read (see
        ``__getattr__``): building three datetimes per job that most tasks never look at
        was a measurable part of a worker's CPU per quick job."""
        ctx = cls.__new__(cls)
        ctx.job_id = job_id
        ctx.task = task
        ctx.queue = queue
        ctx.attempt = attempt
        ctx.max_attempts = max_attempts
        ctx.timeout = timeout
        ctx.engine = engine
        ctx.services = services
        ctx.state = state
        ctx.meta = meta
        ctx._times = (deadline_s, scheduled_ms, enqueued_ms)
        return ctx

    if not TYPE_CHECKING:  # to type checkers, the fields above are all there is

        def __getattr__(self, name: str) -> Any:
            # Called only for a slot not set yet: one of the datetimes _for_attempt() leaves
            # unmade. Made once, then read from its slot like any other field.
            times = self._times if name in _LAZY else None
            if times is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            deadline_s, scheduled_ms, enqueued_ms = times
            self.deadline = datetime.fromtimestamp(deadline_s, tz=UTC)
            self.scheduled_at = ms_to_datetime(scheduled_ms)
            self.enqueued_at = ms_to_datetime(enqueued_ms)
            return getattr(self, name)

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


_LAZY = frozenset({"deadline", "scheduled_at", "enqueued_at"})
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
