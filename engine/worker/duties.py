"""A worker's background duties, one small class each, every one with ``run_once()``.

- :class:`Promoter` moves due delayed jobs (retries, ``delay=``) back to their streams.
- :class:`LeaseKeeper` renews the leases of this worker's in-flight entries.
- :class:`Reclaimer` takes over entries whose lease lapsed (their worker died).
- :class:`Lanes` keeps what the worker knows of its queues' priority lanes fresh.
- :class:`Listener` turns pub/sub messages into wake-ups and cancel requests.
- :class:`Heartbeat` publishes this worker's :class:`WorkerBeat`.

Each survives Redis errors: it logs, backs off and tries again; none of them ever stops the
worker. Every wait of theirs is on the engine's clock, so a test's fake clock drives them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec
import structlog

from engine.broker import RedisError
from engine.broker.gateway import Gateway
from engine.core import flow, priority
from engine.core.backoff import reconnect_delay
from engine.core.clock import Clock
from engine.core.model import WorkerBeat
from engine.core.priority import lane_queue
from engine.worker.loop import until

log = structlog.get_logger("engine.worker")

# Pub/sub can drop a message across a reconnect; the promoter re-checks at least this often
# so a missed wake-up delays a job by at most this much.
PROMOTE_SAFETY_S = 10.0
PROMOTE_BATCH = 1000


class Promoter:
    """Moves due delayed jobs back to their streams, woken early by pub/sub (``poke``)."""

    def __init__(self, gateway: Gateway, queues: Sequence[str], clock: Clock) -> None:
        self.gateway = gateway
        self.queues = list(queues)
        self.clock = clock
        self.wake = anyio.Event()

    def poke(self) -> None:
        self.wake.set()

    async def run_once(self) -> int | None:
        """Promote everything due; returns the next due time (ms since the epoch) or None."""
        next_due: int | None = None
        queues = self.queues
        while queues:
            backlogged = []
            for queue, (moved, due) in (await self.gateway.promote(queues, PROMOTE_BATCH)).items():
                if moved >= PROMOTE_BATCH:  # a backlog: drain it before sleeping
                    backlogged.append(queue)
                elif due is not None and (next_due is None or due < next_due):
                    next_due = due
            queues = backlogged
        return next_due

    async def run(self, worker_id: str) -> None:
        failures = 0
        while True:
            self.wake = anyio.Event()
            try:
                next_due = await self.run_once()
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("promoter: redis unavailable; retrying", worker=worker_id, error=str(exc))
                await self.clock.sleep(reconnect_delay(failures))
                continue
            except Exception:
                failures += 1
                log.exception("promoter: failed unexpectedly; retrying", worker=worker_id)
                await self.clock.sleep(reconnect_delay(failures))
                continue
            wait = PROMOTE_SAFETY_S
            if next_due is not None:
                wait = min(wait, max(0.0, next_due / 1000 - self.clock.time()))
            await until(self.wake, wait, self.clock)


class LeaseKeeper:
    """Keeps a live worker's jobs from being reclaimed, however long they run."""

    def __init__(
        self, gateway: Gateway, worker_id: str, inflight: dict[str, set[str]], interval: float
    ) -> None:
        self.gateway = gateway
        self.worker_id = worker_id
        self.inflight = inflight
        self.interval = interval
        self.lost = 0

    async def run_once(self) -> float:
        snapshot = {queue: sorted(ids) for queue, ids in self.inflight.items() if ids}
        for queue, entry in await self.gateway.renew(self.worker_id, snapshot):
            # Another worker took it over (this one stalled past the visibility timeout):
            # both may finish it, and the first outcome recorded wins.
            self.lost += 1
            self.inflight.get(queue, set()).discard(entry)
            log.warning(
                "lease lost; another worker reclaimed the job",
                worker=self.worker_id,
                queue=queue,
                entry=entry,
            )
        return self.interval


class Reclaimer:
    """Takes over entries of dead workers, never more than this worker can start."""

    def __init__(
        self,
        gateway: Gateway,
        worker_id: str,
        queues: Sequence[str],
        visibility_timeout: float,
        free_slots: Callable[[], int],
        dispatch: Callable[[list[tuple[str, str, dict[str, str]]]], Awaitable[None]],
        on_reclaimed: Callable[[int], object] = lambda count: None,
    ) -> None:
        self.gateway = gateway
        self.worker_id = worker_id
        self.queues = list(queues)
        self.min_idle_ms = int(visibility_timeout * 1000)
        # Scanning four times per timeout brings a dead worker's jobs back within about
        # 1.25 visibility timeouts of its last lease renewal.
        self.interval = visibility_timeout / 4
        self.free_slots = free_slots
        self.dispatch = dispatch
        self.on_reclaimed = on_reclaimed  # told how many a pass took back, when any
        self.reclaimed = 0

    async def run_once(self) -> float:
        before = self.reclaimed
        for queue in [name for q in self.queues for name in self.gateway.lanes_of(q)]:
            free = self.free_slots()
            if free <= 0:
                break
            entries = await self.gateway.reclaim(queue, self.worker_id, self.min_idle_ms, free)
            if entries:
                self.reclaimed += len(entries)
                log.info(
                    "reclaimed jobs of a dead or stalled worker",
                    worker=self.worker_id,
                    queue=lane_queue(queue),
                    count=len(entries),
                )
                await self.dispatch(entries)
        if self.reclaimed > before:
            self.on_reclaimed(self.reclaimed - before)
        return self.interval


