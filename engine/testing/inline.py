"""Inline mode: ``Engine(testing="inline")`` runs each job when it is enqueued, in the
caller's event loop, with no Redis at all (Sidekiq::Testing.inline!, Dramatiq's StubBroker,
taskiq's InMemoryBroker).

A job runs through the worker's own path (:class:`engine.worker.executor.Executor`): its
arguments checked at enqueue and converted by the annotations, its timeout, a
:class:`~engine.JobContext` whose ``ctx.log`` and ``ctx.progress`` are kept here in memory,
its outcome classified as a worker classifies it. The handle ``enqueue`` returns (and
``app.job(id)``'s) reads the job from here: ``info()``, ``status()``, ``result()``,
``logs()``, ``cancel()``, ``delete()``. Where it differs from a worker, on purpose:

- the job has run when ``enqueue`` returns; ``delay=`` and ``run_at=`` are not waited for
  (``info().scheduled_for`` still shows the due time);
- retries run at once: a failed attempt with attempts left is attempted again immediately,
  so ``ctx.attempt``, ``info().attempts``, ``max_attempts``, ``Retry`` and
  ``UnrecoverableError`` behave as on a worker, but the backoff (and ``Retry(delay=)``) is
  not slept;
- a failure does not raise from ``enqueue``: the job ends ``failed`` as it would on a
  worker, with its error and traceback in ``info()``, and ``job.result()`` raises
  :class:`~engine.JobFailed` chained to the task's own exception, so the test shows the
  task's traceback where it waits for the result;
- an idempotency key seen within its TTL, or a job id already taken, returns the first
  job's handle and runs nothing, as in Redis;
- a job enqueued by a running job runs at once, inside it (nesting is capped at
  :data:`MAX_NESTING`, so a task that enqueues itself forever fails instead of recursing);
- there is no worker and no scheduler: ``app.worker()`` refuses, a cron schedule never
  fires (enqueue its task to run it), partitions are ignored (the job names its queue).
"""

from __future__ import annotations

import contextvars
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread

from engine.client.handle import Job
from engine.core.clock import Clock, now_ms
from engine.core.errors import JobFailed, JobNotFound, JobRunning
from engine.core.hooks import maybe_await
from engine.core.model import FINAL_STATUSES, Status
from engine.core.taskdef import TaskDef
from engine.core.transitions import NewJob, Outcome, Started
from engine.core.wiretypes import Shape
from engine.producer import Options, TaskSpec, build_jobs
from engine.runtime import Runtime
from engine.worker.executor import Executor

if TYPE_CHECKING:
    from engine.client.app import Engine
    from engine.client.tasks import Calls

__all__ = ["MAX_NESTING", "InlineJob", "InlineMode", "inline_jobs", "inline_mode", "run_inline"]

R = TypeVar("R")
MAX_NESTING = 50
"""How deep jobs enqueued by running jobs may nest in inline mode."""
WORKER_NAME = "inline"
"""What ``info().worker`` says of a job run inline."""

_nesting: contextvars.ContextVar[int] = contextvars.ContextVar("engine_inline_nesting", default=0)


@dataclass(eq=False)
class _Record:
    """One job as inline mode keeps it: the fields its Redis hash would hold."""

    queue: str
    fields: dict[str, str]
    shape: Shape | None
    clock: Clock
    logs: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    """The exception of the last failed attempt (``result()`` chains JobFailed to it)."""
    executor: Executor | None = None
    """Set while an attempt runs (``cancel()`` stops it there)."""
    done: anyio.Event = field(default_factory=anyio.Event)


class _Store:
    """The jobs of one app in inline mode, and where its contexts' log lines and progress go
    (the ``JobServices`` a worker's gateway is)."""

    def __init__(self) -> None:
        self.jobs: dict[str, _Record] = {}
        self.idempotency: dict[str, tuple[str, float]] = {}  # key -> (job id, expires at)
        self.started = False  # the app's on_startup hooks ran (before its first inline job)

    async def append_log(self, queue: str, job_id: str, level: str, message: str, keep: int) -> None:
        record = self.jobs.get(job_id)
        if record is not None:
            record.logs.append({"at": now_ms(record.clock), "level": level, "message": message})
            del record.logs[:-keep]

    async def set_progress(self, queue: str, job_id: str, value: float) -> None:
        record = self.jobs.get(job_id)
        if record is not None:
            record.fields["progress"] = repr(value)


_stores: weakref.WeakKeyDictionary[Any, _Store] = weakref.WeakKeyDictionary()
"""Each app's jobs in inline mode, by :func:`_home` (forgotten with the app)."""


def _home(app: Any) -> Any:
    """What an app's inline jobs hang off: its ``signals``, one object per app that its sync
    twin shares (``engine.client.sync`` copies the app, sharing its parts), so jobs enqueued
    with ``enqueue_sync`` and the app's own handles see the same jobs."""
    return app.signals


def _store(app: Any) -> _Store:
    store = _stores.get(_home(app))
    if store is None:
        store = _stores[_home(app)] = _Store()
    return store


