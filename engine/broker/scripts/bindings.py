"""One typed function per ``.lua`` script of a job's own path (enqueue, start, finish, bury,
renew, reclaim, promote; the others are in :mod:`~engine.broker.scripts.operations`): named
KEYS and ARGV in, a :class:`Call` out.

Each function mirrors its script's header (the KEYS first, then the ARGV, in order) and
decodes its reply into a typed value: status replies become :class:`ScriptCode`, a code
that is an error to every caller raises (a fenced enqueue's FENCED/FIRED:
:class:`FenceRejected`). Nothing here sends anything: :class:`Scripts` runs the calls,
one at a time or many in one round trip. Times are ms; "" stands for "unset" in ARGV.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode, script_error
from engine.core.keys import GROUP
from engine.core.priority import DEFAULT_PRIORITY
from engine.core.transitions import Outcome

_msgpack = msgspec.msgpack.Encoder().encode


def _text(value: object | None) -> object:
    return "" if value is None else value


def script_code(reply: Any) -> ScriptCode:
    return ScriptCode(int(reply))


def publish_flag(sharded: bool) -> str:
    """The scripts' publish flag: "1" SPUBLISH (sharded pub/sub), "0" PUBLISH."""
    return "1" if sharded else "0"


class StartRow(NamedTuple):
    """One entry in ``start.lua``'s reply: ``run`` False when it was skipped (cancelled,
    finished, or poison moved to the DLQ) or ``held`` by flow control (still pending), and
    then the fields after it are empty."""

    entry_id: str
    job_id: str
    run: bool
    task: str = ""
    payload: str = ""
    options: tuple[Any, ...] = ()  # attempts, timeout, max_attempts, tick, created
    held: bool = False
    expired: bool = False
    """Not started: its ``expires=`` passed (still pending: record it cancelled)."""
    lane: int = 0
    """Which of the streams read it came from (an index into ``lanes``; 0 otherwise)."""
    fresh: bool = False
    """Started as its entry, given with its fields, says (attempt 1): the fields after
    ``run`` are empty, its reader has them."""


class Throttle(NamedTuple):
    """What ``start.lua`` says of a queue with flow control (engine.core.flow): ``reason``
    ("paused", "concurrency", "rate") when that bound the call, else ""; ``wait_ms`` until
    the rate allows a start; ``allowance``: how many the call could start (-1: no bound)."""

    reason: str
    wait_ms: int
    allowance: int
    key_held: int = 0
    """Entries held because their concurrency key's slots were all taken."""


class StartRows(list[StartRow]):
    """``start.lua``'s rows, and its :class:`Throttle` when the queue has flow control."""

    throttle: Throttle | None = None


class Reclaimed(NamedTuple):
    """One entry ``reclaim.lua`` took over: job id "" when the entry has none."""

    entry_id: str
    job_id: str
    deliveries: int


class Promoted(NamedTuple):
    moved: int
    next_due_ms: int | None  # None: no delayed job left


# -- producing ------------------------------------------------------------------------------


def _written(reply: Any) -> list[tuple[str, bool]]:
    if not isinstance(reply, list):
        code = script_code(reply)
        raise script_error(code) or ValueError(f"enqueue.lua replied {code!r}")
    return [(reply[i], reply[i + 1] == 1) for i in range(0, len(reply), 2)]


