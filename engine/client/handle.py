"""Job handles (:class:`Job`) and the pub/sub listener that wakes ``job.result()``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import anyio
import structlog

from engine.broker import RedisError
from engine.client import sync
from engine.core.errors import JobFailed, JobNotFound, JobRunning, ScriptCode
from engine.core.model import FINAL_STATUSES, JobInfo, Status, json_decoder

if TYPE_CHECKING:
    from engine.broker.gateway import Gateway, Retention
    from engine.broker.subscriber import Subscriber
    from engine.core.wiretypes import Shape

R = TypeVar("R")
log = structlog.get_logger("engine")

# Pub/sub drops messages across a reconnect; a waiter re-reads the job at least this often
# so a lost notification costs at most this much latency, never a hang.
RECHECK_INTERVAL_S = 5.0
# The waiters mark outlives a waiter's re-check (RECHECK_INTERVAL_S) by far, and is renewed
# well before it lapses.
WAITERS_TTL_S = 60.0
WAITERS_RENEW_S = 20.0


class Notifier:
    """One shared subscriber (sharded where the server has it: one connection per node of a
    cluster); waiters get an :class:`anyio.Event` per channel."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._marked: dict[str, float] = {}  # queue -> when this process last marked it waited on
        self._subscriber: Subscriber | None = None
        self._waiters: dict[str, set[anyio.Event]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = anyio.Lock()

    async def mark_waiting(self, queue: str) -> None:
        """Tell the workers someone waits on a job of ``queue`` (``QueueKeys.waiters``, a key
        with a TTL): they announce a job's end only while it exists. Set at most every
        WAITERS_RENEW_S per queue and process; a waiter re-marks at each of its re-checks."""
        now = time.monotonic()
        if now - self._marked.get(queue, -math.inf) < WAITERS_RENEW_S:
            return
        await self._gateway.mark_waiters(queue, int(WAITERS_TTL_S * 1000))
        self._marked[queue] = now

    async def subscribe(self, channel: str) -> anyio.Event:
        event = anyio.Event()
        async with self._lock:
            waiters = self._waiters.setdefault(channel, set())
            waiters.add(event)
            if len(waiters) == 1:
                if self._subscriber is None:
                    self._subscriber = self._gateway.subscriber()
                await self._subscriber.subscribe(channel)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._read())
        return event

    async def unsubscribe(self, channel: str, event: anyio.Event) -> None:
        async with self._lock:
            waiters = self._waiters.get(channel)
            if waiters is None:
                return
            waiters.discard(event)
            if not waiters:
                del self._waiters[channel]
                if self._subscriber is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._subscriber.unsubscribe(channel)

    async def _read(self) -> None:
        subscriber = self._subscriber
        if subscriber is None:
            return
        try:
            while self._waiters:
                message = await subscriber.get_message(timeout=1.0)
                if message is not None:
                    for event in self._waiters.get(message["channel"], ()):
                        event.set()
        except (RedisError, OSError) as exc:
            log.warning("notification listener lost its connection", error=str(exc))
            # Wake everyone: they re-read their job and subscribe again on a new connection.
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()
            if self._subscriber is subscriber:
                self._subscriber = None
            self._waiters.clear()
            with contextlib.suppress(Exception):
                await subscriber.aclose()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._subscriber is not None:
            with contextlib.suppress(Exception):
                await self._subscriber.aclose()
        self._subscriber = None
        self._waiters.clear()


class JobSource(Protocol):
    """What a handle needs of the app (``engine.Engine`` is one)."""

    @property
    def gateway(self) -> Gateway: ...

    @property
    def notifier(self) -> Notifier: ...

    @property
    def retention(self) -> Retention: ...

    def sync_twin(self) -> JobSource:
        """The app's twin on the background loop of sync callers (``engine.client.sync``)."""
        ...


