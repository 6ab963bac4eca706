"""Running one attempt of one job and turning what happened into an :class:`Outcome`.

This is the path everybody gets wrong, so it stays small: decode, build the context, call
the function under its timeout (and a scope the worker can cancel), classify the result.
Cancellation from outside (worker shutdown past its grace period) is never swallowed:
it propagates and the job's entry stays pending, to be reclaimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import traceback
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import anyio
import msgspec
import structlog

from engine.context import JobContext
from engine.core.errors import FORMATTED_TRACEBACK, JobTimeout, Retry, UnrecoverableError
from engine.core.limits import MAX_DELAY_S, MAX_WORKER_DEATHS
from engine.core.model import payload_decoder
from engine.core.priority import lane_queue
from engine.core.taskdef import TaskDef
from engine.core.transitions import Outcome, Started
from engine.runtime import Runtime

log = structlog.get_logger("engine.worker")
_encode = msgspec.json.Encoder().encode

# An error message and a traceback are stored in the job, its dead letter and the job log:
# a task that raises with a megabyte of text must not put it in all three.
MAX_ERROR_CHARS = 16_384
MAX_TRACEBACK_CHARS = 65_536
# Failure hooks (error reporting) get this long per failed attempt, whatever they do.
FAILURE_HOOKS_S = 10.0


class Executor:
    def __init__(self, engine: Runtime, thread_limiter: anyio.CapacityLimiter) -> None:
        self.engine = engine
        self.clock = engine.clock
        self.thread_limiter = thread_limiter
        self._cancels: dict[str, Callable[[], object]] = {}  # running job -> what cancels it
        self._cancelled: set[str] = set()
        self._asyncio: bool | None = None  # on asyncio: its own timeouts (see _attempt)

    def running(self) -> list[str]:
        """Ids of the jobs running here now."""
        return list(self._cancels)

    def cancel(self, job_id: str) -> bool:
        """Cancel a running attempt (a user's cancel request); True if it runs here."""
        cancel = self._cancels.get(job_id)
        if cancel is None:
            return False
        self._cancelled.add(job_id)
        cancel()
        return True

    async def run(self, job: Started) -> Outcome:
        """The attempt's outcome; never raises but for cancellation from outside.

        What the task raises is its failure (retried, then dead-lettered). Anything raised
        by the engine itself while preparing or classifying the attempt (a value read back
        from Redis that no check foresaw, a bug) dead-letters the job with the reason: the
        worker goes on, and the job does not loop through every worker in turn."""
        started = self.clock.monotonic()
        try:
            outcome = await self._run(job)
        except Exception as exc:
            log.exception("could not run the job; dead-lettering it", **_bound(job))
            outcome = self._dead(
                job,
                f"InternalError: the worker could not run this job: {describe(exc)}",
                _text("".join(traceback.format_exception(exc)), MAX_TRACEBACK_CHARS),
            )
        outcome.ran_ms = int((self.clock.monotonic() - started) * 1000)
        return outcome

    async def _run(self, job: Started) -> Outcome:
        if job.expired:
            log.info("job expired before it started; not run", **_bound(job))
            return Outcome(job.queue, job.entry_id, job.job_id, "cancelled", "expired", task=job.task)
        if job.problem is not None:
            return self._dead(job, job.problem, "")
        if job.deliveries > MAX_WORKER_DEATHS:
            # Its entry was delivered again and again: every worker that ran it died.
            return self._dead(
                job,
                f"PoisonJob: delivered {job.deliveries} times without an outcome: the workers "
                f"running it died (or stalled past the visibility timeout) {job.deliveries - 1} "
                "times, so it is not run again",
                "",
            )
        task = self.engine.tasks.get(job.task)
        if task is None:
            return self._dead(
                job, f"UnknownTaskError: no task named {job.task!r} is registered in this worker's app", ""
            )
        max_attempts = job.max_attempts or task.spec.max_attempts
        if job.attempt > max_attempts:
            # Delivered again and again without an outcome: it keeps killing its worker.
            return self._dead(
                job,
                f"PoisonJob: started {job.attempt - 1} times without finishing "
                f"(max_attempts={max_attempts}); its worker probably crashed each time",
                "",
            )
        try:
            payload = payload_decoder.decode(job.payload)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            return self._dead(job, f"PayloadError: cannot decode the job's arguments: {exc}", "")
        call_args, call_kwargs = payload.args, payload.kwargs
        if task.spec.shape is not None:
            try:  # a producer without the code, or of another version, may have sent anything
                call_args, call_kwargs = task.spec.shape.convert(job.task, call_args, call_kwargs)
            except TypeError as exc:
                return self._dead(job, f"PayloadError: {exc}", "")
        timeout = job.timeout or task.spec.timeout
        ctx = JobContext._for_attempt(
            job_id=job.job_id,
            task=job.task,
            queue=lane_queue(job.queue),
            attempt=job.attempt,
            max_attempts=max_attempts,
            timeout=timeout,
            deadline_s=self.clock.time() + timeout,
            scheduled_ms=job.tick_ms,
            enqueued_ms=job.created_ms,
            engine=self.engine,
            services=self.engine.gateway,
            state=self.engine.hooks.state,
            meta=payload.meta_or_empty,
        )
        args: list[Any] = [ctx, *call_args] if task.takes_ctx else call_args
        try:
            finished, result = await self._attempt(job.job_id, timeout, ctx, task, args, call_kwargs)
            if finished:
                return Outcome(
                    job.queue, job.entry_id, job.job_id, "completed", _encode(result).decode(), task=job.task
                )
            if job.job_id in self._cancelled:
                return Outcome(
                    job.queue, job.entry_id, job.job_id, "cancelled", "cancelled while running", task=job.task
                )
            raise JobTimeout(f"timed out after {timeout:g}s")
        except Exception as exc:
            if self.engine.hooks.failure:  # (two cancel scopes per failed attempt, else)
                with anyio.CancelScope(shield=True), anyio.move_on_after(FAILURE_HOOKS_S):
                    for hook, error in await self.engine.hooks.failed(ctx, exc):
                        log.error("failure hook raised", hook=hook, error=describe(error), **_bound(job))
            return self._failure(job, task, max_attempts, exc)
        finally:
            self._cancels.pop(job.job_id, None)
            self._cancelled.discard(job.job_id)

    async def _attempt(
        self,
        job_id: str,
        timeout: float,
        ctx: JobContext,
        task: TaskDef,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> tuple[bool, Any]:
        """(True, the result), or (False, None) when the attempt was stopped: timed out, or
        cancelled by :meth:`cancel` (which records it first, to tell the two apart).

        One limit serves both. On asyncio it is asyncio's own timeout: an anyio CancelScope
        per job cost a sixth of a worker's CPU on a drain of no-op jobs. A TimeoutError the
        task raises itself is its failure, not ours (the limit tells: it did not expire).

        On asyncio the limit is set only once the attempt first suspends: until then it runs
        without giving the event loop a turn, so neither a timer nor a cancel could stop it
        anyway, and an attempt that ends without suspending (most quick jobs) needs no timer
        (arming and disarming one cost a tenth of a worker's CPU on a drain of no-op jobs).
        The deadline still counts from the start."""
        if self._asyncio is None:
            self._asyncio = _on_asyncio()
        if not self._asyncio:
            scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
            self._cancels[job_id] = scope.cancel
            with scope:
                return True, await self._through_middleware(ctx, task, args, kwargs)
            return False, None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A cancel before the first suspension (only the job itself can send one then, as
        # inline mode runs it) is recorded by cancel() and sets the limit expired below.
        self._cancels[job_id] = _not_yet
        call = self._coroutine(ctx, task, args, kwargs)
        try:
            suspended = call.send(None)
        except StopIteration as done:
            return True, done.value
        now = loop.time()
        cancelled = job_id in self._cancelled
        limit = asyncio.timeout_at(now if cancelled else deadline if deadline > now else None)

        def stop() -> None:
            # A cancel landing after the limit was left (failure hooks still running) is late.
            with contextlib.suppress(RuntimeError):
                limit.reschedule(loop.time())

        self._cancels[job_id] = stop
        if not cancelled and deadline <= now:
            # Overdue already (its first step ran past the deadline): it expires at the next
            # turn of the loop, not in this one, as a timer set at the start would, which
            # lets the step the attempt is ready for run first.
            loop.call_soon(stop)
        try:
            async with limit:
                return True, await _resume(call, suspended)
        except TimeoutError:
            if not limit.expired():
                raise
            return False, None

    def _coroutine(
        self, ctx: JobContext, task: TaskDef, args: list[Any], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        """The attempt as one coroutine to step by hand: the task's own when nothing wraps
        it (a no-op job's two extra coroutines were a measurable part of its cost)."""
        if task.is_async and not self.engine.hooks.middleware:
            call = task.fn(*args, **kwargs)
            if isinstance(call, types.CoroutineType):
                return call
            return _awaited(call)  # an awaitable of another kind (a marked coroutine function)
        return self._through_middleware(ctx, task, args, kwargs)

    async def _through_middleware(
        self, ctx: JobContext, task: TaskDef, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """The call, wrapped by the app's middleware, the first added outermost."""
        if not self.engine.hooks.middleware:  # the usual case: no closure per attempt
            return await self._call(task, args, kwargs)

        async def innermost() -> Any:
            return await self._call(task, args, kwargs)

        call: Callable[[], Awaitable[Any]] = innermost
        for middleware in reversed(self.engine.hooks.middleware):
            call = functools.partial(middleware, ctx, call)
        return await call()

    async def _call(self, task: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if task.is_async:
            return await task.fn(*args, **kwargs)
        # A thread cannot be interrupted: on timeout the attempt is failed and the thread is
        # left to finish on its own (its result discarded).
        return await anyio.to_thread.run_sync(
            functools.partial(task.fn, *args, **kwargs),
            abandon_on_cancel=True,
            limiter=self.thread_limiter,
        )

    def _failure(self, job: Started, task: TaskDef, max_attempts: int, exc: Exception) -> Outcome:
        error = _text(describe(exc), MAX_ERROR_CHARS)
        text = "".join(traceback.format_exception(exc))
        with contextlib.suppress(AttributeError, TypeError):  # the log record's, made once
            setattr(exc, FORMATTED_TRACEBACK, text)
        tb = _text(text, MAX_TRACEBACK_CHARS)
        unencodable = isinstance(exc, msgspec.EncodeError | TypeError | UnicodeEncodeError)
        if unencodable and "encode" in error.lower():
            error = f"ResultError: the task's return value cannot be encoded as JSON: {error}"
        # The job's fields are passed with the event, not bound (a bound logger is built
        # even when the level drops the event), first so that records keep their order.
        if isinstance(exc, UnrecoverableError) or job.attempt >= max_attempts:
            log.error("job failed", **_bound(job), error=error, max_attempts=max_attempts, exc_info=exc)
            return self._dead(job, error, tb)
        delay = (
            exc.delay
            if isinstance(exc, Retry) and exc.delay is not None
            else task.spec.backoff.delay(job.attempt)
        )
        # Retry(delay=) and Backoff are bounded where they are made; stay within a datetime
        # whatever reaches here.
        delay = min(max(delay, 0.0), MAX_DELAY_S) if math.isfinite(delay) else MAX_DELAY_S
        log.warning(
            "job attempt failed; retrying",
            **_bound(job),
            error=error,
            retry_in_s=round(delay, 3),
            exc_info=exc,
        )
        due = int((self.clock.time() + delay) * 1000)
        return Outcome(job.queue, job.entry_id, job.job_id, "retry", error, tb, due, task=job.task)

    @staticmethod
    def _dead(job: Started, error: str, tb: str) -> Outcome:
        return Outcome(job.queue, job.entry_id, job.job_id, "failed", error, tb, task=job.task)


def _not_yet() -> None:
    """What cancels an attempt that has not suspended yet: nothing, see Executor._attempt."""


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@types.coroutine
def _resume(call: Coroutine[Any, Any, Any], suspended: Any) -> Generator[Any, Any, Any]:
    """Await ``call`` from where its first step (run by hand: see Executor._attempt) left
    it, ``suspended`` being what that step yielded to the event loop. The delegation
    ``await`` does (PEP 380): what the loop sends or throws in goes on to ``call``, what it
    yields goes out to the loop, its return value or exception is this one's."""
    while True:
        thrown: BaseException | None = None
        try:
            sent = yield suspended
        except GeneratorExit:
            call.close()
            raise
        except BaseException as exc:  # a cancellation, mostly
            thrown = exc
        # Sent on outside the except clause, so that an exception ``call`` raises is not
        # chained to the one thrown in unless ``call`` itself chains it.
        try:
            suspended = call.send(sent) if thrown is None else call.throw(thrown)
        except StopIteration as done:
            return done.value


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): anyio's scopes then
        return False
    return True


def _bound(job: Started) -> dict[str, Any]:
    return {"job_id": job.job_id, "task": job.task, "queue": lane_queue(job.queue), "attempt": job.attempt}


def describe(exc: BaseException) -> str:
    """ "Type: message", even for an exception whose ``__str__`` itself raises."""
    try:
        message = str(exc)
    except Exception:
        message = "<the exception's message could not be read>"
    return f"{type(exc).__name__}: {message}"


def _text(value: str, limit: int) -> str:
    """Fit for Redis, the job log and a terminal: at most ``limit`` characters, and lone
    surrogates (which no UTF-8 encoder takes) escaped."""
    if len(value) > limit:
        cut = f"\n... ({len(value) - limit:,} characters cut) ...\n"
        value = value[: limit // 2] + cut + value[-limit // 2 :]
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
