"""The Redis Streams gateway: every Redis command the services send goes through here.

Methods map one-to-one onto the state transitions of ``scripts/*.lua`` plus the few plain
reads around them. Nothing here knows about tasks or Python callables.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from engine.broker import scripts
from engine.broker.pool import WaitingConnectionPool
from engine.broker.reads import Reads
from engine.core.errors import ConfigurationError, ConnectionFailed
from engine.core.keys import GROUP, Keys
from engine.core.limits import MAX_ATTEMPTS, MAX_EPOCH_MS, MAX_TIMEOUT_S
from engine.core.model import decode_log_line, json_encoder

REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")

msgpack_encode = msgspec.msgpack.Encoder().encode

# The field under which reclaim() reports how often an entry was delivered (not a field of
# the entry: entries hold j, t, p, o, m and k, see enqueue.lua).
DELIVERIES = "#deliveries"

# How long a command waits for a free pooled connection before giving up.
POOL_WAIT_S = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def mask_url(url: str) -> str:
    """The URL with its password replaced (in the user info and in a ``?password=``
    parameter), fit for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.query:
        query = [
            (name, "***" if name.lower() == "password" else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    return urlunsplit(parts)


def check_redis_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("Redis URL is empty: pass redis_url= or set ENGINE_REDIS_URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"invalid Redis URL {mask_url(url)!r}: it must start with redis://, rediss:// "
            "or unix:// (for example redis://localhost:6379/0)"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: no host name")
    return url


async def run_scripts(
    redis: Any,
    calls: Sequence[tuple[Any, Sequence[str], Sequence[Any]]],
    more: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run redis-py ``Script`` objects, each with its (keys, args), in one pipelined round trip,
    then whatever ``more`` adds to the pipeline; the replies in order.

    redis-py's pipelines check every script with SCRIPT EXISTS first: a second round trip
    on the hot path. Instead send EVALSHA straight away and, in the rare case the server
    lost its scripts (a restart or SCRIPT FLUSH), rerun just the refused calls, which load
    the script (a NOSCRIPT call did nothing, so nothing runs twice). Replies of ``more``'s
    commands are returned as they are, errors included.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        if more is not None:
            more(pipe)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for i, (script, keys, args) in enumerate(calls):
        if isinstance(replies[i], NoScriptError):
            replies[i] = await script(keys=list(keys), args=list(args))
        elif isinstance(replies[i], Exception):
            raise replies[i]
    return replies


# Errors a script meets because the server cannot take writes now (a failover, memory
# full, loading): these pass, unlike an error in the script's own work on some data.
_TRANSIENT = ("READONLY", "OOM", "BUSY", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN")


def script_failed(exc: ResponseError) -> bool:
    """Whether ``exc`` is a script that failed on its data (Redis names the script in the
    message), rather than a server that refused to run it for now."""
    message = str(exc)
    return " script: " in message and not message.startswith(_TRANSIENT)


def _written(replies: Iterable[list[Any]]) -> list[tuple[str, bool]]:
    """enqueue.lua's replies (job id, 1 added / 0 not, per job) as (id, added) pairs."""
    return [(reply[i], reply[i + 1] == 1) for reply in replies for i in range(0, len(reply), 2)]


@dataclass(slots=True)
class NewJob:
    """One job ready to be written by ``enqueue.lua``."""

    id: str
    task: str
    payload: bytes
    due_ms: int = 0
    timeout: float | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    idempotency_ttl_ms: int = 0
    tick_ms: int | None = None

    def shared(self) -> tuple[Any, ...]:
        """What ``enqueue.lua`` takes once per batch: jobs sharing it go in one call."""
        return (
            self.task,
            self.due_ms,
            "" if self.timeout is None else repr(self.timeout),
            "" if self.max_attempts is None else self.max_attempts,
            self.idempotency_key or "",
            self.idempotency_ttl_ms,
            "" if self.tick_ms is None else self.tick_ms,
        )


@dataclass(frozen=True, slots=True)
class Fence:
    """A cron enqueue's guard: the leader's lock token and the tick being fired."""

    token: str
    schedule: str
    tick_ms: int


class FenceRejected(Exception):
    """A fenced enqueue was refused: ``reason`` is "fenced" (lock lost) or "fired" (done)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(slots=True)
class Started:
    """An entry a worker read and ``start.lua`` marked active (or, with ``confirmed`` set,
    is about to: a fresh job run straight from its entry, see :func:`runnable_entry`)."""

    queue: str
    entry_id: str
    job_id: str
    task: str
    payload: str
    attempt: int
    timeout: float | None
    max_attempts: int | None
    tick_ms: int | None
    created_ms: int | None
    confirmed: anyio.Event | None = None
    """Set once ``start.lua`` answered for this job; until then its outcome must wait."""
    dropped: bool = False
    """``start.lua`` refused it (cancelled meanwhile, or poison): no outcome is recorded."""
    deliveries: int = 1
    """Times its entry was delivered: more than once means its workers died running it."""
    problem: str | None = None
    """Why it cannot run (options read back from Redis that are malformed or out of
    bounds); the executor dead-letters it with this reason."""

    @classmethod
    def parse(
        cls,
        queue: str,
        entry_id: str,
        job_id: str,
        task: Any,
        payload: Any,
        fields: Sequence[Any],
        *,
        deliveries: int = 1,
        confirmed: anyio.Event | None = None,
    ) -> Started:
        """From the text Redis holds: ``fields`` are attempt, timeout, max_attempts, tick and
        created, each "" when unset. Whatever they hold, this returns a job (with a
        ``problem`` when a field is garbage), never raises: a worker must not die of one."""
        problems: list[str] = []
        if len(fields) != 5:
            problems.append(f"expected 5 option fields, got {len(fields)}")
            fields = ("", "", "", "", "")
        attempt, timeout, max_attempts, tick, created = fields
        job = cls(
            queue,
            entry_id,
            job_id,
            task if isinstance(task, str) else "",
            payload if isinstance(payload, str) else "",
            _bounded("attempts", attempt, int, 1, 1 << 62, problems) or 1,
            _bounded("timeout", timeout, float, 1e-9, MAX_TIMEOUT_S, problems),
            _bounded("max_attempts", max_attempts, int, 1, MAX_ATTEMPTS, problems),
            _bounded("tick", tick, int, 0, MAX_EPOCH_MS, problems),
            _bounded("created", created, int, 0, MAX_EPOCH_MS, problems),
            confirmed,
            deliveries=deliveries,
        )
        if problems:
            job.problem = "InvalidJob: malformed job options in Redis: " + "; ".join(problems)
        return job


def _bounded(
    name: str, raw: Any, kind: Callable[[Any], Any], low: float, high: float, problems: list[str]
) -> Any:
    """``raw`` (text from Redis, "" or None when unset) as a number in [low, high], or None;
    a value that is not one is noted in ``problems``."""
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
        if low <= value <= high:
            return value
    except (TypeError, ValueError, OverflowError):
        pass
    problems.append(f"{name}={str(raw)[:40]!r} is not a number from {low:g} to {high:g}")
    return None


def runnable_entry(queue: str, entry_id: str, fields: dict[str, str]) -> Started | None:
    """A fresh job's entry holds everything a worker needs to run it (``enqueue.lua``), so
    an idle worker can start it at once and confirm it with ``start.lua`` meanwhile; None
    for other entries (retried, replayed, garbage), which must go through ``start.lua``."""
    job_id, task, payload = fields.get("j"), fields.get("t"), fields.get("p")
    if not job_id or not task or payload is None:
        return None
    # XADD's time, within a ms of "created"; a fresh entry is on its first delivery.
    created = entry_id.split("-", 1)[0]
    options = ("1", fields.get("o"), fields.get("m"), fields.get("k"), created)
    return Started.parse(queue, entry_id, job_id, task, payload, options, confirmed=anyio.Event())


@dataclass(slots=True)
class Outcome:
    """What one attempt came to, as ``finish.lua`` records it."""

    queue: str
    entry_id: str
    job_id: str
    kind: str  # completed | retry | failed | cancelled
    value: str = ""  # text: finish.lua's MessagePack reader takes no binary strings
    traceback: str = ""
    due_ms: int = 0
    ran_ms: int = 0

    def argv(self) -> list[Any]:
        return [self.entry_id, self.job_id, self.kind, self.value, self.traceback, self.due_ms, self.ran_ms]


@dataclass
class Retention:
    completed_ms: int = 24 * 3600 * 1000
    failed_ms: int = 0  # 0 = kept until purged


class Gateway:
    """One Redis connection pool and the engine's scripts, for one namespace."""

    def __init__(
        self, url: str, namespace: str, *, connect_timeout: float = 5.0, max_connections: int = 100
    ) -> None:
        self.url = check_redis_url(url)
        self.keys = Keys(namespace)
        # Waits for a free connection past max_connections instead of failing (engine.broker.pool).
        pool = WaitingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            wait_timeout=POOL_WAIT_S,
            decode_responses=True,
            # Replies are text, and any bytes decode: a stream entry or hash written by
            # someone else with bytes that are not UTF-8 arrives with them escaped ("\xff")
            # instead of raising UnicodeDecodeError out of whatever read it (a worker's
            # fetch, the reclaimer, a DLQ listing). What the engine writes is always UTF-8,
            # so its own data is unaffected.
            encoding_errors="backslashreplace",
            socket_connect_timeout=connect_timeout,
            socket_keepalive=True,
            health_check_interval=30,
            # Ride out a dropped connection or a quick restart (about 1.5 s at most), then
            # let the caller see the error; the worker's loops add their own backoff.
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
        )
        # redis-py's type hints are unions of bytes/str that fight decode_responses=True;
        # the gateway is the one place that talks to it, so it is typed loosely here only.
        self.redis: Any = aioredis.Redis.from_pool(pool)
        self.connect_timeout = connect_timeout
        self.reads = Reads(self.redis, self.keys)
        self._scripts: dict[str, Any] = {
            name: self.redis.register_script(scripts.source(name)) for name in scripts.NAMES
        }
        self._known_queues: set[str] = set()
        # enqueue_one: single enqueues on their way, those waiting to go, and who sends them.
        self._sending = 0
        self._coalesced: list[tuple[str, NewJob, asyncio.Future[tuple[str, bool]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def ping(self) -> None:
        """Fail fast, naming the URL, when the server cannot be reached."""
        try:
            # A server that accepts connections but never answers must not hang the caller.
            with anyio.fail_after(self.connect_timeout):
                await self.redis.ping()
        except TimeoutError:
            raise ConnectionFailed(
                f"cannot reach Redis at {mask_url(self.url)}: no answer within {self.connect_timeout:g}s"
            ) from None
        except (RedisError, OSError) as exc:
            raise ConnectionFailed(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None

    async def close(self) -> None:
        await self.redis.aclose()

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def _call_many(self, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run several scripts, by name, in one pipelined round trip (:func:`run_scripts`)."""
        return await run_scripts(
            self.redis, [(self._scripts[name], keys, args) for name, keys, args in calls]
        )

    # -- producer ---------------------------------------------------------------------------

    async def remember_queue(self, queue: str) -> None:
        if queue not in self._known_queues:
            await self.redis.sadd(self.keys.queues, queue)
            self._known_queues.add(queue)

    async def enqueue(
        self, queue: str, jobs: Sequence[NewJob], chunk: int = 1000, fence: Fence | None = None
    ) -> list[tuple[str, bool]]:
        """Write jobs atomically per chunk; a big batch goes in one round trip (pipelined).

        With ``fence`` (cron), the write happens only while the caller holds the leader lock
        and only for a tick newer than the schedule's last one; otherwise FenceRejected.
        Returns (job id, added) per job: the id is the existing job's when its idempotency
        key (or id) was taken.
        """
        await self.remember_queue(queue)
        calls = self._enqueue_calls(queue, jobs, chunk, fence)
        replies = [await self._call(*calls[0])] if len(calls) == 1 else await self._call_many(calls)
        if fence is not None and replies and replies[0] and str(replies[0][0]).startswith("!"):
            raise FenceRejected(str(replies[0][0])[1:])
        return _written(replies)

    async def enqueue_one(self, queue: str, job: NewJob) -> tuple[str, bool]:
        """Write one job: at once when no other single enqueue is on its way, else together
        with every one issued meanwhile, in one pipelined round trip. So many concurrent
        producers (a web app's requests) enqueue at the rate of batches, not of round trips,
        and a lone one pays nothing for it."""
        if not self._sending:
            self._sending += 1
            try:
                return (await self.enqueue(queue, [job]))[0]
            finally:
                self._sending -= 1
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[str, bool]] = loop.create_future()
        self._coalesced.append((queue, job, done))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        """Send what enqueue_one callers queued, batch after batch, until none is left."""
        batch: list[tuple[str, NewJob, asyncio.Future[tuple[str, bool]]]] = []
        try:
            while self._coalesced:
                batch, self._coalesced = self._coalesced, []
                self._sending += 1
                try:
                    results = await self._enqueue_mixed([(queue, job) for queue, job, _ in batch])
                except Exception as exc:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                finally:
                    self._sending -= 1
                for (_, _, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            # Cancelled (the loop is shutting down): nothing may wait for us forever.
            for _, _, done in [*batch, *self._coalesced]:
                done.cancel()  # a no-op for those already answered
            self._coalesced = []
            self._flusher = None

    async def _enqueue_mixed(self, batch: Sequence[tuple[str, NewJob]]) -> list[tuple[str, bool]]:
        """Jobs of any queues, tasks and options in one round trip; results in batch order."""
        per_queue: dict[str, list[NewJob]] = {}
        for queue, job in batch:
            per_queue.setdefault(queue, []).append(job)
        calls: list[tuple[str, list[str], list[Any]]] = []
        spans: dict[str, tuple[int, int]] = {}
        for queue, jobs in per_queue.items():
            await self.remember_queue(queue)
            queue_calls = self._enqueue_calls(queue, jobs, 1000, None)
            spans[queue] = (len(calls), len(calls) + len(queue_calls))
            calls += queue_calls
        replies = await self._call_many(calls)
        written = {queue: iter(_written(replies[a:b])) for queue, (a, b) in spans.items()}
        return [next(written[queue]) for queue, _ in batch]

    def _enqueue_calls(
        self, queue: str, jobs: Sequence[NewJob], chunk: int, fence: Fence | None
    ) -> list[tuple[str, list[str], list[Any]]]:
        qk = self.keys.queue(queue)
        keys = [qk.stream, qk.delayed, qk.stats, qk.outbox, qk.joblog_flag, qk.cron_leader, qk.cron_last]
        keys += [qk.outbox_extra]
        guard = [fence.token, fence.schedule, fence.tick_ms] if fence else ["", "", 0]
        head = [qk.job_prefix, qk.idem_prefix, now_ms(), self.keys.wake_channel, queue, *guard]
        calls: list[tuple[str, list[str], list[Any]]] = []
        for start in range(0, len(jobs), chunk):
            # Jobs of one enqueue share task and options; group runs of equal ones anyway.
            argv: list[Any] = []
            shared: tuple[Any, ...] | None = None
            for job in jobs[start : start + chunk]:
                if (options := job.shared()) != shared:
                    if argv:
                        calls.append(("enqueue", keys, argv))
                    shared = options
                    argv = [*head, *shared]
                argv.extend((job.id, job.payload))
            calls.append(("enqueue", keys, argv))
        return calls

    # -- worker -----------------------------------------------------------------------------

    async def ensure_group(self, queue: str) -> None:
        await self.remember_queue(queue)
        try:
            # Id 0: a group created after jobs were added still delivers them.
            await self.redis.xgroup_create(self.keys.queue(queue).stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, queues: Sequence[str], consumer: str, count: int, block_ms: int | None
    ) -> list[tuple[str, str, dict[str, str]]]:
        """XREADGROUP new entries of several queues; [(queue, entry id, fields)]."""
        streams = {self.keys.queue(q).stream: ">" for q in queues}
        reply = await self.redis.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        out: list[tuple[str, str, dict[str, str]]] = []
        if not reply:
            return out
        by_stream = {self.keys.queue(q).stream: q for q in queues}
        for stream, entries in reply:
            queue = by_stream[stream]
            for entry_id, fields in entries:
                out.append((queue, entry_id, fields or {}))
        return out

    async def fetch(self, queues: Sequence[str], worker_id: str, count: int) -> list[Started]:
        """Read up to ``count`` new entries per queue and mark them active, in one round trip
        (no blocking: an empty answer means the streams are drained)."""
        return await self.start(worker_id, {queue: ["read", count] for queue in queues})

    async def start_entries(
        self, worker_id: str, entries: Sequence[tuple[str, str, dict[str, str]]]
    ) -> list[Started]:
        """Mark entries already read (blocking read, reclaim) active.

        Should start.lua fail on some entry, the entries are started one by one and the one
        it fails on is buried (:meth:`bury`) with the reason: the others start as usual."""
        try:
            return await self._start_entries(worker_id, entries)
        except ResponseError as exc:
            if not script_failed(exc):
                raise
            started: list[Started] = []
            for queue, entry_id, fields in entries:
                try:
                    started += await self._start_entries(worker_id, [(queue, entry_id, fields)])
                except ResponseError as alone:
                    if not script_failed(alone):
                        raise
                    await self.bury(queue, entry_id, fields.get("j", ""), f"could not start: {alone}")
            return started

    async def _start_entries(
        self, worker_id: str, entries: Sequence[tuple[str, str, dict[str, str]]]
    ) -> list[Started]:
        per_queue: dict[str, list[Any]] = {}
        deliveries: dict[str, int] = {}
        for queue, entry_id, fields in entries:
            per_queue.setdefault(queue, []).extend((entry_id, fields.get("j", "")))
            if DELIVERIES in fields:
                deliveries[entry_id] = int(fields[DELIVERIES])
        started = await self.start(worker_id, per_queue)
        if deliveries:
            for job in started:
                job.deliveries = deliveries.get(job.entry_id, 1)
        return started

    async def start(self, worker_id: str, per_queue: dict[str, list[Any]]) -> list[Started]:
        """Run start.lua per queue (all in one round trip)."""
        if not per_queue:
            return []
        now = now_ms()
        calls = []
        for queue, pairs in per_queue.items():
            qk = self.keys.queue(queue)
            calls.append(("start", [qk.stream, qk.dlq], [qk.job_prefix, GROUP, now, worker_id, *pairs]))
        replies = await self._call_many(calls)
        return [
            Started.parse(queue, row[0], row[1], row[3], row[4], row[5:10])
            for queue, reply in zip(per_queue, replies, strict=True)
            for row in reply
            if row[2] == 1
        ]

    async def finish(self, outcomes: Sequence[Outcome], retention: Retention) -> int:
        """Record outcomes and XACK their entries: one script per queue, one round trip.

        Should the script fail on some outcome (data no check foresaw), the batch is split
        until that outcome stands alone, and it is buried (:meth:`bury`): every other
        outcome is recorded, and the call never fails the same way twice."""
        try:
            return await self._finish(outcomes, retention)
        except ResponseError as exc:
            if not script_failed(exc):
                raise
            if len(outcomes) == 1:
                (outcome,) = outcomes
                reason = f"could not record its outcome ({outcome.kind}): {exc}"
                return await self.bury(outcome.queue, outcome.entry_id, outcome.job_id, reason)
            half = len(outcomes) // 2
            return await self.finish(outcomes[:half], retention) + await self.finish(
                outcomes[half:], retention
            )

    async def bury(self, queue: str, entry_id: str, job_id: str, reason: str) -> int:
        """Acknowledge an entry that cannot be started or recorded, leaving a dead letter
        with ``reason`` (bury.lua); 1 if it was still pending."""
        qk = self.keys.queue(queue)
        keys = [qk.stream, qk.dlq, qk.stats]
        return int(await self._call("bury", keys, [qk.job_prefix, GROUP, entry_id, job_id, reason]))

    async def _finish(self, outcomes: Sequence[Outcome], retention: Retention) -> int:
        per_queue: dict[str, list[Any]] = {}
        for outcome in outcomes:
            per_queue.setdefault(outcome.queue, []).extend(outcome.argv())
        now = now_ms()
        channel = self.keys.done_channel("")
        calls = []
        for queue, argv in per_queue.items():
            qk = self.keys.queue(queue)
            tput = qk.throughput(now // 60_000)
            keys = [qk.stream, qk.delayed, qk.dlq, qk.stats, qk.outbox, qk.joblog_flag, tput, qk.outbox_extra]
            head = [qk.job_prefix, GROUP, now, retention.completed_ms, retention.failed_ms, channel]
            calls.append(("finish", keys, [*head, self.keys.wake_channel, queue, msgpack_encode(argv)]))
        replies = await self._call_many(calls)
        return sum(sum(cast(list[int], r)) for r in replies)

    async def renew(self, consumer: str, entries: dict[str, list[str]]) -> list[tuple[str, str]]:
        """Renew the leases of in-flight entries per queue; returns (queue, entry) pairs lost."""
        if not entries:
            return []
        queues = [q for q, ids in entries.items() if ids]
        replies = await self._call_many(
            [("renew", [self.keys.queue(q).stream], [GROUP, consumer, *entries[q]]) for q in queues]
        )
        return [(queue, entry) for queue, lost in zip(queues, replies, strict=True) for entry in lost]

    async def reclaim(
        self, queue: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[str, str, dict[str, str]]]:
        """XAUTOCLAIM entries idle past ``min_idle_ms``; same shape as :meth:`read`."""
        qk = self.keys.queue(queue)
        flat = await self._call("reclaim", [qk.stream, qk.stats], [GROUP, consumer, min_idle_ms, count])
        return [
            (queue, flat[i], {"j": flat[i + 1], DELIVERIES: str(flat[i + 2])} if flat[i + 1] else {})
            for i in range(0, len(flat), 3)
        ]

    async def replay(self, queue: str, job_id: str) -> int:
        qk = self.keys.queue(queue)
        keys = [qk.stream, qk.dlq, qk.stats, qk.outbox, qk.joblog_flag]
        return int(await self._call("replay", keys, [qk.job_prefix, job_id, now_ms(), queue]))

    async def purge_dlq(self, queue: str, batch: int = 500) -> int:
        qk = self.keys.queue(queue)
        total = 0
        while True:
            keys = [qk.dlq, qk.outbox, qk.joblog_flag, qk.outbox_extra]
            removed = int(await self._call("purge", keys, [qk.job_prefix, batch, queue]))
            total += removed
            if removed < batch:
                return total

    async def dlq_entries(
        self, queue: str, count: int | None = None, newest_first: bool = True
    ) -> list[tuple[str, dict[str, str]]]:
        key = self.keys.queue(queue).dlq
        if newest_first:
            return list(await self.redis.xrevrange(key, count=count))
        return list(await self.redis.xrange(key, count=count))

    async def job_hashes(self, queue: str, job_ids: Sequence[str]) -> list[dict[str, str]]:
        qk = self.keys.queue(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(qk.job(job_id))
            hashes: list[dict[str, str]] = await pipe.execute()
        await self._fill_payloads(queue, job_ids, hashes)
        return hashes

    async def _fill_payloads(self, queue: str, job_ids: Sequence[str], hashes: list[dict[str, str]]) -> None:
        """Add the payload of jobs that have not started: it is still in their stream entry."""
        pairs = zip(job_ids, hashes, strict=True)
        todo = [(i, h) for i, h in pairs if h and "payload" not in h and h.get("msg")]
        if not todo:
            return
        qk = self.keys.queue(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, h in todo:
                pipe.xrange(qk.stream, h["msg"], h["msg"])
                # Started and finished since HGETALL: the entry is gone, the hash has it.
                pipe.hget(qk.job(job_id), "payload")
            replies = await pipe.execute()
        for n, (_, h) in enumerate(todo):
            entries, payload = replies[2 * n], replies[2 * n + 1]
            if entries and "p" in entries[0][1]:
                payload = entries[0][1]["p"]
            if payload is not None:
                h["payload"] = payload

    async def promote(self, queue: str, limit: int = 1000) -> tuple[int, int | None]:
        qk = self.keys.queue(queue)
        moved, next_due = await self._call(
            "promote", [qk.delayed, qk.stream], [qk.job_prefix, now_ms(), limit]
        )
        return int(moved), (None if int(next_due) < 0 else int(next_due))

    # -- reads and admin --------------------------------------------------------------------

    async def cancel(self, queue: str, job_id: str, retention: Retention) -> int:
        qk = self.keys.queue(queue)
        return int(
            await self._call(
                "cancel",
                [qk.stream, qk.delayed, qk.stats, qk.outbox, qk.joblog_flag],
                [
                    qk.job_prefix,
                    job_id,
                    now_ms(),
                    retention.completed_ms,
                    self.keys.done_channel(""),
                    self.keys.cancel_channel,
                    queue,
                ],
            )
        )

    async def append_log(self, queue: str, job_id: str, level: str, message: str, keep: int) -> None:
        qk = self.keys.queue(queue)
        now = now_ms()
        line = json_encoder.encode({"at": now, "level": level, "message": message})
        await self._call(
            "log",
            [qk.logs(job_id), qk.outbox, qk.joblog_flag],
            [job_id, queue, now, level, message, keep, line],
        )

    async def read_logs(self, queue: str, job_id: str) -> list[dict[str, Any]]:
        """A job's log lines (``ctx.log``), oldest first."""
        lines = await self.redis.lrange(self.keys.queue(queue).logs(job_id), 0, -1)
        return [decode_log_line(line) for line in lines]

    async def set_progress(self, queue: str, job_id: str, value: float) -> None:
        await self.redis.hset(self.keys.queue(queue).job(job_id), "progress", repr(value))

    async def delete(self, queue: str, job_id: str) -> int:
        qk = self.keys.queue(queue)
        keys = [qk.stream, qk.delayed, qk.dlq, qk.outbox, qk.joblog_flag]
        return int(await self._call("delete", keys, [qk.job_prefix, job_id, queue]))

    async def acquire_lock(self, key: str, token: str, lease_ms: int) -> tuple[bool, int]:
        """``SET NX PX``, and the lock's remaining ms (``PTTL``: -2 gone, -1 no expiry) in
        the same round trip, so a follower can sleep until the holder's lease runs out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, token, nx=True, px=lease_ms)
            pipe.pttl(key)
            acquired, remaining_ms = await pipe.execute()
        return bool(acquired), int(remaining_ms)

    async def claim_once(self, key: str, ttl_s: int) -> bool:
        """True for the first caller within ``ttl_s`` seconds (``SET NX EX``)."""
        return bool(await self.redis.set(key, "1", nx=True, ex=ttl_s))

    async def renew_lock(self, key: str, token: str, lease_ms: int) -> bool:
        """Extend the lease if ``token`` still holds the lock; lease_ms=0 releases it."""
        return int(await self._call("lease", [key], [token, lease_ms])) == 1

    async def job_hash(self, queue: str, job_id: str) -> dict[str, str] | None:
        return (await self.job_hashes(queue, [job_id]))[0] or None

    async def queues(self) -> list[str]:
        return sorted(await self.redis.smembers(self.keys.queues))

    async def find_queue(self, job_id: str) -> str | None:
        """Which queue holds this job id (ids do not name their queue)."""
        queues = await self.queues()
        if not queues:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.exists(self.keys.queue(q).job(job_id))
            found = await pipe.execute()
        for q, hit in zip(queues, found, strict=True):
            if hit:
                return q
        return None

    async def queue_stats(self, queue: str) -> dict[str, int]:
        qk = self.keys.queue(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(qk.stream)
            pipe.xpending(qk.stream, GROUP)
            pipe.zcard(qk.delayed)
            pipe.xlen(qk.dlq)
            pipe.hgetall(qk.stats)
            length, pending, delayed, dlq, counters = await pipe.execute(raise_on_error=False)
        active = pending["pending"] if isinstance(pending, dict) else 0
        counts = counters if isinstance(counters, dict) else {}
        return {
            "waiting": max(0, int(length) - active) if isinstance(length, int) else 0,
            "active": active,
            "delayed": int(delayed) if isinstance(delayed, int) else 0,
            "completed": int(counts.get("completed", 0)),
            "failed": int(counts.get("failed", 0)),
            "dlq": int(dlq) if isinstance(dlq, int) else 0,
            "retried": int(counts.get("retried", 0)),
            "cancelled": int(counts.get("cancelled", 0)),
            "enqueued": int(counts.get("enqueued", 0)),
            "reclaimed": int(counts.get("reclaimed", 0)),
            "replayed": int(counts.get("replayed", 0)),
        }

    # -- worker upkeep ----------------------------------------------------------------------

    async def switch_on_joblog(self, queues: Sequence[str]) -> None:
        """Mark these queues as keeping a job log, so their scripts write outbox events."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.set(self.keys.queue(queue).joblog_flag, "1")
            await pipe.execute()

    async def write_beat(self, worker_id: str, beat: bytes) -> None:
        await self.redis.hset(self.keys.workers, worker_id, beat)

    async def beats(self) -> dict[str, str]:
        """Every worker's latest heartbeat (encoded WorkerBeat), by worker id."""
        return dict(await self.redis.hgetall(self.keys.workers))

    async def forget_beats(self, *worker_ids: str) -> None:
        if worker_ids:
            await self.redis.hdel(self.keys.workers, *worker_ids)

    def subscriber(self) -> Any:
        """A fresh pub/sub connection (the caller subscribes, reads and closes it)."""
        return self.redis.pubsub(ignore_subscribe_messages=True)