class Job(Generic[R]):
    """A handle on one job: cheap to make, reads its state from Redis on demand."""

    __slots__ = ("_engine", "_shape", "id", "queue")

    def __new__(cls, engine: JobSource, *args: Any, **kwargs: Any) -> Job[R]:
        # An app in inline mode (Engine(testing="inline")) keeps its jobs in memory, with no
        # Redis: its handles, app.job(id)'s too, read them there (engine.testing.inline).
        if cls is Job and getattr(engine, "testing", None) == "inline":
            from engine.testing.inline import InlineJob

            return super().__new__(InlineJob)
        return super().__new__(cls)

    def __init__(
        self, engine: JobSource, job_id: str, queue: str | None = None, shape: Shape | None = None
    ) -> None:
        self._engine = engine
        self.id = job_id
        self.queue = queue
        self._shape = shape  # the task's types: results come back as its return type

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, queue={self.queue!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def _queue(self) -> str | None:
        if self.queue is None:
            self.queue = await self._engine.gateway.find_queue(self.id)
        return self.queue

    async def _hash(self) -> dict[str, str] | None:
        queue = await self._queue()
        if queue is None:
            return None
        return await self._engine.gateway.job_hash(queue, self.id)

    async def info(self) -> JobInfo | None:
        """A snapshot of the job, or None when it does not exist (or its retention ran out)."""
        h = await self._hash()
        if h is None:
            return None
        assert self.queue is not None
        return JobInfo.from_hash(self.id, self.queue, h)

    async def status(self) -> Status | None:
        h = await self._hash()
        return None if h is None else Status(h.get("status", "waiting"))

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return its result.

        Raises :class:`JobFailed` when it failed for good or was cancelled,
        :class:`TimeoutError` when ``timeout`` seconds pass first, :class:`JobNotFound`
        when there is no such job.
        """
        gateway = self._engine.gateway
        notifier = self._engine.notifier
        # The notification comes on the queue's channel: find the queue first.
        queue = await self._queue()
        if queue is None:
            raise JobNotFound(f"no job with id {self.id!r}")
        channel = gateway.keys.queue(queue).done_channel(self.id)
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            # Before the subscription and the read of the status: a job ending after the mark
            # is announced, one ending before it is seen by the read.
            await notifier.mark_waiting(queue)
            event = await notifier.subscribe(channel)
            try:
                h = await self._hash()
                if h is None:
                    raise JobNotFound(f"no job with id {self.id!r}")
                status = Status(h.get("status", "waiting"))
                if status in FINAL_STATUSES:
                    return self._final(status, h)
                wait = RECHECK_INTERVAL_S
                if deadline is not None:
                    remaining = deadline - anyio.current_time()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"job {self.id} did not finish within {timeout}s (status: {status})"
                        )
                    wait = min(wait, remaining)
                with anyio.move_on_after(wait):
                    await event.wait()
            finally:
                await notifier.unsubscribe(channel, event)

    def _final(self, status: Status, h: dict[str, str]) -> R:
        if status == Status.COMPLETED:
            raw = h.get("result")
            value = json_decoder.decode(raw) if raw else None
            return cast(R, value if self._shape is None else self._shape.result(value))
        raise JobFailed(self.id, status.value, h.get("error"))

    # -- from sync code (any thread with no running event loop: engine.client.sync) ---------

    def result_sync(self, timeout: float | None = None) -> R:
        """:meth:`result`, from sync code."""
        job = self._on_portal()
        return sync.call(lambda: job.result(timeout))

    def info_sync(self) -> JobInfo | None:
        """:meth:`info`, from sync code."""
        job = self._on_portal()
        return sync.call(job.info)

    def status_sync(self) -> Status | None:
        """:meth:`status`, from sync code."""
        job = self._on_portal()
        return sync.call(job.status)

    def cancel_sync(self) -> bool:
        """:meth:`cancel`, from sync code."""
        job = self._on_portal()
        return sync.call(job.cancel)

    def _on_portal(self) -> Job[R]:
        return self.rebound(self._engine.sync_twin())

    def rebound(self, engine: JobSource) -> Job[R]:
        """This handle on another app object (the same app's twin, or back)."""
        return self if engine is self._engine else Job(engine, self.id, self.queue, self._shape)

    async def cancel(self) -> bool:
        """Cancel the job if it has not finished; True when it was (or will be) cancelled.

        A waiting or delayed job never runs. A running job is cancelled by its worker and
        ends ``cancelled`` without retries.
        """
        queue = await self._queue()
        if queue is None:
            return False
        code = await self._engine.gateway.cancel(queue, self.id, self._engine.retention)
        return code in (ScriptCode.DONE, ScriptCode.CANCEL_REQUESTED)

    async def delete(self) -> bool:
        """Delete the job and everything kept about it: its data in Redis at once and, with
        the job log on, its history in PostgreSQL as soon as the shipper gets to it; False if
        there is no such job. A running job is refused (:class:`JobRunning`): cancel it first."""
        queue = await self._queue()
        if queue is None:
            return False
        code = await self._engine.gateway.delete(queue, self.id)
        if code is ScriptCode.JOB_RUNNING:
            raise JobRunning(f"job {self.id} is running; cancel it before deleting it")
        return code is ScriptCode.DONE

    async def logs(self) -> list[dict[str, Any]]:
        """The job's log lines (from ``ctx.log``), oldest first."""
        queue = await self._queue()
        if queue is None:
            return []
        return await self._engine.gateway.read_logs(queue, self.id)