class _Runtime:
    """The app as the executor sees it, but with the in-memory store where a worker's
    gateway would be (the context's ``services``); everything else is the app's."""

    def __init__(self, app: Engine, store: _Store) -> None:
        self._app = app
        self.gateway = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)


class _Executor(Executor):
    """The worker's executor, keeping each failed attempt's exception."""

    def __init__(self, engine: Runtime, thread_limiter: anyio.CapacityLimiter) -> None:
        super().__init__(engine, thread_limiter)
        self.errors: dict[str, Exception] = {}

    def _failure(self, job: Started, task: TaskDef, max_attempts: int, exc: Exception) -> Outcome:
        self.errors[job.job_id] = exc
        return super()._failure(job, task, max_attempts, exc)


# -- enqueue ---------------------------------------------------------------------------------


async def run_inline(app: Engine, spec: TaskSpec, calls: Calls, options: Options) -> list[Job[Any]]:
    """What ``app._enqueue`` does in inline mode: check and build the jobs as for Redis (a
    refused enqueue runs nothing), then run each, in order, before returning its handle."""
    now = app.clock.time()
    queue, jobs = build_jobs(spec, calls, options, app.settings, now=now)
    store = _store(app)
    if not store.started:  # as a worker does before its first job: they fill ctx.state
        for hook in app.hooks.startup:
            await maybe_await(hook(app.hooks.state))
        store.started = True
    handles: list[Job[Any]] = []
    for new in jobs:
        job_id, record = _admit(app, store, queue, new, spec.shape, now)
        if record is not None:
            await _run(app, store, record, job_id, new)
        handles.append(InlineJob(app, job_id, store.jobs[job_id].queue, spec.shape))
    return handles


def _admit(
    app: Engine, store: _Store, queue: str, new: NewJob, shape: Shape | None, now: float
) -> tuple[str, _Record | None]:
    """The job's id and its new record; no record when its idempotency key or its id is
    taken (then the id is the first job's), as ``enqueue.lua`` decides."""
    key = new.idempotency_key
    if key is not None:
        seen = store.idempotency.get(key)
        if seen is not None and seen[1] > now and seen[0] in store.jobs:
            return seen[0], None
        store.idempotency[key] = (new.id, now + new.idempotency_ttl_ms / 1000)
    if new.id in store.jobs:
        return new.id, None
    fields = {
        "task": new.task,
        "created": str(int(now * 1000)),
        "attempts": "0",
        "status": Status.WAITING.value,
        "payload": new.payload.decode(),
    }
    if new.timeout is not None:
        fields["timeout"] = repr(new.timeout)
    if new.max_attempts is not None:
        fields["max_attempts"] = str(new.max_attempts)
    if new.tick_ms is not None:
        fields["tick"] = str(new.tick_ms)
    if new.due_ms:
        fields["due"] = str(new.due_ms)
    record = store.jobs[new.id] = _Record(queue, fields, shape, app.clock)
    return new.id, record


async def _run(app: Engine, store: _Store, record: _Record, job_id: str, new: NewJob) -> None:
    depth = _nesting.get()
    fields = record.fields
    if depth >= MAX_NESTING:
        fields.update(
            status=Status.FAILED.value,
            error=f"InlineNestingError: jobs enqueued by running jobs nest {MAX_NESTING} deep in "
            "inline mode; does a task enqueue itself forever?",
            finished=str(now_ms(app.clock)),
        )
        record.done.set()
        return
    token = _nesting.set(depth + 1)
    executor = _Executor(
        cast(Runtime, _Runtime(app, store)), anyio.to_thread.current_default_thread_limiter()
    )
    attempt = 0
    try:
        while True:
            attempt += 1
            fields.update(
                status=Status.ACTIVE.value,
                attempts=str(attempt),
                processed=str(now_ms(app.clock)),
                worker=WORKER_NAME,
            )
            started = Started(
                queue=record.queue,
                entry_id=f"inline-{attempt}",
                job_id=job_id,
                task=new.task,
                payload=fields["payload"],
                attempt=attempt,
                timeout=new.timeout,
                max_attempts=new.max_attempts,
                tick_ms=new.tick_ms,
                created_ms=int(fields["created"]),
            )
            record.executor = executor
            try:
                outcome = await executor.run(started)
            finally:
                record.executor = None
            if outcome.kind == "retry":  # attempted again at once: the backoff is not slept
                fields.update(
                    status=Status.DELAYED.value,
                    error=outcome.value,
                    traceback=outcome.traceback,
                    due=str(outcome.due_ms),
                )
                continue
            _finish(app, record, outcome, executor.errors.get(job_id))
            return
    except BaseException:
        # The caller was cancelled (or interrupted) while the job ran: it ends there.
        if fields.get("status") not in FINAL_STATUSES:
            fields.update(
                status=Status.CANCELLED.value,
                error="cancelled: the caller running it inline was cancelled",
                finished=str(now_ms(app.clock)),
            )
        raise
    finally:
        _nesting.reset(token)
        record.done.set()