def enqueue(
    *,
    stream: str,
    delayed: str,
    stats: str,
    outbox: str,
    joblog_flag: str,
    cron_leader: str,
    cron_last: str,
    outbox_extra: str,
    flow: str,
    lanes: str,
    waiting: str,
    job_prefix: str,
    idem_prefix: str,
    now_ms: int,
    wake_channel: str,
    queue: str,
    fence_token: str = "",
    fence_schedule: str = "",
    fence_tick_ms: int = 0,
    task: str,
    due_ms: int = 0,
    timeout: float | None = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
    idempotency_ttl_ms: int = 0,
    tick_ms: int | None = None,
    priority: int = DEFAULT_PRIORITY,
    expires_ms: int = 0,
    concurrency_key: str | None = None,
    group: str = GROUP,
    sharded: bool,
    jobs: Sequence[tuple[str, bytes | str]],
    fresh_ids: bool = False,
) -> Call[list[tuple[str, bool]]]:
    """Write jobs (id, payload) of one task and options; (job id, added) per job, the id
    being the existing job's when its idempotency key or id was taken (``fresh_ids``: the
    ids were just made, no job can have them, so none is looked for). With a fence token,
    :class:`FenceRejected` (FENCED, FIRED) and nothing written unless the caller holds the
    leader lock and the tick is newer than the schedule's last. ``sharded``: publish the
    wake-up with SPUBLISH (Redis >= 7.0, Valkey), else PUBLISH."""
    keys = [stream, delayed, stats, outbox, joblog_flag, cron_leader, cron_last, outbox_extra, flow, lanes]
    keys.append(waiting)
    args: list[Any] = [job_prefix, idem_prefix, now_ms, wake_channel, queue]
    args += [fence_token, fence_schedule, fence_tick_ms, task, due_ms]
    args += ["" if timeout is None else repr(timeout), _text(max_attempts), idempotency_key or ""]
    args += [idempotency_ttl_ms, _text(tick_ms), publish_flag(sharded)]
    args += ["" if priority == DEFAULT_PRIORITY else priority, expires_ms or "", group, concurrency_key or ""]
    # One argument for the batch: a thousand jobs as two thousand arguments cost the producer
    # a microsecond per job in the client's command packing. Payloads go as MessagePack
    # strings (they are JSON, so UTF-8): the scripts' cmsgpack reads no bin type.
    packed: list[str] = []
    for job_id, payload in jobs:
        packed += (job_id, payload.decode() if isinstance(payload, bytes) else payload)
    args += [_msgpack(packed), "0" if fresh_ids else "1"]
    return Call("enqueue", keys, args, _written)


# -- delivery -------------------------------------------------------------------------------


# How many values a row of start.lua's (flat) reply has, by its code; 3 for the others.
_ROW_LENGTH = {1: 11, 2: 7, 4: 5, 6: 9}


def _fresh_row(entry_id: str, job_id: str, row: list[Any]) -> StartRow:
    """A fresh job start.lua read and started (``row``: lane, task, payload, timeout,
    max_attempts, tick, None when unset): attempt 1, created when its entry was (see
    enqueue.lua)."""
    lane, task, payload, timeout, max_attempts, tick = row
    options = (1, timeout or "", max_attempts or "", tick or "", entry_id.partition("-")[0])
    return StartRow(entry_id, job_id, True, task, payload, options, False, False, int(lane))


def _start_rows(reply: Any) -> StartRows:
    rows = StartRows()
    i, end = 0, len(reply)
    while i < end:
        entry_id, job_id, code = reply[i], reply[i + 1], reply[i + 2]
        if code == 6:
            rows.append(_fresh_row(entry_id, job_id, reply[i + 3 : i + 9]))
        elif code == 1:
            row = reply[i : i + 11]
            rows.append(StartRow(entry_id, job_id, True, row[3], row[4], tuple(row[5:10]), lane=int(row[10])))
        elif code == 2:
            reason, wait_ms, allowance, key_held = reply[i + 3 : i + 7]
            rows.throttle = Throttle(str(reason), int(wait_ms), int(allowance), int(key_held))
        elif code == 4:
            rows.append(StartRow(entry_id, job_id, False, reply[i + 3], expired=True, lane=int(reply[i + 4])))
        elif code == 5:
            rows.append(StartRow(entry_id, job_id, True, fresh=True))
        else:
            rows.append(StartRow(entry_id, job_id, False, held=code == 3))
        i += _ROW_LENGTH.get(code, 3)
    return rows


