"""The bindings (see :mod:`~engine.broker.scripts.bindings`) of the scripts that run outside a
job's own path: an operator's acts on jobs and queues (cancel, delete, replay, purge), a
job's log lines, leases, flow control, and the job-log shipper's acknowledgements and
version checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.broker.scripts.bindings import publish_flag, script_code
from engine.broker.scripts.runner import Call
from engine.core.errors import ScriptCode

# -- admin ----------------------------------------------------------------------------------


def cancel(
    *,
    stream: str,
    delayed: str,
    stats: str,
    outbox: str,
    joblog_flag: str,
    waiting: str,
    cancels: str,
    job_prefix: str,
    job_id: str,
    now_ms: int,
    retention_ms: int,
    done_channel_prefix: str,
    cancel_channel: str,
    queue: str,
    sharded: bool,
) -> Call[ScriptCode]:
    """DONE, CANCEL_REQUESTED (running: its worker stops it), ALREADY_FINISHED or NO_SUCH_JOB.
    ``sharded``: publish with SPUBLISH, else PUBLISH."""
    keys = [stream, delayed, stats, outbox, joblog_flag, waiting, cancels]
    args = [job_prefix, job_id, now_ms, retention_ms, done_channel_prefix, cancel_channel, queue]
    args += [publish_flag(sharded)]
    return Call("cancel", keys, args, script_code)


def delete(
    *,
    stream: str,
    delayed: str,
    dlq: str,
    outbox: str,
    joblog_flag: str,
    waiting: str,
    job_prefix: str,
    job_id: str,
    queue: str,
) -> Call[ScriptCode]:
    """DONE, JOB_RUNNING (refused: cancel it first) or NO_SUCH_JOB."""
    keys = [stream, delayed, dlq, waiting, outbox, joblog_flag]
    return Call("delete", keys, [job_prefix, job_id, queue], script_code)


def replay(
    *,
    stream: str,
    dlq: str,
    stats: str,
    outbox: str,
    joblog_flag: str,
    waiting: str,
    job_prefix: str,
    job_id: str,
    now_ms: int,
    queue: str,
) -> Call[ScriptCode]:
    """DONE, NOT_FAILED (nothing done) or NO_SUCH_JOB (its data is gone)."""
    keys = [stream, dlq, stats, outbox, joblog_flag, waiting]
    return Call("replay", keys, [job_prefix, job_id, now_ms, queue], script_code)


def purge(
    *, dlq: str, outbox: str, joblog_flag: str, outbox_extra: str, job_prefix: str, batch: int, queue: str
) -> Call[int]:
    """Delete up to ``batch`` dead letters (oldest first) and their failed jobs; how many."""
    return Call("purge", [dlq, outbox, joblog_flag, outbox_extra], [job_prefix, batch, queue], int)


def log(
    *,
    logs: str,
    outbox: str,
    joblog_flag: str,
    logged: str,
    job_id: str,
    queue: str,
    now_ms: int,
    level: str,
    message: str,
    keep: int,
    line: str | bytes,
) -> Call[None]:
    """Append ``line`` (the JSON of at, level, message) to a job's log, keeping ``keep`` lines."""
    args = [job_id, queue, now_ms, level, message, keep, line]
    return Call("log", [logs, outbox, joblog_flag, logged], args, lambda _: None)


def lease(*, lock: str, token: str, lease_ms: int) -> Call[ScriptCode]:
    """Renew (``lease_ms`` > 0) or release (0) a lock held with ``token``: DONE or LOCK_NOT_HELD."""
    return Call("lease", [lock], [token, lease_ms], script_code)


def flow(
    *, flow: str, wake_channel: str, sharded: bool, notice: str, fields: Mapping[str, str]
) -> Call[dict[str, str]]:
    """Set (or with "" delete) fields of a queue's flow hash, announcing a change with
    ``notice`` on its wake channel; the fields' previous values ("" for unset)."""
    args: list[Any] = [wake_channel, publish_flag(sharded), notice]
    for field, value in fields.items():
        args += (field, value)
    names = list(fields)
    return Call("flow", [flow], args, lambda reply: dict(zip(names, map(str, reply), strict=True)))


# -- the job-log shipper's side ---------------------------------------------------------------


def ack(*, outbox: str, outbox_extra: str, group: str, entries: Sequence[tuple[str, int]]) -> Call[int]:
    """Acknowledge and delete committed outbox entries (entry id, events it holds beyond
    the first); how many were acknowledged."""
    args: list[Any] = [group]
    for pair in entries:
        args += pair
    return Call("ack", [outbox, outbox_extra], args, int)


def _versions(reply: Any) -> list[bool | None]:
    return [None if flag < 0 else flag == 1 for flag in reply]


def versions(
    *, outbox: str, waiting: str, job_prefix: str, jobs: Sequence[tuple[str, str | int]]
) -> Call[list[bool | None]]:
    """Per (job id, event version): True when the job has had a newer state event, False
    when not, None when its hash is gone."""
    args: list[Any] = [job_prefix]
    for pair in jobs:
        args += pair
    return Call("versions", [outbox, waiting], args, _versions)