def _finish(app: Engine, record: _Record, outcome: Outcome, error: BaseException | None) -> None:
    fields = record.fields
    finished = str(now_ms(app.clock))
    if outcome.kind == "completed":
        fields.update(status=Status.COMPLETED.value, result=outcome.value, finished=finished)
    elif outcome.kind == "failed":
        fields.update(
            status=Status.FAILED.value, error=outcome.value, traceback=outcome.traceback, finished=finished
        )
        record.error = error
    else:  # cancelled while running (job.cancel() from inside the job or beside it)
        fields.update(status=Status.CANCELLED.value, finished=finished)
        if outcome.value:
            fields["error"] = outcome.value


# -- handles ---------------------------------------------------------------------------------


class InlineJob(Job[R]):
    """A handle on a job of an app in inline mode: it reads the job from memory, never from
    Redis. ``Job(app, id)`` of such an app is one (see ``Job.__new__``)."""

    __slots__ = ()

    def _record(self) -> _Record | None:
        store = _stores.get(_home(self._engine))
        record = None if store is None else store.jobs.get(self.id)
        if record is None or (self.queue is not None and record.queue != self.queue):
            return None
        self.queue = record.queue
        return record

    async def _queue(self) -> str | None:
        record = self._record()
        return None if record is None else record.queue

    async def _hash(self) -> dict[str, str] | None:
        record = self._record()
        return None if record is None else dict(record.fields)

    async def result(self, timeout: float | None = None) -> R:
        """The job's result (it has run: this waits only when called while it runs, from
        inside it or beside it). Raises :class:`JobFailed`, chained to the task's exception,
        when it failed or was cancelled; :class:`JobNotFound` when there is no such job."""
        record = self._record()
        if record is None:
            raise JobNotFound(f"no job with id {self.id!r}")
        if record.fields.get("status") not in FINAL_STATUSES:
            with anyio.move_on_after(timeout):
                await record.done.wait()
        status = Status(record.fields.get("status", "waiting"))
        if status not in FINAL_STATUSES:
            raise TimeoutError(f"job {self.id} did not finish within {timeout}s (status: {status})")
        if status == Status.COMPLETED:
            return self._final(status, record.fields)
        raise JobFailed(self.id, status.value, record.fields.get("error")) from record.error

    async def cancel(self) -> bool:
        """Cancel the job while it runs (it ends ``cancelled``); False once it has finished,
        which, inline, is as soon as ``enqueue`` returned."""
        record = self._record()
        if record is None or record.executor is None:
            return False
        return record.executor.cancel(self.id)

    async def delete(self) -> bool:
        record = self._record()
        if record is None:
            return False
        if record.executor is not None:
            raise JobRunning(f"job {self.id} is running; cancel it before deleting it")
        store = _stores.get(_home(self._engine))
        if store is not None:
            store.jobs.pop(self.id, None)
        return True

    async def logs(self) -> list[dict[str, Any]]:
        record = self._record()
        return [] if record is None else [dict(line) for line in record.logs]


# -- helpers for tests -----------------------------------------------------------------------


def inline_jobs(app: Engine, task: str | None = None) -> list[Job[Any]]:
    """Handles on the jobs ``app`` ran in inline mode (of ``task`` only, when given), in the
    order they were enqueued: for asserting what the code under test enqueued."""
    store = _stores.get(_home(app))
    if store is None:
        return []
    return [
        InlineJob(app, job_id, record.queue, record.shape)
        for job_id, record in store.jobs.items()
        if task is None or record.fields.get("task") == task
    ]


def inline_mode(app: Engine) -> InlineMode:
    """Switch an existing app (your module's ``app = Engine()``) to inline mode for a
    ``with`` or ``async with`` block; on exit it is switched back and the jobs it ran inline
    are forgotten. ``async with`` also runs the app's ``on_shutdown`` hooks on exit if its
    ``on_startup`` hooks ran (they run before the first inline job)."""
    return InlineMode(app)


class InlineMode:
    """What :func:`inline_mode` returns."""

    def __init__(self, app: Engine) -> None:
        self.app = app
        self._previous: str | None = None

    def __enter__(self) -> Engine:
        self._previous = self.app.testing
        for each in [self.app, *_sync_twin(self.app)]:
            each.testing = "inline"
        return self.app

    def __exit__(self, *exc: object) -> None:
        for each in [self.app, *_sync_twin(self.app)]:
            each.testing = self._previous
        _stores.pop(_home(self.app), None)

    async def __aenter__(self) -> Engine:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        store = _stores.get(_home(self.app))
        try:
            if store is not None and store.started:
                for hook in reversed(self.app.hooks.shutdown):
                    await maybe_await(hook(self.app.hooks.state))
        finally:
            self.__exit__()


def _sync_twin(app: Engine) -> list[Engine]:
    """The app's twin for sync callers, if one was made (it copied ``testing`` when made)."""
    twin = getattr(getattr(app, "_twins", None), "_twin", None)
    return [] if twin is None or twin is app else [twin]
