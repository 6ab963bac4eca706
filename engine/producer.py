"""Turning a call (task, args, options) into a validated, encoded job, before anything is sent.

Everything that can be wrong with an enqueue is found here, so a refused enqueue writes
nothing: bad arguments for the task's signature, unencodable values, an over-size payload,
bad options.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import msgspec

from engine.broker.gateway import NewJob
from engine.core.errors import ConfigurationError, PayloadTooLarge
from engine.core.keys import check_name
from engine.core.limits import (
    MAX_DELAY_S,
    MAX_KEY_LENGTH,
    MAX_PAYLOAD_DEPTH,
    check_attempts,
    check_delay,
    check_timeout,
    payload_depth_exceeded,
)
from engine.core.model import Payload, json_encoder
from engine.core.priority import check_priority
from engine.core.settings import Settings
from engine.core.taskdef import TaskSpec as TaskSpec
from engine.core.taskdef import task_signature as task_signature

# base32hex (RFC 4648), two characters per 10 bits: its alphabet is in ASCII order.
_B32HEX = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
_PAIRS = [a + b for a in _B32HEX for b in _B32HEX]
_SHIFTS = tuple(range(120, -1, -10))


def new_job_id() -> str:
    """48 bits of milliseconds then 80 random bits in 26 characters of base32hex (the same
    text as ``base64.b32hexencode``, without its padding, at a fraction of the cost): ids
    sort by creation time."""
    n = (time.time_ns() // 1_000_000) << 82 | int.from_bytes(os.urandom(10), "big") << 2
    return "".join([_PAIRS[(n >> shift) & 1023] for shift in _SHIFTS])


def new_job_ids(count: int) -> list[str]:
    """``count`` ids of :func:`new_job_id`'s form for one batch, at half its cost per id: one
    clock read and one random read for all of them, and the first 9 characters (45 bits of
    the time) computed once."""
    ms = time.time_ns() // 1_000_000
    prefix = "".join([_PAIRS[(ms << 82 >> shift) & 1023] for shift in (120, 110, 100, 90)])
    prefix += _B32HEX[(ms >> 3) & 31]
    low = (ms & 7) << 82  # the time's last 3 bits share the 10th character with random bits
    rand = os.urandom(10 * count)
    single, pairs, from_bytes = _B32HEX, _PAIRS, int.from_bytes
    ids = []
    for i in range(0, 10 * count, 10):
        n = low | from_bytes(rand[i : i + 10], "big") << 2
        ids.append(
            prefix
            + single[n >> 80]
            + pairs[(n >> 70) & 1023]
            + pairs[(n >> 60) & 1023]
            + pairs[(n >> 50) & 1023]
            + pairs[(n >> 40) & 1023]
            + pairs[(n >> 30) & 1023]
            + pairs[(n >> 20) & 1023]
            + pairs[(n >> 10) & 1023]
            + pairs[n & 1023]
        )
    return ids


@dataclass(frozen=True, slots=True)
class Options:
    """Per-enqueue options (``task.with_options(...)``)."""

    delay: float | timedelta | None = None
    run_at: datetime | None = None
    idempotency_key: str | None = None
    idempotency_ttl: float | None = None
    job_id: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    queue: str | None = None
    scheduled_at: datetime | None = None
    meta: dict[str, Any] | None = None
    """A small JSON object carried with the job (``ctx.meta``, ``info.meta``, the dashboard):
    a trace context, a request id."""
    partition_key: str | None = None
    """Of a partitioned queue: jobs with the same key go to the same partition (and are
    dequeued in order); ignored by a plain queue."""
    priority: int | None = None
    """0 (runs first) to 9 (runs last); None: the task's (5 unless ``@app.task(priority=)``)."""
    concurrency_key: str | None = None
    """Jobs sharing it run at most ``key_concurrency`` at a time (``app.queue(q,
    key_concurrency=N)``): one customer's, one account's; ignored where no limit is set."""
    expires: float | timedelta | datetime | None = None
    """Seconds from now (or a timedelta, or an aware datetime) after which the job, if it has
    not started, is dropped as cancelled with the error "expired" instead of run."""

    def merged(self, **changes: Any) -> Options:
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(
                f"unknown enqueue option(s) {', '.join(sorted(unknown))}; valid: {', '.join(self.__slots__)}"
            )
        return replace(self, **changes)


