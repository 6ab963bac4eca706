"""Cron: schedules, their ticks in any time zone, and the leader-elected scheduler.

Exactly once per tick: whichever worker leads (a Redis lock per queue, with a random token
and a lease renewed three times per lease), every tick is enqueued through one script that
checks the leader's token (a deposed leader cannot enqueue) and moves the schedule's
last-fired tick forward only (``ZADD GT``), so no tick fires twice across a leader change
or clock skew.

After a leader dies, another takes over within one lease of its last renewal: a follower that
finds the lock taken reads its remaining time (``PTTL``) and sleeps until the lock expires,
never a whole poll interval past it, then fires the tick that became due meanwhile (per the
misfire policy), at once rather than at the next tick.

A schedule can be paused (held in Redis, under its queue's hash tag, so every scheduler
process sees it and it survives restarts): the leader counts its due ticks as done without
firing them and records them as skipped; resuming moves its last tick to the moment of the
resume, so it fires from the next tick on with no catch-up burst. Each fired tick, skipped
tick and "run now" is added to the schedule's recent runs (a capped list, best effort).

The schedules themselves (expressions, zones, ticks, misfire policies) are pure and live
in ``engine.core.schedule``; their names are re-exported here.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec
import structlog

from engine.broker import RedisError
from engine.broker.gateway import Fence, FenceRejected, Gateway, ScriptCode
from engine.core.backoff import reconnect_delay
from engine.core.clock import now_utc
from engine.core.partitions import base_queue
from engine.core.schedule import MISFIRE_POLICIES as MISFIRE_POLICIES
from engine.core.schedule import Schedule as Schedule
from engine.core.schedule import ScheduleAnnouncement as ScheduleAnnouncement
from engine.core.schedule import check_expression as check_expression
from engine.core.schedule import check_zone as check_zone
from engine.core.schedule import make_schedule as make_schedule
from engine.core.schedule import next_tick as next_tick
from engine.core.schedule import ticks_after as ticks_after
from engine.producer import Options, build_job

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = structlog.get_logger("engine.cron")

# A follower tries for the lock this long after the expiry PTTL announced: PTTL rounds to the
# millisecond and Redis expires a key only once its time is strictly past, so waking exactly
# on time could find it still there and cost a further sleep.
TAKEOVER_SLACK_S = 0.005
RUNS_KEPT = 20
"""Recent runs kept per schedule: what the dashboard shows, not a history (the job log is)."""


class CronRun(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of a schedule's recent runs, as stored in Redis."""

    kind: Literal["tick", "manual", "skipped"]
    at_ms: int
    """When it was recorded (the recorder's clock)."""
    job_id: str | None = None
    tick_ms: int | None = None


_run_decoder = msgspec.json.Decoder(CronRun)


