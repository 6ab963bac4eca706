"""Every exception the engine raises on purpose, and the status codes its scripts reply with.

User code raises :class:`Retry` and :class:`UnrecoverableError` from tasks; callers catch
:class:`JobFailed` from ``job.result()``. Everything else derives from :class:`EngineError`::

    EngineError
      ConfigurationError (ValueError)   a setting, task definition or URL is invalid
      ConnectionFailed (ConnectionError) a server cannot be reached
      UnknownTaskError (LookupError)     no such task here nor announced
      PayloadTooLarge (ValueError)       arguments over max_payload_bytes
      JobNotFound (LookupError)          ScriptCode.NO_SUCH_JOB
      JobRunning                         ScriptCode.JOB_RUNNING
      FenceRejected                      ScriptCode.FENCED, ScriptCode.FIRED
      JobFailed                          job.result() of a failed or cancelled job
    Retry, UnrecoverableError, JobTimeout  raised in (or recorded for) a task

:class:`ScriptCode` is the one vocabulary of the Lua scripts' status replies (each
``broker/scripts/*.lua`` header lists the codes it returns), and :data:`SCRIPT_ERRORS` the
exception a code stands for when the caller treats it as an error (BullMQ's ``ErrorCode``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


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


class ScriptCode(IntEnum):
    """A script's status reply. Positive: the transition happened; negative: it was refused
    and nothing was written. The numbers are the scripts' own (``return -5``): keep both in step."""

    DONE = 1
    CANCEL_REQUESTED = 2
    """cancel.lua: the job is running; its worker was asked to stop it."""
    NO_SUCH_JOB = -1
    """No job hash: never existed, expired (retention) or deleted."""
    JOB_RUNNING = -2
    """delete.lua: an active job is not deleted (cancel it first)."""
    NOT_FAILED = -3
    """replay.lua: only a failed (dead-lettered) job is replayed."""
    ALREADY_FINISHED = -4
    """cancel.lua: the job completed, failed or was cancelled already."""
    FENCED = -5
    """enqueue.lua, fenced: the caller no longer holds the cron leader lock."""
    FIRED = -6
    """enqueue.lua, fenced: this tick (or a later one) of the schedule was fired already."""
    LOCK_NOT_HELD = -7
    """lease.lua: the token does not hold the lock (expired, or taken by another)."""
    NOT_PENDING = -8
    """bury.lua: the entry was acknowledged meanwhile (another worker recorded it)."""


class FenceRejected(EngineError):
    """A fenced (cron) enqueue was refused: ``reason`` is :attr:`ScriptCode.FENCED` (the
    leader lock was lost) or :attr:`ScriptCode.FIRED` (the tick was fired already)."""

    def __init__(self, reason: ScriptCode, message: str = "") -> None:
        self.reason = reason
        super().__init__(message or f"fenced enqueue refused: {reason.name.lower()}")


SCRIPT_ERRORS: Mapping[ScriptCode, type[EngineError]] = {
    ScriptCode.NO_SUCH_JOB: JobNotFound,
    ScriptCode.JOB_RUNNING: JobRunning,
    ScriptCode.FENCED: FenceRejected,
    ScriptCode.FIRED: FenceRejected,
}
"""The exception each refusal stands for; codes not listed are answers, not errors."""


def script_error(code: ScriptCode, message: str = "") -> EngineError | None:
    """The exception ``code`` stands for, with ``message`` (None when the code is no error)."""
    kind = SCRIPT_ERRORS.get(code)
    if kind is None:
        return None
    if issubclass(kind, FenceRejected):
        return kind(code, message)
    return kind(message or f"refused by a script: {code.name.lower()}")


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


FORMATTED_TRACEBACK = "__engine_traceback__"
"""The attribute under which the worker leaves, on a failed attempt's exception, the traceback
text it made for the job's record: the engine's log formatter prints that text rather than
format the traceback again (which cost a failed attempt a tenth of a millisecond)."""
