"""The bounded pool of runners: jobs handed over through one deque, idle runners parked on events."""

from __future__ import annotations

import time
from collections import deque

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from engine.core.transitions import Outcome, Started
from engine.worker.executor import Executor


class Runners:
    """``concurrency`` runner tasks executing the jobs handed over, each at most once.

    A deque and idle runners parked on events, not a channel, so that one wake-up serves a
    whole batch of quick jobs: a runner that takes a job while more wait wakes the next idle
    runner first, so slow jobs still run side by side. One woken runner at a time is
    enough: until it runs, the runner that woke it is still at work, and if its job
    suspends, the woken one takes the next and wakes another. Waking one per job taken
    instead cost a fresh event, a wake-up and a park per quick job (a tenth of a worker's CPU
    on a drain of no-op jobs), for runners that found the deque empty.
    """

    def __init__(self, executor: Executor, concurrency: int, inflight: dict[str, set[str]]) -> None:
        self.executor = executor
        self.concurrency = concurrency
        self.inflight = inflight  # queue -> entries whose leases the lease keeper renews
        self.busy = 0  # entries handed over and not yet executed
        self.stopping = False
        self.stop_requested = anyio.Event()
        """Set by :meth:`stop`: what waits for work or backs off wakes up."""
        self.stopped_at: float | None = None  # time.monotonic() of the stop
        self.slot_freed = anyio.Event()
        self.drained = anyio.Event()
        """Set once nothing more will be handed over (:meth:`close`) and no job is left to
        execute: a stopping pool's fetch loops may still hand over what their last reads got."""
        self._queue: deque[Started] = deque()
        self._idle: list[anyio.Event] = []
        self._waking = False  # a runner was woken to take the next job and has not run yet
        self._closed = False

    def free_slots(self) -> int:
        return 0 if self.stopping else self.concurrency - self.busy

    async def wait_for_slot(self) -> None:
        """Until a runner is free, or the pool stops (then a fetch loop ends)."""
        # Several fetch loops may wait at once (one per slot in a cluster): a fresh event
        # only replaces one already set, so no waiter is left on an event nobody sets.
        while self.busy >= self.concurrency and not self.stopping:
            if self.slot_freed.is_set():
                self.slot_freed = anyio.Event()
            await self.slot_freed.wait()

    def hand_over(self, started: list[Started]) -> None:
        self.busy += len(started)
        inflight = self.inflight
        for job in started:
            inflight[job.queue].add(job.entry_id)
        self._queue.extend(started)
        if started and self._idle:
            self._idle.pop().set()

    def drop(self, job: Started) -> None:
        """Give up a job handed over before its start was confirmed: stop it if it runs, and
        discard its outcome (its entry, if still pending, is reclaimed and run again)."""
        job.dropped = True
        self.executor.cancel(job.job_id)
        self.inflight[job.queue].discard(job.entry_id)

    def stop(self) -> None:
        """Take no more jobs (no free slot from now on). Fetch loops waiting for a slot or
        backing off end; a read in flight still hands over what it got (see Fetcher.run)."""
        if self.stopping:
            return
        self.stopping = True
        self.stopped_at = time.monotonic()
        self.stop_requested.set()
        self.slot_freed.set()  # wakes the fetch loops waiting for a slot

    def grace_left(self, grace_period: float) -> float:
        """Seconds left of a grace period counted from :meth:`stop` (all of it before)."""
        if self.stopped_at is None:
            return grace_period
        return max(0.0, grace_period - (time.monotonic() - self.stopped_at))

    def close(self) -> None:
        """Nothing more will be handed over: runners exit once the deque is empty, and
        ``drained`` follows the last job."""
        self._closed = True
        while self._idle:
            self._idle.pop().set()
        if self.busy == 0:
            self.drained.set()

    def start(self, group: TaskGroup, send: MemoryObjectSendStream[Outcome]) -> None:
        """Start the runners in ``group``; the completer's stream ends when the last exits."""
        for _ in range(self.concurrency):
            group.start_soon(self._runner, send.clone())
        send.close()

    async def _runner(self, send: MemoryObjectSendStream[Outcome]) -> None:
        queue, idle, executor = self._queue, self._idle, self.executor
        async with send:
            while True:
                if not queue:
                    if self._closed:
                        return
                    parked = anyio.Event()
                    idle.append(parked)
                    try:
                        await parked.wait()
                    finally:
                        self._waking = False
                    continue
                job = queue.popleft()
                if queue and idle and not self._waking:
                    self._waking = True  # more waiting: another runner takes the next one
                    idle.pop().set()
                try:
                    outcome = None if job.dropped else await executor.run(job)
                    if job.confirmed is not None:
                        await job.confirmed.wait()  # the outcome must not overtake the start
                        if job.dropped:
                            outcome = None
                finally:
                    self.busy -= 1
                    self.slot_freed.set()
                    if self.busy == 0 and self._closed:
                        self.drained.set()
                if outcome is not None:
                    send.send_nowait(outcome)