NO_OPTIONS = Options()
"""Every option left out: one shared value (Options is frozen), not one built per enqueue."""


def encode_payload(
    spec: TaskSpec,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    limit: int,
    meta: dict[str, Any] | None = None,
) -> bytes:
    positional = None if kwargs else spec.positional
    if positional is not None and positional[0] <= len(args) <= positional[1]:
        pass  # binds for sure; Signature.bind costs more than the rest of an enqueue
    elif spec.signature is not None:
        try:
            spec.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {spec.name!r}: {exc} (signature: {spec.name}{spec.signature})") from None
    if payload_depth_exceeded(args) or (kwargs and payload_depth_exceeded(kwargs)):
        raise TypeError(
            f"task {spec.name!r}: arguments nest deeper than {MAX_PAYLOAD_DEPTH} levels of lists, "
            "dicts or objects; flatten them or store the data elsewhere and pass a reference"
        )
    if spec.shape is not None:
        spec.shape.check(spec.name, args, kwargs)
    try:
        data = json_encoder.encode(Payload(args=list(args), kwargs=dict(kwargs), meta=meta or msgspec.UNSET))
    except (TypeError, msgspec.EncodeError, OverflowError, RecursionError, UnicodeEncodeError) as exc:
        raise TypeError(
            f"task {spec.name!r}: arguments cannot be encoded as JSON ({exc}); pass plain data "
            "(str, int, float, bool, None, list, dict, datetime, UUID, dataclasses, msgspec Structs)"
        ) from None
    if len(data) > limit:
        raise PayloadTooLarge(
            f"task {spec.name!r}: encoded arguments are {len(data):,} bytes, over the limit of "
            f"{limit:,} (Engine(max_payload_bytes=...)); store large data elsewhere and pass a "
            "reference"
        )
    return data


MAX_META_BYTES = 16 * 1024


def check_meta(meta: Any) -> dict[str, Any] | None:
    """A job's meta: a JSON object with string keys, at most 16 KiB encoded."""
    if meta is None or meta == {}:
        return None
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise ConfigurationError(f"meta must be a dict with string keys, not {meta!r:.80}")
    try:
        size = len(json_encoder.encode(meta))
    except (TypeError, msgspec.EncodeError, OverflowError, RecursionError) as exc:
        raise ConfigurationError(f"meta must be JSON-encodable: {exc}") from None
    if size > MAX_META_BYTES:
        raise ConfigurationError(f"meta is {size:,} bytes encoded, over the limit of {MAX_META_BYTES:,}")
    return meta


