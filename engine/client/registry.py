"""What an app declares: its queues' layouts, tasks, cron schedules and hooks
(:class:`Registry`, the part of :class:`~engine.client.app.Engine` that runs nothing)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

from engine.client.tasks import DEFAULT, Calls, Task, make_task
from engine.context import JobContext
from engine.core.backoff import Backoff
from engine.core.errors import ConfigurationError
from engine.core.flow import Limits
from engine.core.hooks import Hooks, Middleware
from engine.core.partitions import Layout, check_partitions, check_queue_name
from engine.core.priority import DEFAULT_PRIORITY
from engine.core.settings import Settings
from engine.cron import Schedule, check_expression, check_zone, make_schedule
from engine.producer import Options, TaskSpec

if TYPE_CHECKING:
    from engine.client.handle import Job

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])
_UNSET: Any = DEFAULT


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` and ``@app.cron(...)`` return: it types the task like
    ``@app.task`` does."""

    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class Registry:
    """Registration: ``app.queue``, ``@app.task``, ``@app.cron`` and the hooks."""

    settings: Settings
    tasks: dict[str, Task[..., Any]]
    schedules: dict[str, Schedule]
    hooks: Hooks
    layout: Layout
    limits: dict[str, Limits]
    """Each declared queue's limits (``app.queue(q, concurrency=, rate_limit=)``)."""
    _layout_checked: bool

    if TYPE_CHECKING:  # the Engine's, which the registered tasks enqueue through

        async def _enqueue(self, spec: TaskSpec, calls: Calls, options: Options) -> list[Job[Any]]: ...

        def _enqueue_sync(self, spec: TaskSpec, calls: Calls, options: Options) -> list[Job[Any]]: ...

    # -- queues and tasks -------------------------------------------------------------------

    def queue(
        self,
        name: str,
        *,
        partitions: int | None = None,
        concurrency: int | None = None,
        rate_limit: str | None = None,
        key_concurrency: int | None = None,
    ) -> None:
        """Declare a queue's layout and limits.

        ``partitions=K`` makes it K complete sub-queues under their own hash tags, spread
        over a Redis Cluster's masters, for a queue one node cannot serve: jobs with an
        idempotency key, an explicit id or a ``partition_key`` go to the partition it hashes
        to (so dedup and "id taken" stay exact), others round robin per batch; workers read
        every partition; stats, dead letters, the dashboard and ``app.job(id)`` see one
        queue. Order holds per partition only. Every producer and worker must declare the
        same count: Redis records it and a different one is refused.

        ``concurrency=N``: at most N jobs of the queue run at once, across every worker
        process and machine. ``rate_limit="100/s"`` ("N/s", "N/m", "N/h"): at most N job
        starts per period, evenly spaced; jobs held back wait in the queue. Both are held in
        Redis and enforced atomically with each start (engine.core.flow); a worker publishes
        its app's limits when it starts. A partitioned queue splits them over its partitions.

        ``key_concurrency=N``: at most N jobs of one ``with_options(concurrency_key=...)``
        (a customer, an account) run at once, however many workers; other keys' jobs run
        meanwhile. Jobs without a key are not limited by it.
        """
        check_queue_name(name)
        limits = Limits.declare(name, concurrency, rate_limit, key_concurrency)
        count = partitions if partitions is not None else self.layout.declared.get(name, 1)
        limits.check_split(name, check_partitions(name, count))
        self.layout.declare(name, count)
        self.limits[name] = limits
        self._layout_checked = False

    # The forms: async or sync, taking the JobContext first or not; Task[P, R] keeps the
    # parameters after the context (P) and the result (R) for enqueue and job.result().
    @overload
    def task(self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[Concatenate[JobContext, P], R], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        timeout: float = ...,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        timeout: float = _UNSET,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        priority: int = DEFAULT_PRIORITY,
    ) -> Any:
        """Register an ``async def`` (run on the event loop) or ``def`` (run in a thread).

        ``timeout`` is mandatory in effect: omit it for the engine default; None is refused.
        ``priority``: of the task's jobs, 0 (first) to 9 (last), unless an enqueue says
        otherwise (``with_options(priority=)``; see engine.core.priority for the policy).
        """

        def register(func: Callable[..., Any]) -> Task[..., Any]:
            task = make_task(
                func,
                name=name,
                queue=queue,
                timeout=timeout,
                max_attempts=max_attempts,
                backoff=backoff,
                priority=priority,
                settings=self.settings,
                submit=self._enqueue,
                submit_sync=self._enqueue_sync,
            )
            if task.name in self.tasks:
                raise ConfigurationError(f"a task named {task.name!r} is already registered")
            self.tasks[task.name] = task
            return task

        if fn is not None:
            return register(fn)
        return register

    def cron(
        self,
        expr: str,
        *,
        tz: str = "UTC",
        name: str | None = None,
        queue: str = "default",
        timeout: float = _UNSET,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        misfire: str = "latest",
        catch_up: float = 3600.0,
    ) -> TaskDecorator:
        """Run a task on a cron schedule, exactly once per tick however many workers run.

        ``expr`` has 5 fields, or 6 with seconds last; ``tz`` is an IANA zone. The job is an
        ordinary job (timeout, retries, dead letters apply) whose ``ctx.scheduled_at`` is
        the tick. ``misfire`` says what happens to ticks missed while no scheduler ran:
        "latest" (fire the latest once), "skip", or "all" (within ``catch_up`` seconds).
        Bad expressions and unknown time zones raise here, at import time.
        """
        label = f"cron {name or '(unnamed)'}"
        check_expression(expr, label)
        check_zone(tz, label)

        def register(func: Callable[..., Any]) -> Task[..., Any]:
            task = self.task(
                name=name, queue=queue, timeout=timeout, max_attempts=max_attempts, backoff=backoff
            )(func)
            try:
                self.schedules[task.name] = make_schedule(task, expr, tz, misfire, catch_up)
            except ConfigurationError:
                del self.tasks[task.name]  # refused whole: no task without its schedule
                raise
            return task

        return cast(TaskDecorator, register)

    # -- hooks ------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """The per-process state shared by the start-up hooks and every job (``ctx.state``)."""
        return self.hooks.state

    def on_startup(self, fn: F) -> F:
        """Run ``fn(state)`` (async or not) once per worker process, before its first job:
        open a database pool into ``state["db"]``, read it in tasks as ``ctx.state["db"]``.
        A hook that raises stops the worker before it takes any job."""
        self.hooks.add("startup", fn)
        return fn

    def on_shutdown(self, fn: F) -> F:
        """Run ``fn(state)`` once the process's last worker has stopped (in reverse order)."""
        self.hooks.add("shutdown", fn)
        return fn

    def add_middleware(self, fn: Middleware) -> None:
        """Wrap every attempt: ``async def fn(ctx, call_next)`` returns (or raises) what
        ``await call_next()`` does, or its own; the first added runs outermost, all within
        the attempt's timeout."""
        self.hooks.add("middleware", fn)

    def on_failure(self, fn: F) -> F:
        """Call ``fn(ctx, exc)`` (async or not) whenever an attempt raises, retried or not,
        e.g. ``sentry_sdk.capture_exception(exc)``; what the hook raises is logged, never
        changes the outcome."""
        self.hooks.add("failure", fn)
        return fn

    def on_enqueue(self, fn: F) -> F:
        """Call ``fn(task_name, meta)`` (plain ``def``) before each enqueue call is built; it may
        add to ``meta``, the dict carried with the jobs (a trace context, a request id)."""
        self.hooks.add("enqueue", fn)
        return fn
