"""Every exception the engine raises on purpose, in one place.

User code raises :class:`Retry` and :class:`UnrecoverableError` from tasks; callers catch
:class:`JobFailed` from ``job.result()``. Everything else derives from :class:`EngineError`.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's own errors."""


class ConfigurationError(EngineError, ValueError):
    """A setting, task definition or URL is invalid; the message says which and why."""


class ConnectionFailed(EngineError, ConnectionError):
    """A server could not be reached; the message names the (password-masked) URL."""


class UnknownTaskError(EngineError, LookupError):
    """A task name is neither registered in this app nor announced by a worker."""


class PayloadTooLarge(EngineError, ValueError):
    """The encoded arguments of a job exceed ``Engine(max_payload_bytes=...)``."""


class JobNotFound(EngineError, LookupError):
    """No job with that id exists (never existed, or its retention expired)."""


class JobRunning(EngineError):
    """The operation needs a job that is not running (e.g. delete): cancel it first."""


class JobFailed(EngineError):
    """Raised by ``job.result()`` when the job ended ``failed`` or ``cancelled``."""

    def __init__(self, job_id: str, status: str, error: str | None) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        super().__init__(f"job {job_id} {status}: {error or 'no error recorded'}")


class Retry(Exception):
    """Raise from a task to retry it after ``delay`` seconds (default: the task's backoff).

    It still counts as an attempt: after ``max_attempts`` the job is dead-lettered.
    """

    def __init__(self, delay: float | None = None, reason: str | None = None) -> None:
        if delay is not None and not (0 <= delay <= 10 * 365 * 86_400):  # limits.MAX_DELAY_S; refuses NaN
            raise ValueError("Retry(delay=...) must be a number of seconds from 0 to 10 years")
        self.delay = delay
        super().__init__(reason or (f"retry requested in {delay}s" if delay else "retry requested"))


class UnrecoverableError(Exception):
    """Raise from a task to fail the job at once: no further retries, straight to the DLQ."""


class JobTimeout(Exception):
    """Recorded as a job's error when an attempt runs past its task's timeout."""
