"""The one live scan: walk a queue's stream, delayed set and dead letters for its jobs."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.model import LIVE_STATUSES, JobInfo, Status
from engine.core.priority import lane_queue
from engine.inspector.cursors import InvalidCursor, decode_cursor, encode_cursor
from engine.inspector.jobs import dead_info, read_info

if TYPE_CHECKING:
    from engine.broker.gateway import Gateway
    from engine.runtime import Runtime

SCAN_BATCH = 200
SCAN_BUDGET = 5000
"""Entries a search without the job log examines per page before it returns what it has
(with a cursor to go on), so one request never walks a million-entry stream."""
MAX_QUEUE_JOBS = 1000

# Dead letters first: a failed job is what people search for most.
_SOURCES: tuple[tuple[str, frozenset[Status]], ...] = (
    ("dlq", frozenset({Status.FAILED})),
    ("delayed", frozenset({Status.DELAYED})),
    ("stream", frozenset({Status.WAITING, Status.ACTIVE})),
)
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)
_MAX_STREAM_PART = 2**64 - 1
# A delayed-set position is a list offset; JSON integers are exact up to 2**53.
_MAX_OFFSET = 2**53

Batch = list[tuple[Any, str, dict[str, str]]]
"""(position after this entry, job id, entry fields) of a few entries of one source."""


@dataclass
class LivePage:
    """A page of live jobs, the cursor of the next (None at the end), entries examined."""

    jobs: list[JobInfo]
    next_cursor: str | None
    scanned: int


def everything(info: JobInfo) -> bool:
    return True


async def scan_live(
    engine: Runtime,
    queues: Sequence[str],
    statuses: Sequence[str],
    match: Callable[[JobInfo], bool] = everything,
    *,
    limit: int,
    cursor: str | None = None,
    budget: int | None = SCAN_BUDGET,
) -> LivePage:
    """Walk the live lists of ``queues`` (dead letters newest first, delayed set soonest
    first, stream: waiting/active oldest first) and keep the jobs in ``statuses`` that
    ``match`` accepts; past ``budget`` entries examined (None: no limit) the page ends early.
    InvalidCursor when ``cursor`` is not the next_cursor of such a page. A partitioned queue
    is walked partition after partition."""
    gateway = await engine.ready()
    wanted = set(statuses)
    kinds = [kind for kind, statuses_of in _SOURCES if wanted & statuses_of]
    expanded = engine.layout.expand(queues)
    lanes = await gateway.reads.lanes(expanded) if "stream" in kinds else {}
    # A queue's priority lanes are walked in the order their jobs run (engine.core.priority).
    sources = [
        (name, kind) for kind in kinds for q in expanded for name in (lanes[q] if kind == "stream" else [q])
    ]
    index, position = _scan_position(decode_cursor(cursor, "scan"), [kind for _, kind in sources])
    jobs: list[JobInfo] = []
    scanned = 0
    while index < len(sources):
        q, kind = sources[index]
        batch = await read_batch(gateway, q, kind, position)
        if not batch:
            index, position = index + 1, None
            continue
        hashes = await gateway.job_hashes(q, [job_id or "-" for _, job_id, _ in batch])
        for (pos, job_id, fields), h in zip(batch, hashes, strict=True):
            scanned += 1
            position = pos
            if kind == "stream" and not _current(pos, h):
                continue
            info = _info(lane_queue(q), job_id, h, fields if kind == "dlq" else None)
            if info is None or str(info.status) not in wanted or not match(info):
                continue
            jobs.append(info)
            if len(jobs) >= limit:
                return LivePage(jobs, encode_cursor("scan", [index, position]), scanned)
        if budget is not None and scanned >= budget:
            return LivePage(jobs, encode_cursor("scan", [index, position]), scanned)
    return LivePage(jobs, None, scanned)


async def dead_matching(engine: Runtime, queue: str, match: Callable[[JobInfo], bool]) -> list[JobInfo]:
    """Every dead letter of ``queue`` (with a job id) that ``match`` accepts, read leniently."""
    gateway = await engine.ready()
    found: list[JobInfo] = []
    for partition in engine.layout.partitions(queue):
        position = None
        while batch := await read_batch(gateway, partition, "dlq", position):
            hashes = await gateway.job_hashes(partition, [job_id or "-" for _, job_id, _ in batch])
            for (pos, job_id, fields), h in zip(batch, hashes, strict=True):
                position = pos
                info = _info(partition, job_id, h, fields)
                if info is not None and info.id and match(info):
                    found.append(info)
    return found


async def queue_jobs(
    engine: Runtime, queue: str, status: str, limit: int = 50, cursor: str | None = None
) -> tuple[list[JobInfo], str | None]:
    """A page of a queue's jobs in one live status, from Redis; returns (jobs, next cursor).

    waiting and active come from the stream (oldest first), delayed from the delayed set
    (soonest first), failed from the dead-letter stream (newest first). Finished jobs are
    listed from the PostgreSQL history instead (``Engine.history``).
    """
    if status not in LIVE_STATUSES:
        raise ValueError(f"status must be one of {', '.join(LIVE_STATUSES)}, not {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_QUEUE_JOBS:
        raise ValueError(f"limit must be an integer from 1 to {MAX_QUEUE_JOBS}, not {limit!r}")
    page = await scan_live(engine, [queue], [status], limit=limit, cursor=cursor, budget=None)
    return page.jobs, page.next_cursor


def _scan_position(cursor: Any, kinds: Sequence[str]) -> tuple[int, Any]:
    """(source index, position in it) from a decoded scan cursor; InvalidCursor otherwise."""
    if cursor is None:
        return 0, None
    invalid = InvalidCursor("invalid cursor: pass the next_cursor of the previous page")
    if not isinstance(cursor, list) or len(cursor) != 2:
        raise invalid
    index, position = cursor
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(kinds):
        raise invalid
    if position is None or index == len(kinds):
        return index, position
    if kinds[index] == "delayed":
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < _MAX_OFFSET:
            raise invalid
    elif not (
        isinstance(position, str)
        and _STREAM_ID.fullmatch(position)
        and all(int(part) <= _MAX_STREAM_PART for part in position.split("-"))
    ):
        raise invalid
    return index, position


async def read_batch(gateway: Gateway, queue: str, kind: str, position: Any) -> Batch:
    """Up to SCAN_BATCH entries of one source ("dlq", "delayed", "stream") after ``position``."""
    reads = gateway.reads
    if kind == "delayed":
        offset = int(position or 0)
        ids = await reads.delayed_ids(queue, offset, SCAN_BATCH)
        return [(offset + i + 1, job_id, {}) for i, job_id in enumerate(ids)]
    if kind == "stream":
        entries = await reads.stream_entries(queue, position, SCAN_BATCH)
    else:
        entries = await reads.dead_entries(queue, position, SCAN_BATCH)
    return [(entry_id, (fields or {}).get("j", ""), fields or {}) for entry_id, fields in entries]


def _current(entry_id: str, h: dict[str, str]) -> bool:
    """Whether a stream entry is its job's waiting or running attempt: an acknowledged entry
    lingers until whole stream nodes of them go (scripts/finish.lua), and a retried job's
    earlier entry may linger beside its current one (``msg``, which a job that has been
    waiting somewhere other than its first entry has)."""
    return h.get("status") in _STREAM_STATUSES and h.get("msg", entry_id) == entry_id


_STREAM_STATUSES = frozenset({"waiting", "active"})


def _info(queue: str, job_id: str, h: dict[str, str], dead: dict[str, str] | None) -> JobInfo | None:
    if h:
        return read_info(job_id, queue, h)
    return None if dead is None else dead_info(queue, job_id, dead)
