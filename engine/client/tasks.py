"""A registered task and its bound calls: :class:`Task`, :class:`TaskCall`, :class:`NamedCall`.

They enqueue through the ``submit`` function the app hands them (its one enqueue path), so
nothing here reaches back into the Engine."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

import msgspec

from engine.client.handle import Job
from engine.core.backoff import Backoff
from engine.core.errors import ConfigurationError, UnknownTaskError
from engine.core.keys import check_name
from engine.core.limits import check_attempts, check_timeout
from engine.core.priority import DEFAULT_PRIORITY, check_priority
from engine.core.settings import Settings
from engine.core.taskdef import TaskAnnouncement, task_signature
from engine.core.wiretypes import Shape
from engine.producer import NO_OPTIONS, Options, TaskSpec

P = ParamSpec("P")
R = TypeVar("R")

Calls = Sequence[tuple[Sequence[Any], dict[str, Any]]]
"""Each job's (positional arguments, keyword arguments)."""


class Submit(Protocol):
    """The app's enqueue path: build the jobs of ``calls`` and store them in one go."""

    def __call__(self, spec: TaskSpec, calls: Calls, options: Options, /) -> Awaitable[list[Job[Any]]]: ...


class NamedSubmitSync(Protocol):
    """A by-name enqueue from sync code: (task name, options, args, kwargs) -> its job."""

    def __call__(
        self, task_name: str, options: Options, args: tuple[Any, ...], kwargs: dict[str, Any], /
    ) -> Job[Any]: ...


class SubmitSync(Protocol):
    """The same from sync code (run on the background loop of ``engine.client.sync``)."""

    def __call__(self, spec: TaskSpec, calls: Calls, options: Options, /) -> list[Job[Any]]: ...


DEFAULT: Any = object()
"""An option left out: the app's default applies (None is a value, and refused for a timeout)."""

Resolve = Callable[[str], Awaitable[TaskSpec]]
"""A task's spec by name (the app's own task, or one a worker announced)."""


class TaskCall(Generic[P, R]):
    """A task with per-enqueue options bound (``task.with_options(...)``)."""

    __slots__ = ("_options", "task")

    def __init__(self, task: Task[P, R], options: Options) -> None:
        self.task = task
        self._options = options

    def with_options(self, **options: Any) -> TaskCall[P, R]:
        return TaskCall(self.task, self._options.merged(**options))

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return (await self.task.submit(self.task.spec, [(args, kwargs)], self._options))[0]

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """:meth:`enqueue` from sync code (any thread with no running event loop)."""
        return self.task.submit_sync(self.task.spec, [(args, kwargs)], self._options)[0]

    async def enqueue_many(self, calls: Iterable[Any]) -> list[Job[R]]:
        return await self.task.submit(self.task.spec, normalise_calls(calls), self._options)


class NamedCall:
    """A task named by a string, with per-enqueue options bound (``app.with_options``)."""

    __slots__ = ("_options", "_resolve", "_submit", "_submit_sync", "task_name")

    def __init__(
        self,
        resolve: Resolve,
        submit: Submit,
        task_name: str,
        options: Options,
        submit_sync: NamedSubmitSync | None = None,
    ) -> None:
        self._resolve = resolve
        self._submit = submit
        self.task_name = task_name
        self._options = options
        self._submit_sync = submit_sync

    def with_options(self, **options: Any) -> NamedCall:
        merged = self._options.merged(**options)
        return NamedCall(self._resolve, self._submit, self.task_name, merged, self._submit_sync)

    async def enqueue(self, *args: Any, **kwargs: Any) -> Job[Any]:
        spec = await self._resolve(self.task_name)
        return (await self._submit(spec, [(args, kwargs)], self._options))[0]

    def enqueue_sync(self, *args: Any, **kwargs: Any) -> Job[Any]:
        """:meth:`enqueue` from sync code (any thread with no running event loop)."""
        if self._submit_sync is None:
            raise RuntimeError(
                f"this call of {self.task_name!r} was not made by an Engine: it has no sync enqueue"
            )
        return self._submit_sync(self.task_name, self._options, args, kwargs)

    async def enqueue_many(self, calls: Iterable[Any]) -> list[Job[Any]]:
        spec = await self._resolve(self.task_name)
        return await self._submit(spec, normalise_calls(calls), self._options)


