"""What a worker knows of its queues' flow control (engine.core.flow), from what start.lua
answers: which queues to leave alone for a while, and the entries it holds back.

Redis decides, atomically with each start; this only spares Redis calls that would start
nothing. A queue start.lua reports bound (paused, every concurrency slot taken, the rate
used up) is neither fetched nor block-read until a re-check is due: at once when the rate
allows the next start, shortly for a full queue (a slot may free on any worker), every
second for a paused one, or when a resume is announced (:meth:`release`). Entries a
blocking read or a reclaim delivered that may not start yet stay pending to this worker,
their leases renewed like those of running jobs, and are offered to start.lua again first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import anyio

from engine.broker.delivery import Entry, StartBatch
from engine.core.clock import Clock
from engine.core.priority import lane_queue

# How soon a queue whose concurrency slots are all taken is tried again: a slot may free
# on any worker, and nothing announces it.
FULL_RECHECK_S = 0.05
# How soon a paused queue is looked at again, should its resume announcement be lost.
PAUSED_RECHECK_S = 1.0
# Entries a worker holds for a queue whose concurrency keys are full, at most: beyond it
# the worker reads no more of the queue until some have started (one hot key's backlog is
# not all read into one worker's memory).
HELD_CAP = 1000


class FlowGate:
    """Shared by a worker's fetch loops and its reclaimer. It knows queues (or partitions):
    a queue's priority lanes (engine.core.priority) share its flow control, so an entry of
    a lane counts under its queue and keeps its lane's name (where it is pending)."""

    def __init__(self, clock: Clock, inflight: dict[str, set[str]]) -> None:
        self.clock = clock
        self.inflight = inflight
        self.gated: set[str] = set()
        """Queues start.lua reported flow control for: their jobs start only through it,
        never straight from a blocking read's entries."""
        self._until: dict[str, float] = {}
        self._held: dict[str, list[Entry]] = {}
        self._held_until: dict[str, float] = {}
        self._full: set[str] = set()
        """Queues start.lua last found with every concurrency slot taken."""
        """When entries held for a full concurrency key are worth offering again: the queue
        stays open meanwhile for its other keys' jobs."""
        self.changed = anyio.Event()
        """Set when a queue is released before its re-check (a resume): waiting loops look again."""

    def note(self, batch: StartBatch) -> None:
        """Learn from start.lua's answer: throttled queues, and entries it held back."""
        now = self.clock.monotonic()
        for queue, throttle in batch.throttles.items():
            self.gated.add(queue)
            if throttle.reason == "rate":
                self._until[queue] = now + throttle.wait_ms / 1000
            elif throttle.reason == "concurrency":
                self._until[queue] = now + FULL_RECHECK_S
                self._full.add(queue)
            elif throttle.reason == "paused":
                self._until[queue] = now + PAUSED_RECHECK_S
            else:
                self._until.pop(queue, None)
            if throttle.reason != "concurrency":
                self._full.discard(queue)
            if throttle.key_held:
                self._held_until[queue] = now + FULL_RECHECK_S
        if self.gated:  # (else nothing to discard: spares a loop over every job started)
            for name in {job.queue for job in batch}:
                queue = lane_queue(name)
                if queue not in batch.throttles:
                    self.gated.discard(queue)
        self.hold(batch.held)

    def hold(self, entries: Iterable[Entry]) -> None:
        """Keep entries pending to this worker for a later start (their leases renewed like
        those of running jobs)."""
        for entry in entries:
            self._held.setdefault(lane_queue(entry[0]), []).append(entry)
            self.inflight.setdefault(entry[0], set()).add(entry[1])

    def release(self, queue: str) -> None:
        """A resume (or a limit lifted) was announced: look at the queue again now."""
        if self._until.pop(queue, None) is not None:
            self.changed.set()
            self.changed = anyio.Event()

    def finished(self, names: Iterable[str]) -> None:
        """This worker recorded outcomes of these queues (or lanes): the slots they held are
        free, so a queue whose slots (or keys) were full is worth a look now rather than at
        its re-check (slots freed by other workers still wait for that)."""
        woke = False
        for queue in {lane_queue(name) for name in names}:
            if queue in self._full:
                self._full.discard(queue)
                woke = self._until.pop(queue, None) is not None or woke
            woke = self._held_until.pop(queue, None) is not None or woke
        if woke:
            self.changed.set()
            self.changed = anyio.Event()

    def open(self, queues: Iterable[str]) -> list[str]:
        """The queues worth a start.lua call or a blocking read now."""
        now = self.clock.monotonic()
        held = self._held
        return [
            q for q in queues if self._until.get(q, 0.0) <= now and (q not in held or len(held[q]) < HELD_CAP)
        ]

    def take_held(self, queues: Iterable[str]) -> list[Entry]:
        """The held entries of the open ones among ``queues``, to offer start.lua again (what
        it holds back again comes back through :meth:`note`)."""
        out: list[Entry] = []
        now = self.clock.monotonic()
        for queue in queues:
            if self._until.get(queue, 0.0) > now or self._held_until.get(queue, 0.0) > now:
                continue
            entries = self._held.pop(queue, None)
            if entries:
                out += entries
                for name, entry_id, _fields in entries:
                    self.inflight.get(name, set()).discard(entry_id)
        return out

    def next_check_in(self, queues: Iterable[str]) -> float:
        """Seconds until the first re-check of ``queues`` is due (inf: none is pending)."""
        now = self.clock.monotonic()
        due = [until - now for q in queues if (until := self._until.get(q)) is not None]
        due += [
            until - now for q in queues if q in self._held and (until := self._held_until.get(q)) is not None
        ]
        return max(0.0, min(due)) if due else math.inf
