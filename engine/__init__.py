"""engine: an async-native background job engine on Redis Streams.

Public surface (everything else is internal and may change)::

    from engine import Engine, JobContext, Backoff, Retry, UnrecoverableError, JobFailed
"""

from engine.client.app import Engine, Task, TaskCall, call
from engine.client.handle import Job
from engine.context import JobContext
from engine.core.backoff import Backoff
from engine.core.errors import (
    ConfigurationError,
    ConnectionFailed,
    EngineError,
    JobFailed,
    JobNotFound,
    JobRunning,
    JobTimeout,
    PayloadTooLarge,
    Retry,
    UnknownTaskError,
    UnrecoverableError,
)
from engine.core.model import JobInfo, Status

__all__ = [
    "Backoff",
    "ConfigurationError",
    "ConnectionFailed",
    "Engine",
    "EngineError",
    "Job",
    "JobContext",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobRunning",
    "JobTimeout",
    "PayloadTooLarge",
    "Retry",
    "Status",
    "Task",
    "TaskCall",
    "UnknownTaskError",
    "UnrecoverableError",
    "call",
]