class Task(Generic[P, R]):
    """A function registered with ``@app.task``; call ``enqueue`` to run it in a worker.

    Typed by the function: ``enqueue`` takes its parameters (less the context) and the
    job's ``result()`` is its return type, so a type checker catches a wrong, missing or
    extra argument at the call."""

    def __init__(
        self,
        fn: Callable[..., Any],
        spec: TaskSpec,
        takes_ctx: bool,
        submit: Submit,
        submit_sync: SubmitSync | None = None,
    ) -> None:
        self.submit = submit
        """Where its jobs go (the app's one enqueue path)."""
        self._submit_sync = submit_sync
        self.fn = fn
        self.spec = spec
        self.takes_ctx = takes_ctx
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def queue(self) -> str:
        return self.spec.queue

    @property
    def timeout(self) -> float:
        return self.spec.timeout

    @property
    def max_attempts(self) -> int:
        return self.spec.max_attempts

    @property
    def backoff(self) -> Backoff:
        return self.spec.backoff

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, in this process (no queue involved)."""
        return self.fn(*args, **kwargs)

    def with_options(self, **options: Any) -> TaskCall[P, R]:
        """Bind options: delay, run_at, idempotency_key, idempotency_ttl, job_id, timeout,
        max_attempts, queue, partition_key."""
        return TaskCall(self, NO_OPTIONS.merged(**options))

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Add one job; returns its handle once it is stored (at-least-once from here on)."""
        return (await self.submit(self.spec, [(args, kwargs)], NO_OPTIONS))[0]

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """:meth:`enqueue` from sync code (Django, Flask, scripts): safe from any thread with
        no running event loop; every thread shares one background loop and connection pool."""
        return self.submit_sync(self.spec, [(args, kwargs)], NO_OPTIONS)[0]

    def enqueue_many_sync(self, calls: Iterable[Any]) -> list[Job[R]]:
        """:meth:`enqueue_many` from sync code."""
        return self.submit_sync(self.spec, normalise_calls(calls), NO_OPTIONS)

    @property
    def submit_sync(self) -> SubmitSync:
        if self._submit_sync is None:
            raise RuntimeError(f"task {self.name!r} was not registered by an Engine: it has no sync enqueue")
        return self._submit_sync

    async def enqueue_many(self, calls: Iterable[Any]) -> list[Job[R]]:
        """Add many jobs in one round trip. Each item is a tuple of positional arguments,
        a dict of keyword arguments, an ``(args_tuple, kwargs_dict)`` pair made with
        :func:`engine.call`, or a single value (one positional argument)."""
        return await self.submit(self.spec, normalise_calls(calls), NO_OPTIONS)


class Call(tuple[tuple[Any, ...], dict[str, Any]]):
    """Arguments of one job for ``enqueue_many``; make it with :func:`call`."""


def call(*args: Any, **kwargs: Any) -> Call:
    return Call((args, kwargs))


def normalise_calls(calls: Iterable[Any]) -> list[tuple[Sequence[Any], dict[str, Any]]]:
    out: list[tuple[Sequence[Any], dict[str, Any]]] = []
    for item in calls:
        if isinstance(item, Call):
            out.append((item[0], item[1]))
        elif isinstance(item, tuple | list):
            out.append((item, {}))
        elif isinstance(item, dict):
            out.append(((), item))
        else:
            out.append(((item,), {}))
    return out


def make_task(
    func: Callable[..., Any],
    *,
    name: str | None,
    queue: str,
    timeout: float,
    max_attempts: int | None,
    backoff: Backoff | None,
    settings: Settings,
    submit: Submit,
    priority: int = DEFAULT_PRIORITY,
    submit_sync: SubmitSync | None = None,
) -> Task[..., Any]:
    """What ``@app.task`` registers, every option checked (``timeout=DEFAULT``,
    ``max_attempts=None`` and ``backoff=None``: the app's defaults)."""
    if not callable(func):
        raise ConfigurationError(f"@app.task needs a function, not {func!r}")
    task_name = check_name("task", name or func.__name__)
    what = f"task {task_name!r}"
    if backoff is not None and not isinstance(backoff, Backoff):
        raise ConfigurationError(f"{what}: backoff must be an engine.Backoff")
    signature, takes_ctx = task_signature(func)
    spec = TaskSpec(
        name=task_name,
        queue=check_name("queue", queue),
        timeout=settings.default_timeout_s if timeout is DEFAULT else check_timeout(timeout, what),
        max_attempts=settings.default_max_attempts
        if max_attempts is None
        else check_attempts(max_attempts, what),
        backoff=backoff or settings.default_backoff,
        signature=signature,
        shape=Shape.of(func, signature),
        priority=check_priority(priority, f"{what}: priority"),
    )
    return Task(func, spec, takes_ctx, submit, submit_sync)


def spec_from_announcement(task_name: str, raw: bytes | str, backoff: Backoff) -> TaskSpec:
    """The spec of a task this app does not have, from what a worker announced of it."""
    try:
        ann = msgspec.json.decode(raw, type=TaskAnnouncement)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnknownTaskError(
            f"task {task_name!r}: its announcement in Redis is unreadable ({exc}); restart a worker "
            "that runs it to announce it again"
        ) from None
    return TaskSpec(
        name=task_name,
        queue=ann.queue,
        timeout=ann.timeout,
        max_attempts=ann.max_attempts,
        backoff=backoff,
        signature=ann.signature(),
        shape=ann.shape(),
        priority=ann.priority,
    )
