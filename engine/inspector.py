"""Read-only views across the engine's state, for the CLI and the dashboard.

Nothing here changes state; the worker never depends on this module.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from engine.core.model import JobInfo, WorkerBeat
from engine.cron import ScheduleAnnouncement, check_zone, next_tick

if TYPE_CHECKING:
    from engine.client.app import Engine


@dataclass(frozen=True)
class CronRow:
    name: str
    expr: str
    tz: str
    queue: str
    misfire: str
    next_run: datetime | None
    last_run: datetime | None
    leader: str | None

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("next_run", "last_run"):
            row[key] = row[key].isoformat() if row[key] else None
        return row


async def cron_schedules(engine: Engine) -> list[CronRow]:
    """Every announced schedule with its next and last run and its queue's current leader."""
    gateway = await engine.ready()
    announced = await gateway.redis.hgetall(gateway.keys.schedules)
    rows: list[CronRow] = []
    now = datetime.now(UTC)
    for name in sorted(announced):
        try:
            ann = msgspec.json.decode(announced[name], type=ScheduleAnnouncement)
            upcoming: datetime | None = next_tick(ann.expr, check_zone(ann.tz, name), now)
        except (msgspec.DecodeError, ValueError):
            continue  # an announcement from an incompatible version: skip, do not crash
        qk = gateway.keys.queue(ann.queue)
        last = await gateway.redis.zscore(qk.cron_last, name)
        token = await gateway.redis.get(qk.cron_leader)
        rows.append(
            CronRow(
                name=name,
                expr=ann.expr,
                tz=ann.tz,
                queue=ann.queue,
                misfire=ann.misfire,
                next_run=upcoming,
                last_run=None if last is None else datetime.fromtimestamp(last / 1000, tz=UTC),
                leader=token.split("|", 1)[0] if token else None,
            )
        )
    return rows


LIVE_STATUSES = ("waiting", "active", "delayed", "failed")


async def queue_jobs(
    engine: Engine, queue: str, status: str, limit: int = 50, cursor: str | None = None
) -> tuple[list[JobInfo], str | None]:
    """A page of a queue's jobs in one live status, from Redis; returns (jobs, next cursor).

    waiting and active come from the stream (oldest first), delayed from the delayed set
    (soonest first), failed from the dead-letter stream (newest first). Finished jobs are
    listed from the PostgreSQL history instead (``Engine.history``).
    """
    if status not in LIVE_STATUSES:
        raise ValueError(f"status must be one of {', '.join(LIVE_STATUSES)}, not {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValueError(f"limit must be an integer from 1 to 1000, not {limit!r}")
    gateway = await engine.ready()
    qk = gateway.keys.queue(queue)
    if status == "delayed":
        offset = _int_cursor(cursor)
        ids = await gateway.redis.zrange(qk.delayed, offset, offset + limit - 1)
        more = len(ids) == limit
        next_cursor = str(offset + limit) if more else None
    elif status == "failed":
        start = "+" if cursor is None else f"({_entry_cursor(cursor)}"
        entries = await gateway.redis.xrevrange(qk.dlq, max=start, count=limit)
        ids = [fields.get("j", "") for _, fields in entries]
        next_cursor = entries[-1][0] if len(entries) == limit else None
    else:
        # The stream holds waiting and active entries (acknowledged ones are deleted).
        ids, next_cursor = [], None
        start = "-" if cursor is None else f"({_entry_cursor(cursor)}"
        while len(ids) < limit:
            entries = await gateway.redis.xrange(qk.stream, min=start, count=max(limit, 100))
            if not entries:
                next_cursor = None
                break
            hashes = await gateway.job_hashes(queue, [f.get("j") or "-" for _, f in entries])
            for (entry_id, fields), h in zip(entries, hashes, strict=True):
                if h.get("status") == status and fields.get("j"):
                    ids.append(fields["j"])
                    next_cursor = entry_id
                    if len(ids) == limit:
                        break
            start = f"({entries[-1][0]}"
        if len(ids) < limit:
            next_cursor = None
    hashes = await gateway.job_hashes(queue, [i or "-" for i in ids])
    jobs = [JobInfo.from_hash(i, queue, h) for i, h in zip(ids, hashes, strict=True) if h]
    return jobs, next_cursor


def _int_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise ValueError(f"invalid cursor {cursor!r}")
    return int(cursor)


def _entry_cursor(cursor: str) -> str:
    left, sep, right = cursor.partition("-")
    if not (left.isdigit() and sep and right.isdigit()):
        raise ValueError(f"invalid cursor {cursor!r}")
    return cursor


async def workers(engine: Engine, alive_within: float = 15.0) -> list[WorkerBeat]:
    """Workers that sent a heartbeat within ``alive_within`` seconds, newest first."""
    gateway = await engine.ready()
    out: list[WorkerBeat] = []
    now = time.time()
    for raw in (await gateway.redis.hgetall(gateway.keys.workers)).values():
        try:
            beat = msgspec.json.decode(raw, type=WorkerBeat)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if now - beat.seen_at <= alive_within:
            out.append(beat)
    return sorted(out, key=lambda b: b.started_at, reverse=True)


async def throughput(engine: Engine, queue: str, minutes: int = 60) -> list[tuple[int, int, int]]:
    """(minute start as epoch seconds, completed, failed) for the last ``minutes`` minutes."""
    gateway = await engine.ready()
    qk = gateway.keys.queue(queue)
    current = int(time.time() // 60)
    span = list(range(current - minutes + 1, current + 1))
    async with gateway.redis.pipeline(transaction=False) as pipe:
        for minute in span:
            pipe.hmget(qk.throughput(minute), "completed", "failed")
        rows = await pipe.execute()
    return [(m * 60, int(c or 0), int(f or 0)) for m, (c, f) in zip(span, rows, strict=True)]
