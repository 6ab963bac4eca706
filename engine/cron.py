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

Ticks follow the wall clock of the schedule's time zone. A tick that falls in a skipped
hour (spring forward) fires once, shifted forward by the gap (PEP 495, fold=0); a tick in a
repeated hour (fall back) fires once, at its first occurrence.

Misfires (ticks missed while no scheduler ran), per schedule:
- ``"latest"`` (default): fire the most recent missed tick once;
- ``"skip"``: fire nothing missed, wait for the next tick;
- ``"all"``: fire every missed tick within ``catch_up`` seconds, oldest first.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import msgspec
import structlog
from croniter import croniter

from engine.broker import RedisError
from engine.broker.gateway import Fence, FenceRejected
from engine.core.backoff import reconnect_delay
from engine.core.clock import now_utc
from engine.core.errors import ConfigurationError
from engine.producer import Options, build_job

if TYPE_CHECKING:
    from engine.client.app import Engine, Task

log = structlog.get_logger("engine.cron")

MISFIRE_POLICIES = ("latest", "skip", "all")
# A tick fired this late still counts as on time under the "skip" policy.
ON_TIME_S = 1.0
# Never enqueue more than this many missed ticks in one go under "all".
MAX_CATCH_UP_TICKS = 1000
# A follower tries for the lock this long after the expiry PTTL announced: PTTL rounds to the
# millisecond and Redis expires a key only once its time is strictly past, so waking exactly
# on time could find it still there and cost a further sleep.
TAKEOVER_SLACK_S = 0.005


def check_expression(expr: str, what: str) -> str:
    if not isinstance(expr, str) or len(expr.split()) not in (5, 6) or not croniter.is_valid(expr):
        raise ConfigurationError(
            f"{what}: invalid cron expression {expr!r}; use 5 fields (minute hour day month weekday) "
            "or 6 (the 6th is seconds), e.g. '0 0 1 * *'"
        )
    return expr


def check_zone(tz: str, what: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"{what}: unknown time zone {tz!r} (use an IANA name like 'Asia/Jakarta')"
        ) from None