def start(
    *,
    stream: str,
    dlq: str,
    flow: str,
    running: str,
    rate: str,
    waiting: str,
    joblog_flag: str,
    job_prefix: str,
    group: str = GROUP,
    lease_ms: int,
    worker: str,
    entries: Sequence[tuple[str, str] | tuple[str, str, Sequence[str]]] = (),
    read: int | None = None,
    lanes: Sequence[str] = (),
) -> Call[StartRows]:
    """Mark entries (entry id, job id) of ``stream`` active, or with ``read``, up to that
    many new ones the script reads itself (no blocking), as far as the queue's flow control
    allows: from ``stream``, or from each of ``lanes`` in turn (a queue's priority lanes'
    streams, first to last; rows say which). An entry may come with its fields as read
    (flat: name, value, ...): a fresh job's row is then short (``fresh``)."""
    args: list[Any] = [job_prefix, group, lease_ms, worker]
    if read is not None:
        args += ("read", read)
    else:
        for entry in entries:
            fields = entry[2] if len(entry) == 3 else ()
            args += (entry[0], entry[1], len(fields), *fields)
    keys = [stream, dlq, flow, running, rate, waiting, joblog_flag, *lanes]
    return Call("start", keys, args, _start_rows)


def finish(
    *,
    stream: str,
    delayed: str,
    dlq: str,
    stats: str,
    outbox: str,
    joblog_flag: str,
    throughput: str,
    outbox_extra: str,
    running: str,
    waiters: str,
    cancels: str,
    logged: str,
    job_prefix: str,
    group: str = GROUP,
    now_ms: int,
    completed_retention_ms: int,
    failed_retention_ms: int,
    done_channel_prefix: str,
    wake_channel: str,
    queue: str,
    sharded: bool,
    outcomes: Sequence[Outcome],
) -> Call[list[bool]]:
    """Record outcomes and acknowledge their entries; per outcome, whether it was recorded
    (False: its entry was no longer pending, another worker's outcome won). ``sharded``:
    publish with SPUBLISH, else PUBLISH."""
    keys = [stream, delayed, dlq, stats, outbox, joblog_flag, throughput, outbox_extra, running, waiters]
    keys += [cancels, logged]
    args = [job_prefix, group, now_ms, completed_retention_ms, failed_retention_ms]
    packed = _msgpack([value for outcome in outcomes for value in outcome.argv()])
    args += [done_channel_prefix, wake_channel, queue, publish_flag(sharded), packed]
    return Call("finish", keys, args, lambda reply: [flag == 1 for flag in reply])


def bury(
    *,
    stream: str,
    dlq: str,
    stats: str,
    waiting: str,
    job_prefix: str,
    group: str = GROUP,
    entry_id: str,
    job_id: str,
    reason: str,
) -> Call[ScriptCode]:
    """Acknowledge an entry and leave a dead letter with ``reason``: DONE or NOT_PENDING."""
    return Call(
        "bury", [stream, dlq, stats, waiting], [job_prefix, group, entry_id, job_id, reason], script_code
    )


def renew(
    *, stream: str, running: str, group: str = GROUP, consumer: str, lease_ms: int, entry_ids: Sequence[str]
) -> Call[list[str]]:
    """Reset the idle time of a consumer's pending entries (and the deadline of the
    concurrency slots they hold); the ids it no longer holds."""
    return Call("renew", [stream, running], [group, consumer, lease_ms, *entry_ids], list)


def _reclaimed(flat: Any) -> list[Reclaimed]:
    return [Reclaimed(flat[i], flat[i + 1], int(flat[i + 2])) for i in range(0, len(flat), 3)]


def reclaim(
    *, stream: str, stats: str, group: str = GROUP, consumer: str, min_idle_ms: int, count: int
) -> Call[list[Reclaimed]]:
    """Take over up to ``count`` entries idle for longer than ``min_idle_ms``."""
    return Call("reclaim", [stream, stats], [group, consumer, min_idle_ms, count], _reclaimed)


def _promoted(reply: Any) -> Promoted:
    moved, next_due = int(reply[0]), int(reply[1])
    return Promoted(moved, None if next_due < 0 else next_due)


def promote(*, delayed: str, stream: str, job_prefix: str, now_ms: int, limit: int) -> Call[Promoted]:
    """Move up to ``limit`` due delayed jobs back to their stream."""
    return Call("promote", [delayed, stream], [job_prefix, now_ms, limit], _promoted)