def decode_runs(raws: list[str]) -> list[CronRun]:
    """The runs that decode (an entry of another version is left out, not an error)."""
    out = []
    for raw in raws:
        try:
            out.append(_run_decoder.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


async def record_run(gateway: Gateway, queue: str, schedule: str, run: CronRun) -> None:
    """Add ``run`` to the schedule's recent runs; a failure is logged, never raised: the job
    is enqueued (or the tick skipped) already, and the list only informs."""
    try:
        await gateway.record_cron_run(queue, schedule, msgspec.json.encode(run), RUNS_KEPT)
    except (RedisError, OSError) as exc:
        log.warning("cron: could not record a run", schedule=schedule, error=str(exc))


class Scheduler:
    """Runs in every worker (unless opted out); only the leader of a queue fires its ticks."""

    def __init__(self, engine: Runtime, worker_id: str, lease: float = 10.0) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.lease = lease
        self.token = f"{worker_id}|{uuid.uuid4().hex}"
        self.by_queue: dict[str, list[Schedule]] = {}
        self._place()
        self.leading: dict[str, float] = {}  # queue -> monotonic time the lease runs out
        self.fired = 0
        self.clock = engine.clock
        self.signals = engine.signals
        self._baseline = now_utc(self.clock)  # a schedule never fired before starts here
        self._log = log.bind(worker=worker_id)

    def _place(self) -> None:
        """Group the schedules by the queue they fire into; a schedule of a partitioned queue
        always fires into one partition (its name's), where its lock and last tick live."""
        self.by_queue = {}
        for schedule in self.engine.schedules.values():
            queue = self.engine.layout.route(schedule.queue, schedule.name)
            self.by_queue.setdefault(queue, []).append(replace(schedule, queue=queue))

    async def announce(self) -> None:
        gateway = self.engine.gateway
        mapping = {
            s.name: msgspec.json.encode(
                ScheduleAnnouncement(
                    expr=s.expr, tz=s.tz.key, queue=base_queue(s.queue), task=s.task.name, misfire=s.misfire
                )
            ).decode()
            for schedules in self.by_queue.values()
            for s in schedules
        }
        await gateway.announce_schedules(mapping)

    async def run(self) -> None:
        if not self.by_queue:
            return
        failures = 0
        try:
            await self.engine.ready()
            self._place()  # with the partition counts Redis records
            await self.announce()
            while True:
                try:
                    wake_at = await self._cycle()
                    failures = 0
                except (RedisError, OSError) as exc:
                    failures += 1
                    wake_at = self.clock.monotonic() + reconnect_delay(failures)
                    self._log.warning("scheduler: redis unavailable; retrying", error=str(exc))
                await self.clock.sleep(wake_at - self.clock.monotonic())
        finally:
            with anyio.CancelScope(shield=True):
                await self.release()

    async def run_once(self) -> float:
        """Elect, fire what is due; returns seconds until the next thing to do."""
        return max(0.0, await self._cycle() - self.clock.monotonic())

    async def _cycle(self) -> float:
        """Elect, fire what is due; returns the monotonic time of the next thing to do.

        A deadline rather than a delay: time that passes between working it out and going
        to sleep (a slow Redis, a test's clock moved meanwhile) shortens the sleep instead
        of pushing the next tick that much later.
        """
        wake_at = await self._elect()
        now = now_utc(self.clock)
        for queue, lease_end in list(self.leading.items()):
            # Read at every cycle, so a pause from any process holds from the next tick on.
            paused = await self.engine.gateway.cron_pauses(queue)
            for schedule in self.by_queue[queue]:
                if self.clock.monotonic() >= lease_end:
                    # The lease may have lapsed unrenewed: stop at once (fencing would refuse anyway).
                    self.leading.pop(queue, None)
                    self._log.warning("lost cron leadership: the lease ran out unrenewed", queue=queue)
                    break
                await self._fire_due(schedule, now, paused=schedule.name in paused)
                later, read_at = now_utc(self.clock), self.clock.monotonic()
                upcoming = next_tick(schedule.expr, schedule.tz, max(now, later))
                wake_at = min(wake_at, read_at + (upcoming - later).total_seconds())
        return wake_at

    async def _elect(self) -> float:
        """Renew the locks held, try for the others; returns the monotonic time of the next try.

        That is a third of the lease (when a leader renews), or sooner: the moment the first
        lock another scheduler holds runs out, so that a dead leader's successor acts on the
        expiry rather than at its next poll, up to a third of a lease later.
        """
        gateway = self.engine.gateway
        lease_ms = int(self.lease * 1000)
        wake_at = self.clock.monotonic() + self.lease / 3
        for queue in self.by_queue:
            key = gateway.keys.queue(queue).cron_leader
            started = self.clock.monotonic()
            if queue in self.leading:
                if await gateway.renew_lock(key, self.token, lease_ms):
                    self.leading[queue] = started + self.lease
                    continue
                self.leading.pop(queue)
                self._log.warning("lost cron leadership", queue=queue)
            acquired, remaining_ms = await gateway.acquire_lock(key, self.token, lease_ms)
            if acquired:
                self.leading[queue] = started + self.lease
                self._log.info("became cron leader", queue=queue)
                self.signals.scheduler_elected.emit(queue)
            elif remaining_ms == -2:
                wake_at = started  # expired between the two commands: free now
            elif remaining_ms >= 0:
                wake_at = min(wake_at, started + remaining_ms / 1000 + TAKEOVER_SLACK_S)
            # -1, a lock without expiry (set by hand), can only be polled for.
        return wake_at

    async def _fire_due(self, schedule: Schedule, now: datetime, *, paused: bool = False) -> None:
        gateway = self.engine.gateway
        last_ms = await gateway.cron_last_fired_ms(schedule.queue, schedule.name)
        last = self._baseline if last_ms is None else datetime.fromtimestamp(last_ms / 1000, tz=UTC)
        for tick in schedule.due(last, now):
            if paused:
                await self.skip(schedule, tick)
            elif not await self.fire(schedule, tick):
                return

    async def skip(self, schedule: Schedule, tick: datetime) -> None:
        """Count a tick of a paused schedule as done, unfired, and record it as skipped.

        Not fenced: a deposed leader can only move the last tick to one that was due while
        the schedule was paused, and a resume moves it to its own time, past any of those."""
        tick_ms = int(tick.timestamp() * 1000)
        if await self.engine.gateway.skip_cron_tick(schedule.queue, schedule.name, tick_ms):
            self._log.info("cron tick skipped: the schedule is paused", schedule=schedule.name)
            run = CronRun(kind="skipped", at_ms=int(self.clock.time() * 1000), tick_ms=tick_ms)
            await record_run(self.engine.gateway, schedule.queue, schedule.name, run)

    async def fire(self, schedule: Schedule, tick: datetime) -> bool:
        """Enqueue one tick (fenced); False when leadership was lost."""
        gateway = self.engine.gateway
        tick_ms = int(tick.timestamp() * 1000)
        options = Options(job_id=f"cron-{schedule.name}-{tick_ms}", scheduled_at=tick)
        job = build_job(
            schedule.task.spec,
            (),
            {},
            options,
            max_payload_bytes=self.engine.settings.max_payload_bytes,
            default_idempotency_ttl=self.engine.settings.idempotency_ttl_s,
            now=self.clock.time(),
        )
        try:
            await gateway.enqueue(schedule.queue, [job], fence=Fence(self.token, schedule.name, tick_ms))
        except FenceRejected as rejected:
            if rejected.reason is ScriptCode.FENCED:
                self.leading.pop(schedule.queue, None)
                self._log.warning("lost cron leadership; tick not fired", schedule=schedule.name)
                return False
            return True  # already fired (by this or another leader)
        self.fired += 1
        self._log.info("cron tick enqueued", schedule=schedule.name, tick=tick.isoformat(), job_id=job.id)
        run = CronRun(kind="tick", at_ms=int(self.clock.time() * 1000), job_id=job.id, tick_ms=tick_ms)
        await record_run(gateway, schedule.queue, schedule.name, run)
        self.signals.scheduler_fired.emit((schedule.name, tick))
        return True

    async def release(self) -> None:
        gateway = self.engine.gateway
        for queue in list(self.leading):
            with contextlib.suppress(RedisError, OSError):  # else the lease runs out on its own
                await gateway.renew_lock(gateway.keys.queue(queue).cron_leader, self.token, 0)
            self.leading.pop(queue, None)