class Lanes:
    """Which priority lanes (engine.core.priority) the worker's queues have, kept in the
    gateway for the reads: looked up when a queue announces a new one (``poke``), and every
    ``REFRESH_S`` should an announcement be lost."""

    REFRESH_S = 5.0

    def __init__(self, gateway: Gateway, queues: Sequence[str], clock: Clock) -> None:
        self.gateway = gateway
        self.queues = list(queues)
        self.clock = clock
        self._poked = anyio.Event()

    def poke(self) -> None:
        self._poked.set()

    async def run_once(self) -> float:
        await until(self._poked, self.REFRESH_S, self.clock)
        self._poked = anyio.Event()
        for queue in await self.gateway.refresh_lanes(self.queues):
            # enqueue.lua made the lane's group; again here, should it be gone (a FLUSHALL).
            await self.gateway.ensure_group(queue)
        return 0.0


class Heartbeat:
    """Publishes this worker's :class:`WorkerBeat` (a key of its own that expires unless
    renewed, and its last-seen time in the workers zset) and sweeps the zset of workers
    silent for long (one ZREMRANGEBYSCORE: no worker reads the others' beats)."""

    INTERVAL_S = 5.0
    # A worker unseen for this long is gone (SIGKILLed, machine lost): drop its zset entry
    # (its key expired long before). Generous, so a worker whose clock lags is not swept.
    FORGET_AFTER_S = 600.0

    def __init__(self, gateway: Gateway, describe: Callable[[], WorkerBeat], clock: Clock) -> None:
        self.gateway = gateway
        self.describe = describe
        self.clock = clock

    async def run_once(self) -> float:
        beat = self.describe()
        await self.gateway.write_beat(beat.id, msgspec.json.encode(beat), seen_at=beat.seen_at)
        await self.gateway.forget_beats_before(self.clock.time() - self.FORGET_AFTER_S)
        return self.INTERVAL_S

    async def forget(self, worker_id: str) -> None:
        await self.gateway.forget_beats(worker_id)


class Listener:
    """One subscriber on the wake-up and cancel channels of each of this worker's queues:
    promoter wake-ups and cancel requests for running jobs."""

    def __init__(
        self,
        gateway: Gateway,
        queues: Sequence[str],
        on_wake: Callable[[], None],
        on_cancel: Callable[[str], Any],
        clock: Clock,
        on_flow: Callable[[str], None] | None = None,
        on_lanes: Callable[[], None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.queues = list(queues)
        self.on_wake = on_wake
        self.on_cancel = on_cancel
        self.on_flow = on_flow
        self.on_lanes = on_lanes
        self.clock = clock
        self.subscribed = anyio.Event()
        """Set once the first subscription is in place: a cancel request sent before that
        would be lost, so the worker takes no job until then."""

    async def run(self, worker_id: str) -> None:
        queues = [self.gateway.keys.queue(queue) for queue in self.queues]
        cancel_channels = {qk.cancel_channel for qk in queues}
        wake_channels = {qk.wake_channel: qk.queue for qk in queues}
        channels = [channel for qk in queues for channel in (qk.wake_channel, qk.cancel_channel)]
        failures = 0
        while True:
            subscriber = self.gateway.subscriber()
            try:
                await subscriber.subscribe(*channels)
                self.subscribed.set()
                # Messages sent while disconnected are lost: catch up on due jobs now.
                self.on_wake()
                failures = 0
                while True:
                    message = await subscriber.get_message(timeout=30.0)
                    if message is None:
                        continue
                    if message["channel"] in cancel_channels:
                        self.on_cancel(message["data"])
                    elif message["data"] == flow.NOTICE:
                        if self.on_flow is not None:
                            self.on_flow(wake_channels.get(message["channel"], ""))
                    elif message["data"] == priority.NOTICE:
                        if self.on_lanes is not None:
                            self.on_lanes()
                    else:
                        self.on_wake()
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("listener: redis unavailable; retrying", worker=worker_id, error=str(exc))
                await self.clock.sleep(reconnect_delay(failures))
            except Exception:
                failures += 1
                log.exception("listener: failed unexpectedly; retrying", worker=worker_id)
                await self.clock.sleep(reconnect_delay(failures))
            finally:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(RedisError, OSError):
                        await subscriber.aclose()
