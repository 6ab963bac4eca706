"""Operating cron schedules: pause, resume, run now and their recent runs
(:class:`CronControl`, a part of :class:`~engine.client.app.Engine`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from engine.core.clock import Clock
from engine.core.errors import ConfigurationError
from engine.core.keys import check_name
from engine.core.partitions import Layout
from engine.core.schedule import ScheduleAnnouncement
from engine.cron import RUNS_KEPT, CronRun, Schedule, decode_runs, record_run

if TYPE_CHECKING:
    from engine.broker.gateway import Gateway
    from engine.client.handle import Job
    from engine.client.tasks import NamedCall


@dataclass(frozen=True)
class ScheduleTarget:
    """Where a schedule fires: the task, its queue, and the partition its state lives in."""

    name: str
    task: str
    queue: str
    partition: str


class CronControl:
    """``app.pause_schedule(name)``, ``resume_schedule``, ``is_schedule_paused``,
    ``run_schedule`` and ``schedule_runs``; the state is in Redis, seen by every process."""

    schedules: dict[str, Schedule]
    layout: Layout
    clock: Clock

    if TYPE_CHECKING:

        async def ready(self) -> Gateway: ...

        def with_options(self, task_name: str, /, **options: Any) -> NamedCall: ...

    async def pause_schedule(self, name: str) -> None:
        """Skip the schedule's ticks from its next one on, on whichever scheduler leads, until
        :meth:`resume_schedule`: the ticks are recorded as skipped, nothing is enqueued.
        Held in Redis: survives restarts of every process."""
        gateway, target = await self._target(name)
        await gateway.pause_cron(target.partition, target.name, self._now_ms())

    async def resume_schedule(self, name: str) -> None:
        """Fire the schedule again from its next tick after now; the ticks skipped while it
        was paused are not caught up."""
        gateway, target = await self._target(name)
        await gateway.resume_cron(target.partition, target.name, self._now_ms())

    async def is_schedule_paused(self, name: str) -> bool:
        gateway, target = await self._target(name)
        return target.name in await gateway.cron_pauses(target.partition)

    async def run_schedule(self, name: str) -> Job[Any]:
        """Enqueue the schedule's task once, now, whether it is paused or not. Not a tick:
        the scheduler's next tick fires as planned (never skipped, never repeated)."""
        gateway, target = await self._target(name)
        now = datetime.fromtimestamp(self.clock.time(), tz=UTC)
        stamp = int(now.timestamp() * 1000)
        # A fresh id each time (a tick's is cron-<name>-<tick ms>): two clicks are two runs.
        job_id = f"cron-{target.name}-now-{stamp}-{secrets.token_hex(3)}"
        call = self.with_options(
            target.task, queue=target.queue, partition_key=target.name, job_id=job_id, scheduled_at=now
        )
        job = await call.enqueue()
        await record_run(
            gateway, target.partition, target.name, CronRun(kind="manual", at_ms=stamp, job_id=job.id)
        )
        return job

    async def schedule_runs(self, name: str, limit: int = 10) -> list[CronRun]:
        """The schedule's recent runs (fired ticks, runs now, skipped ticks), newest first."""
        gateway, target = await self._target(name)
        return decode_runs(await gateway.cron_runs(target.partition, target.name, min(limit, RUNS_KEPT)))

    async def schedule_target(self, name: str) -> ScheduleTarget:
        """Where the schedule ``name`` fires: this app's, or one a worker announced;
        ConfigurationError naming the known ones otherwise."""
        return (await self._target(name))[1]

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    async def _target(self, name: str) -> tuple[Gateway, ScheduleTarget]:
        check_name("schedule", name)
        gateway = await self.ready()
        local = self.schedules.get(name)
        if local is not None:
            task, queue = local.task.name, local.queue
        else:
            announced = await gateway.reads.schedule_announcements()
            raw = announced.get(name)
            try:
                ann = None if raw is None else msgspec.json.decode(raw, type=ScheduleAnnouncement)
            except (msgspec.DecodeError, msgspec.ValidationError):
                ann = None
            if ann is None:
                known = ", ".join(sorted(set(self.schedules) | set(announced))) or "none yet"
                raise ConfigurationError(f"unknown schedule {name!r} (known: {known})")
            task, queue = ann.task, ann.queue
        # Where the scheduler keeps its lock and last tick (engine.cron.Scheduler._place).
        return gateway, ScheduleTarget(name, task, queue, self.layout.route(queue, name))
