"""Read-only views across the engine's state, for the CLI and the dashboard.

Nothing here changes state; the worker never depends on this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from engine.cron import ScheduleAnnouncement, check_zone, next_tick

if TYPE_CHECKING:
    from engine.app import Engine


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
    gateway = await engine._ready()
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