def check_key(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH:
        raise ConfigurationError(
            f"{name} must be a non-empty string of at most {MAX_KEY_LENGTH} characters, not {value!r:.80}"
        )
    return value


def build_job(
    spec: TaskSpec,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Options,
    *,
    max_payload_bytes: int,
    default_idempotency_ttl: float,
    now: float | None = None,
    meta: dict[str, Any] | None = None,
) -> NewJob:
    """One job. ``meta``: ``options.meta`` once :func:`check_meta` passed it (once per
    enqueue call, not per job of it); a job without meta (cron's) leaves it out."""
    payload = encode_payload(spec, args, kwargs, max_payload_bytes, meta)
    fields = job_fields(spec, options, default_idempotency_ttl, time.time() if now is None else now)
    return NewJob(id=options.job_id or new_job_id(), payload=payload, **fields)


def job_fields(
    spec: TaskSpec, options: Options, default_idempotency_ttl: float, now: float
) -> dict[str, Any]:
    """What a job of ``spec`` enqueued with ``options`` at ``now`` holds besides its id and
    payload (the fields of :class:`NewJob`), every option checked: the same for every job
    of one enqueue call, so computed once per call."""
    due_ms = 0
    if options.delay is not None and options.run_at is not None:
        raise ConfigurationError("pass either delay= or run_at=, not both")
    if options.delay is not None:
        delay = options.delay.total_seconds() if isinstance(options.delay, timedelta) else options.delay
        if check_delay(delay, f"task {spec.name!r}: delay") > 0:
            due_ms = int((now + delay) * 1000)
    if options.run_at is not None:
        if not isinstance(options.run_at, datetime) or options.run_at.tzinfo is None:
            raise ConfigurationError("run_at must be a time-zone-aware datetime")
        at = options.run_at.timestamp()
        if at > now + MAX_DELAY_S:
            raise ConfigurationError(
                f"task {spec.name!r}: run_at={options.run_at.isoformat()} is more than 10 years ahead"
            )
        due_ms = max(0, int(at * 1000))
    idem_ttl = default_idempotency_ttl if options.idempotency_ttl is None else options.idempotency_ttl
    if options.idempotency_key is not None:
        check_key("idempotency_key", options.idempotency_key)
        if check_delay(idem_ttl, "idempotency_ttl") <= 0:
            raise ConfigurationError(f"idempotency_ttl must be a number of seconds > 0, not {idem_ttl!r}")
    if options.job_id is not None:
        check_key("job_id", options.job_id)
    if options.partition_key is not None:
        check_key("partition_key", options.partition_key)
    if options.concurrency_key is not None:
        check_key("concurrency_key", options.concurrency_key)
    priority = spec.priority if options.priority is None else check_priority(options.priority)
    return {
        "task": spec.name,
        "due_ms": due_ms,
        "timeout": None if options.timeout is None else check_timeout(options.timeout, spec.name),
        "max_attempts": None
        if options.max_attempts is None
        else check_attempts(options.max_attempts, spec.name),
        "idempotency_key": options.idempotency_key,
        "idempotency_ttl_ms": int(idem_ttl * 1000),
        "tick_ms": None if options.scheduled_at is None else int(options.scheduled_at.timestamp() * 1000),
        "priority": priority,
        "concurrency_key": options.concurrency_key,
        "expires_ms": 0 if options.expires is None else expiry_ms(options.expires, now, due_ms),
        "fresh_id": options.job_id is None,
    }


def expiry_ms(expires: object, now: float, due_ms: int) -> int:
    """When a job of ``expires=`` expires (ms since the epoch): a number of seconds or a
    timedelta from now, or an aware datetime; it must fall after the job is due."""
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            raise ConfigurationError("expires must be a time-zone-aware datetime, seconds or a timedelta")
        at = expires.timestamp()
    else:
        seconds = expires.total_seconds() if isinstance(expires, timedelta) else expires
        at = now + check_delay(seconds, "expires")
    at_ms = int(at * 1000)
    if at_ms <= max(due_ms, int(now * 1000)):
        raise ConfigurationError(
            f"expires={expires!r} is not after the job is due: it would never run; "
            "give a later expiry or no expires="
        )
    return at_ms


def build_jobs(
    spec: TaskSpec,
    calls: Sequence[tuple[Sequence[Any], dict[str, Any]]],
    options: Options,
    settings: Settings,
    *,
    now: float,
) -> tuple[str, list[NewJob]]:
    """The queue and the jobs of one enqueue call, every argument checked; ``now`` is one
    instant for the batch, so its jobs share a due time."""
    if options.job_id is not None and len(calls) > 1:
        raise ConfigurationError("job_id= names one job; it cannot be used with enqueue_many")
    if options.idempotency_key is not None and len(calls) > 1:
        raise ConfigurationError("idempotency_key= names one job; it cannot be used with enqueue_many")
    queue = check_name("queue", options.queue) if options.queue else spec.queue
    meta = check_meta(options.meta)
    limit = settings.max_payload_bytes
    payloads = [encode_payload(spec, args, kwargs, limit, meta) for args, kwargs in calls]
    if not payloads:
        return queue, []
    fields = job_fields(spec, options, settings.idempotency_ttl_s, now)
    if options.job_id:
        ids = [options.job_id]
    else:  # one job (every awaited enqueue): new_job_id costs less than a batch of one
        ids = [new_job_id()] if len(payloads) == 1 else new_job_ids(len(payloads))
    # By position: keyword arguments cost three times as much per job.
    rest = [fields[name] for name in _AFTER_PAYLOAD]
    return queue, [NewJob(i, spec.name, p, *rest) for i, p in zip(ids, payloads, strict=True)]


_AFTER_PAYLOAD = tuple(f.name for f in dataclasses.fields(NewJob))[3:]
"""NewJob's fields after (id, task, payload), in order."""
assert tuple(f.name for f in dataclasses.fields(NewJob))[:3] == ("id", "task", "payload")
