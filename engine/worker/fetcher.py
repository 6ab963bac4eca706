"""Reading entries for the runners: the fetch loop, the idle fast path, the backlog it sees,
and stopping without stranding what a read in flight got."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import structlog

from engine.broker import RedisError, ResponseError
from engine.broker.delivery import StartBatch
from engine.broker.gateway import Gateway, runnable_entry
from engine.core.backoff import reconnect_delay
from engine.core.clock import Clock
from engine.core.priority import lane_queue
from engine.core.transitions import Started
from engine.worker.flow import FlowGate
from engine.worker.loop import forever
from engine.worker.runners import Runners

log = structlog.get_logger("engine.worker")

# Idle XREADGROUP blocks this long, then loops: short enough to notice a dropped connection
# quickly, long enough that an idle worker sends about one command a second.
BLOCK_MS = 1000
# How long jobs started straight from their entries wait for start.lua's confirmation
# before their outcomes are given up (they are then reclaimed and run again).
CONFIRM_TIMEOUT_S = 10.0
# A full read this recent means the worker still runs flat out (see ``saturated``).
BACKLOG_FRESH_S = 1.0
# How long a stopping worker lets its calls in flight end by themselves (a blocking read
# ends within BLOCK_MS) before it cancels them: one still running by then waits on a server
# that does not answer (a hung or partitioned node; the client sets no socket timeout).
STOP_TIMEOUT_S = BLOCK_MS / 1000 + 2.0

Entries = list[tuple[str, str, dict[str, str]]]


class Fetcher:
    """Reads only as many entries as there are free runners (XREADGROUP with COUNT, and BLOCK
    when the streams are drained: no polling while idle) and starts them with start.lua.

    A worker runs one per group of queues one blocking read can serve (all its queues on
    one server, one per queue in a cluster); they share the runners. While jobs are
    waiting, the loops take turns (``turn``, a lock the worker's loops share): one read in
    flight per worker, taking every free slot, as a worker of one queue does. Reading all
    the groups at once, each for its share of the slots, would cut a busy worker's reads
    into batches that many times smaller, and every node of a cluster (a partitioned queue
    on 3 masters) would spend more per job on the reads. A blocking read (the streams
    drained) waits on every group at once, each for its ``share`` of the free slots
    (``share``: how many queues the worker reads in all).
    """

    def __init__(
        self,
        gateway: Gateway,
        worker_id: str,
        queues: Sequence[str],
        runners: Runners,
        clock: Clock,
        *,
        share: int | None = None,
        turn: anyio.Lock | None = None,
        gate: FlowGate | None = None,
    ) -> None:
        self.gateway = gateway
        self.worker_id = worker_id
        self.queues = list(queues)
        self.share = max(1, share or len(self.queues))
        self.turn = turn or anyio.Lock(fast_acquire=True)
        self.runners = runners
        self.clock = clock
        self.gate = gate or FlowGate(clock, runners.inflight)
        self._backlogged = False
        self._backlogged_at = 0.0
        # The last blocking read got less than it asked for: the streams were drained then,
        # so the next turn blocks again at once. A start.lua read first would find nothing
        # (or what the blocking read returns at once): a round trip per job of an idle worker.
        self._drained = False
        self._log = log.bind(worker=worker_id)

    def saturated(self) -> bool:
        """Jobs are waiting beyond what this worker can take: it runs flat out."""
        return self._backlogged and self.clock.monotonic() - self._backlogged_at < BACKLOG_FRESH_S

    async def dispatch(self, entries: Entries) -> None:
        """Mark read or reclaimed entries active and hand them to runners (flow control may
        hold some back: see FlowGate)."""
        batch = await self.gateway.start_entries(self.worker_id, entries)
        self.gate.note(batch)
        self.runners.hand_over(batch)

    async def run(self) -> None:
        """Fetch until the pool stops (or the caller cancels); never raises but for that.

        A stop does not cancel the read in flight: by the time the server answers a blocking
        XREADGROUP (or start.lua's read) the entries are pending under this consumer, and a
        reply dropped by a cancel would leave them there until a reclaim, about 1.25
        visibility timeouts later. The loop lets the call end (within BLOCK_MS), hands what
        it got to the runners, which run it within what is left of the grace period, and
        then ends. (:func:`fetch_until_stopped` cancels it after STOP_TIMEOUT_S.)
        """
        gateway, runners = self.gateway, self.runners
        failures = 0
        while True:
            await runners.wait_for_slot()  # returns at once once the pool stops
            if runners.stopping:
                return
            try:
                # While jobs are waiting, read and start them in one script call, in turn with
                # the worker's other loops; block (and then start what arrived) only when the
                # streams are drained. COUNT applies per stream: the free slots are split over
                # the streams of one call so that the total stays near them.
                gate = self.gate
                async with self.turn:
                    free = runners.concurrency - runners.busy
                    if free <= 0:
                        continue  # the loop before took them: wait for the next free slot
                    started: list[Started] = []
                    held = gate.take_held(self.queues)
                    if held:  # entries flow control held back before: they go first
                        batch = await gateway.start_entries(self.worker_id, held[:free])
                        gate.note(batch)
                        gate.hold(held[free:])  # more than the free slots: next time
                        runners.hand_over(batch)
                        started += batch
                        free -= len(batch)
                    queues = gate.open(self.queues)
                    count = max(1, free // max(1, len(queues)))
                    # (A queue with flow control reads through start.lua, which reads no
                    # more than may start.)
                    if queues and free > 0 and not (self._drained and not gate.gated):
                        batch = await gateway.fetch(queues, self.worker_id, count)
                        gate.note(batch)
                        runners.hand_over(batch)
                        started += batch
                self._drained = False
                if not started:
                    await self._wait_for_entries(gate.open(self.queues))
                # A full read means more is waiting: the worker is saturated (the shipper
                # then steps aside, see Shipper.busy).
                self._backlogged = len(started) >= count
                self._backlogged_at = self.clock.monotonic()
            except ResponseError as exc:
                failures += 1
                if "NOGROUP" in str(exc):
                    # The stream or group vanished (FLUSHALL, a restart without persistence).
                    self._log.warning("consumer group missing; recreating it")
                    with contextlib.suppress(RedisError, OSError):
                        for queue in self.queues:
                            await gateway.ensure_group(queue)
                else:
                    # A script that failed on some entry's data: the entries it read stay
                    # pending and come back, one at a time, through the reclaimer, which
                    # buries the one at fault (Gateway.start_entries).
                    self._log.error("fetch failed; retrying", error=str(exc))
                await _back_off(reconnect_delay(failures), runners.stop_requested)
                continue
            except (RedisError, OSError) as exc:
                # Entries read but not started stay pending under this worker's name and
                # are reclaimed after the visibility timeout.
                failures += 1
                delay = reconnect_delay(failures)
                self._log.warning("redis unavailable; retrying", error=str(exc), retry_in_s=round(delay, 2))
                await _back_off(delay, runners.stop_requested)
                continue
            except Exception:
                # Nothing read may take the worker down (the entries stay pending, as above).
                failures += 1
                self._log.exception("fetch failed unexpectedly; retrying")
                await _back_off(reconnect_delay(failures), runners.stop_requested)
                continue
            if failures:
                self._log.info("redis reachable again")
                failures = 0

    async def _start_now(self, entries: Entries) -> None:
        """Run fresh jobs at once and confirm them with start.lua meanwhile, which saves an
        idle worker a round trip per job; other entries wait for start.lua as usual.

        A job start.lua refuses (cancelled since, or poison) is stopped and its outcome
        discarded; if the confirmation fails, so is every outcome of the batch, and the
        entries, still pending, are reclaimed (at-least-once, as after a crash).
        """
        runners, gated = self.runners, self.gate.gated
        # By queue and entry id: one read of several streams can get the same id from two.
        ready = {}
        for queue, entry_id, fields in entries:
            job = None if lane_queue(queue) in gated else runnable_entry(queue, entry_id, fields)
            if job is not None:
                ready[queue, entry_id] = job
        runners.hand_over(list(ready.values()))
        started = StartBatch()
        try:
            # Shielded: jobs already run on this answer, and a stop() must not strand them.
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # the runners start them first
                # The limit on start.lua's answer is set only now: set before the
                # checkpoint, it made an idle worker's jobs start some 20 us later (a
                # tenth of the time from its read's reply to their start).
                with anyio.move_on_after(CONFIRM_TIMEOUT_S):
                    started = await self.gateway.start_entries(self.worker_id, entries)
        finally:
            confirmed = {(job.queue, job.entry_id) for job in started}
            for job in ready.values():
                if (job.queue, job.entry_id) not in confirmed:
                    runners.drop(job)
                assert job.confirmed is not None
                job.confirmed.set()
        self.gate.note(started)
        runners.hand_over([job for job in started if (job.queue, job.entry_id) not in ready])

    async def _wait_for_entries(self, queues: list[str]) -> None:
        """Nothing started: block-read the queues flow control leaves open (and start what
        arrives), at most until the next re-check of one it holds back is due."""
        wait_s = min(BLOCK_MS / 1000, self.gate.next_check_in(self.queues))
        if not queues:
            with anyio.move_on_after(wait_s):
                await self.gate.changed.wait()
            return
        runners = self.runners
        count = max(1, (runners.concurrency - runners.busy) // self.share)
        block_ms = max(1, math.ceil(wait_s * 1000))
        entries = await self.gateway.read(queues, self.worker_id, count, block_ms)
        self._drained = len(entries) < count
        if entries:
            await self._start_now(entries)


async def fetch_until_stopped(
    fetchers: Sequence[Fetcher],
    reclaim: Callable[[], Awaitable[float]],
    unblock: Callable[[], Awaitable[object]],
    runners: Runners,
    worker_id: str,
    clock: Clock,
) -> None:
    """Run the fetch loops and the reclaimer (``reclaim``: one pass) until the runners stop.

    Neither is cancelled in the middle of a call by a stop, since what such a call got
    from the server is pending under this worker and would be stranded: the fetch loops
    end after their read in flight (:meth:`Fetcher.run`), then the reclaimer after its pass
    in flight, if any (a stopping pool has no free slot, so a new pass claims nothing).
    Whatever is still running STOP_TIMEOUT_S after the stop is cancelled: it waits on a
    server that does not answer.
    """
    passing = anyio.Lock()

    async def reclaim_pass() -> float:
        async with passing:
            return await reclaim()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as fetching:
            fetching.start_soon(forever, "reclaimer", reclaim_pass, worker_id, clock)
            fetching.start_soon(_cancel_when_stuck, runners, unblock, scope, worker_id)
            async with anyio.create_task_group() as loops:
                for fetcher in fetchers:
                    loops.start_soon(fetcher.run)
            async with passing:  # between passes: the reclaimer may go
                fetching.cancel_scope.cancel()


async def _cancel_when_stuck(
    runners: Runners, unblock: Callable[[], Awaitable[object]], scope: anyio.CancelScope, worker_id: str
) -> None:
    await runners.stop_requested.wait()
    stopped_at = runners.stopped_at
    assert stopped_at is not None

    def left() -> float:
        return max(0.0, STOP_TIMEOUT_S - (time.monotonic() - stopped_at))

    # The blocked reads return at once, empty (else within BLOCK_MS, by themselves); a server
    # that does not answer this either is the case the deadline below is for.
    with anyio.move_on_after(left()), contextlib.suppress(RedisError, OSError):
        await unblock()
    await anyio.sleep(left())
    log.warning(
        "fetching did not end after the stop; cancelling it (what it read is reclaimed later)",
        worker=worker_id,
        waited_s=STOP_TIMEOUT_S,
    )
    scope.cancel()


async def _back_off(delay: float, stop: anyio.Event) -> None:
    # Real time, not the engine's clock: it waits for a real server to come back, and a
    # test's fake clock must never stall the fetching. A stop ends the wait.
    with anyio.move_on_after(delay):
        await stop.wait()
