"""What the broker's state transitions take and give: NewJob, Fence, Started, Outcome, Retention.

Pure values: the broker (``engine.broker``) turns them into script arguments and back, the
producer builds :class:`NewJob`, the worker runs :class:`Started` and records :class:`Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.core.limits import MAX_ATTEMPTS, MAX_EPOCH_MS, MAX_TIMEOUT_S
from engine.core.priority import DEFAULT_PRIORITY


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
    priority: int = DEFAULT_PRIORITY
    expires_ms: int = 0  # 0: never
    concurrency_key: str | None = None
    fresh_id: bool = False
    """The id was made by the producer (:func:`engine.producer.new_job_id`): 80 random bits
    after the time, no other job can have it, so ``enqueue.lua`` does not look for one."""

    def shared(
        self,
    ) -> tuple[str, int, float | None, int | None, str | None, int, int | None, int, int, str | None, bool]:
        """What ``enqueue.lua`` takes once per batch: jobs sharing it go in one call."""
        return (
            self.task,
            self.due_ms,
            self.timeout,
            self.max_attempts,
            self.idempotency_key,
            self.idempotency_ttl_ms,
            self.tick_ms,
            self.priority,
            self.expires_ms,
            self.concurrency_key,
            self.fresh_id,
        )


@dataclass(frozen=True, slots=True)
class Fence:
    """A cron enqueue's guard: the leader's lock token and the tick being fired."""

    token: str
    schedule: str
    tick_ms: int


class Confirmation(Protocol):
    """What a worker waits on until ``start.lua`` answered for a job (an ``anyio.Event``;
    core names only its shape, so it stays free of an event loop library)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


@dataclass(slots=True)
class Started:
    """An entry a worker read and ``start.lua`` marked active (or, with ``confirmed`` set,
    is about to: a fresh job run straight from its entry, see ``runnable_entry``)."""

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
    confirmed: Confirmation | None = None
    """Set once ``start.lua`` answered for this job; until then its outcome must wait."""
    dropped: bool = False
    """``start.lua`` refused it (cancelled meanwhile, or poison): no outcome is recorded."""
    deliveries: int = 1
    """Times its entry was delivered: more than once means its workers died running it."""
    problem: str | None = None
    """Why it cannot run (options read back from Redis that are malformed or out of
    bounds); the executor dead-letters it with this reason."""
    expired: bool = False
    """Its ``expires=`` passed before it started: the executor records it cancelled."""

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
        confirmed: Confirmation | None = None,
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
            False,  # dropped, then deliveries: by position, as keywords cost per job started
            deliveries,
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
    task: str = ""  # for the per-task counters (stats "t:<task>:<kind>")

    def argv(self) -> list[Any]:
        return [
            self.entry_id,
            self.job_id,
            self.kind,
            self.value,
            self.traceback,
            self.due_ms,
            self.ran_ms,
            self.task,
        ]


@dataclass
class Retention:
    """How long finished jobs' hashes stay in Redis, in ms, as the scripts take it."""

    completed_ms: int = 24 * 3600 * 1000
    failed_ms: int = 0  # 0 = kept until purged
