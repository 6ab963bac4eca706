"""What runs the queues: live workers (their heartbeats) and cron schedules."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from engine.core.clock import now_utc
from engine.core.model import WorkerBeat
from engine.core.schedule import ScheduleAnnouncement, check_zone, next_tick

if TYPE_CHECKING:
    from engine.runtime import Runtime

ALIVE_WITHIN_S = 15.0
"""A worker whose last heartbeat is older than this is taken for dead (it beats every few
seconds)."""


async def workers(engine: Runtime, alive_within: float = ALIVE_WITHIN_S) -> list[WorkerBeat]:
    """Workers that sent a heartbeat within ``alive_within`` seconds, newest first."""
    gateway = await engine.ready()
    out: list[WorkerBeat] = []
    now = engine.clock.time()
    # Only the workers the zset says were seen in the window: a dead one costs no read.
    for raw in (await gateway.beats(since=now - alive_within)).values():
        try:
            beat = msgspec.json.decode(raw, type=WorkerBeat)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if now - beat.seen_at <= alive_within:
            out.append(beat)
    return sorted(out, key=lambda b: b.started_at, reverse=True)


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


async def cron_schedules(engine: Runtime) -> list[CronRow]:
    """Every announced schedule with its next and last run and its queue's current leader."""
    gateway = await engine.ready()
    announced = await gateway.reads.schedule_announcements()
    rows: list[CronRow] = []
    now = now_utc(engine.clock)
    for name in sorted(announced):
        try:
            ann = msgspec.json.decode(announced[name], type=ScheduleAnnouncement)
            upcoming: datetime | None = next_tick(ann.expr, check_zone(ann.tz, name), now)
        except (msgspec.DecodeError, ValueError):
            continue  # an announcement from an incompatible version: skip, do not crash
        last, token = await gateway.reads.cron_state(ann.queue, name)
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
