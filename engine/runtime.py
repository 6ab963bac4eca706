"""What the parts below the client need of the app: the :class:`Runtime` protocol.

The worker, the scheduler, the inspector and a job's context are handed the app, but they
see it through this protocol (``engine.Engine`` is one), so none of them imports
``engine.client``: the client composes them, never the other way round. Everything here is
public on the Engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from engine.broker.gateway import Gateway, Retention
from engine.core.clock import Clock
from engine.core.hooks import Hooks
from engine.core.partitions import Layout
from engine.core.schedule import Schedule
from engine.core.settings import Settings
from engine.core.signals import Signals
from engine.core.taskdef import TaskDef
from engine.history import JobLog


class Runtime(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def signals(self) -> Signals: ...

    @property
    def tasks(self) -> Mapping[str, TaskDef]:
        """The registered tasks by name (what a worker can run)."""
        ...

    @property
    def schedules(self) -> Mapping[str, Schedule]: ...

    @property
    def hooks(self) -> Hooks:
        """Start-up/shut-down hooks and state, middleware, failure and enqueue hooks."""
        ...

    @property
    def layout(self) -> Layout:
        """Which queues are partitioned (known in full once :meth:`ready` ran)."""
        ...

    @property
    def gateway(self) -> Gateway:
        """The Redis gateway (created on first use)."""
        ...

    @property
    def retention(self) -> Retention: ...

    async def ready(self) -> Gateway:
        """The gateway, its server checked to answer once."""
        ...

    def job_log(self) -> JobLog:
        """The PostgreSQL job log (ConfigurationError without a database_url)."""
        ...

    async def enqueue(self, task_name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Enqueue a job by task name (the Engine returns its ``Job`` handle)."""
        ...

    async def announce_tasks(self) -> None:
        """Publish this app's tasks so producers without the code can enqueue them."""
        ...

    async def publish_limits(self, queues: list[str]) -> None:
        """Write the limits the app declares for ``queues`` where start.lua enforces them."""
        ...