def ticks_after(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Ticks strictly after ``after`` (aware), as aware UTC datetimes, strictly increasing."""
    wall = after.astimezone(tz).replace(tzinfo=None)
    it = croniter(expr, wall)
    previous = after.astimezone(UTC)
    while True:
        candidate = it.get_next(datetime).replace(tzinfo=tz, fold=0).astimezone(UTC)
        # Two wall times can map to one instant around a DST change: keep the first only.
        if candidate > previous:
            previous = candidate
            yield candidate


def next_tick(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    return next(ticks_after(expr, tz, after))


@dataclass(frozen=True)
class Schedule:
    name: str
    expr: str
    tz: ZoneInfo
    queue: str
    task: Task[Any]
    misfire: str = "latest"
    catch_up: float = 3600.0

    def due(self, last: datetime, now: datetime) -> list[datetime]:
        """The ticks to fire now, given the last fired tick, per the misfire policy."""
        missed: list[datetime] = []
        for tick in ticks_after(self.expr, self.tz, last):
            if tick > now:
                break
            missed.append(tick)
            if self.misfire != "all" and len(missed) > 1:
                missed.pop(0)  # only the latest matters
            elif len(missed) > MAX_CATCH_UP_TICKS:
                missed.pop(0)
        if not missed:
            return []
        if self.misfire == "latest":
            return missed[-1:]
        if self.misfire == "skip":
            return missed[-1:] if (now - missed[-1]).total_seconds() <= ON_TIME_S else []
        horizon = now - timedelta(seconds=self.catch_up)
        return [t for t in missed if t >= horizon]


class ScheduleAnnouncement(msgspec.Struct):
    expr: str
    tz: str
    queue: str
    task: str
    misfire: str


def make_schedule(
    engine: Engine, task: Task[Any], expr: str, tz: str, misfire: str, catch_up: float
) -> Schedule:
    what = f"cron {task.name!r}"
    if misfire not in MISFIRE_POLICIES:
        raise ConfigurationError(
            f"{what}: misfire must be one of {', '.join(MISFIRE_POLICIES)}, not {misfire!r}"
        )
    if not (isinstance(catch_up, int | float) and math.isfinite(catch_up) and catch_up > 0):
        raise ConfigurationError(f"{what}: catch_up must be a number of seconds > 0, not {catch_up!r}")
    if task.spec.signature is not None:
        try:
            task.spec.signature.bind()
        except TypeError:
            raise ConfigurationError(
                f"{what}: a cron task takes only the context (ctx); it gets no other arguments"
            ) from None
    return Schedule(
        name=task.name,
        expr=check_expression(expr, what),
        tz=check_zone(tz, what),
        queue=task.queue,
        task=task,
        misfire=misfire,
        catch_up=float(catch_up),
    )


class Scheduler:
    """Runs in every worker (unless opted out); only the leader of a queue fires its ticks."""

    def __init__(self, engine: Engine, worker_id: str, lease: float = 10.0) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.lease = lease
        self.token = f"{worker_id}|{uuid.uuid4().hex}"
        self.by_queue: dict[str, list[Schedule]] = {}
        for schedule in engine.schedules.values():
            self.by_queue.setdefault(schedule.queue, []).append(schedule)
        self.leading: dict[str, float] = {}  # queue -> monotonic time the lease runs out
        self.fired = 0
        self.clock = engine.clock
        self.signals = engine.signals
        self._baseline = now_utc(self.clock)  # a schedule never fired before starts here
        self._log = log.bind(worker=worker_id)

    async def announce(self) -> None:
        gateway = self.engine.gateway
        mapping = {
            s.name: msgspec.json.encode(
                ScheduleAnnouncement(
                    expr=s.expr, tz=s.tz.key, queue=s.queue, task=s.task.name, misfire=s.misfire
                )
            ).decode()
            for schedules in self.by_queue.values()
            for s in schedules
        }
        if mapping:
            await gateway.redis.hset(gateway.keys.schedules, mapping=mapping)

    async def run(self) -> None:
        if not self.by_queue:
            return
        failures = 0
        try:
            await self.announce()
            while True:
                try:
                    wake = await self.run_once()
                    failures = 0
                except (RedisError, OSError) as exc:
                    failures += 1
                    wake = reconnect_delay(failures)
                    self._log.warning("scheduler: redis unavailable; retrying", error=str(exc))
                await self.clock.sleep(wake)
        finally:
            with anyio.CancelScope(shield=True):
                await self.release()

    async def run_once(self) -> float:
        """Elect, fire what is due; returns seconds until the next thing to do."""
        wake = await self._elect()
        now = now_utc(self.clock)
        for queue, lease_end in list(self.leading.items()):
            for schedule in self.by_queue[queue]:
                if self.clock.monotonic() >= lease_end:
                    # The lease may have lapsed unrenewed: stop at once (fencing would refuse anyway).
                    self.leading.pop(queue, None)
                    break
                await self._fire_due(schedule, now)
                later = now_utc(self.clock)
                upcoming = next_tick(schedule.expr, schedule.tz, max(now, later))
                wake = min(wake, (upcoming - later).total_seconds())
        return max(0.0, wake)

    async def _elect(self) -> float:
        """Renew the locks held, try for the others; returns seconds until the next try.

        That is a third of the lease (when a leader renews), or sooner: the moment the first
        lock another scheduler holds runs out, so that a dead leader's successor acts on the
        expiry rather than at its next poll, up to a third of a lease later.
        """
        gateway = self.engine.gateway
        lease_ms = int(self.lease * 1000)
        wake = self.lease / 3
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
                wake = 0.0  # expired between the two commands: free now
            elif remaining_ms >= 0:
                wake = min(wake, remaining_ms / 1000 + TAKEOVER_SLACK_S)
            # -1, a lock without expiry (set by hand), can only be polled for.
        return wake

    async def _fire_due(self, schedule: Schedule, now: datetime) -> None:
        gateway = self.engine.gateway
        qk = gateway.keys.queue(schedule.queue)
        score = await gateway.redis.zscore(qk.cron_last, schedule.name)
        last = self._baseline if score is None else datetime.fromtimestamp(score / 1000, tz=UTC)
        for tick in schedule.due(last, now):
            if not await self.fire(schedule, tick):
                return

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
            max_payload_bytes=self.engine.max_payload_bytes,
            default_idempotency_ttl=self.engine.idempotency_ttl,
            now=self.clock.time(),
        )
        try:
            await gateway.enqueue(schedule.queue, [job], fence=Fence(self.token, schedule.name, tick_ms))
        except FenceRejected as rejected:
            if rejected.reason == "fenced":
                self.leading.pop(schedule.queue, None)
                self._log.warning("lost cron leadership; tick not fired", schedule=schedule.name)
                return False
            return True  # already fired (by this or another leader)
        self.fired += 1
        self._log.info("cron tick enqueued", schedule=schedule.name, tick=tick.isoformat(), job_id=job.id)
        self.signals.scheduler_fired.emit((schedule.name, tick))
        return True

    async def release(self) -> None:
        gateway = self.engine.gateway
        for queue in list(self.leading):
            with contextlib.suppress(RedisError, OSError):  # else the lease runs out on its own
                await gateway.renew_lock(gateway.keys.queue(queue).cron_leader, self.token, 0)
            self.leading.pop(queue, None)
