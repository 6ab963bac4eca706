"""engine: an async-native background job engine on Redis Streams.

The public surface is exactly ``__all__`` (everything else is internal and may change)::

    from engine import Engine, JobContext, Backoff, Retry, UnrecoverableError, JobFailed

- the app and its tasks: ``Engine``, ``Settings`` (``app.settings``), ``Task``, ``TaskCall``,
  ``NamedCall`` (``app.with_options(name, ...)``), ``call`` / ``Call`` (``enqueue_many`` items);
- what a call returns: ``Job`` (a handle), ``JobInfo``, ``Status``, ``DeadLetters``
  (``app.dlq(queue)``), ``HistoryPage`` and ``LogLine`` (``app.history()``, ``app.logs()``),
  ``Worker`` (``app.worker()``);
- inside a task: ``JobContext``, ``Retry``, ``UnrecoverableError``; retry timing: ``Backoff``;
- errors, all ``EngineError``: ``ConfigurationError``, ``ConnectionFailed``, ``JobFailed``,
  ``JobNotFound``, ``JobRunning``, ``JobTimeout``, ``PayloadTooLarge``, ``UnknownTaskError``.

Test helpers (``FakeClock``, signals, ``worker_running``) live in :mod:`engine.testing`.
"""

from importlib import metadata as _metadata

# The engine logs through stdlib logging (its loggers are engine.*): a host app's handlers and
# levels apply, and nothing is printed unless they are configured (engine.log).
from engine import log as _log  # noqa: F401
from engine.client.app import Engine
from engine.client.dlq import DeadLetters
from engine.client.handle import Job
from engine.client.tasks import Call, NamedCall, Task, TaskCall, call
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
from engine.core.settings import Settings
from engine.history import HistoryPage, LogLine
from engine.worker import Worker

try:  # the installed distribution's version (pip install, also -e)
    __version__: str = _metadata.version("engine")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

__all__ = [
    "Backoff",
    "Call",
    "ConfigurationError",
    "ConnectionFailed",
    "DeadLetters",
    "Engine",
    "EngineError",
    "HistoryPage",
    "Job",
    "JobContext",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobRunning",
    "JobTimeout",
    "LogLine",
    "NamedCall",
    "PayloadTooLarge",
    "Retry",
    "Settings",
    "Status",
    "Task",
    "TaskCall",
    "UnknownTaskError",
    "UnrecoverableError",
    "Worker",
    "call",
]
