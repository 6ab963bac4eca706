"""Leaving enqueued events out of a batch when a newer event of the job makes the same row.

Every state event after the enqueue carries the job's payload and creation time, so the
newer one (shipped already, in this batch or still in the outbox) makes the same row: one
write per job instead of two. While workers are getting through the jobs of a batch (a
backlog draining), the shipper waits for them a little, up to ``HOLD_MAX_S`` seconds: it
then trails the workers and writes each job once. Jobs nobody is getting to are written as
they are at once.
"""

from __future__ import annotations

from engine.broker.outbox import Outbox
from engine.core.clock import Clock
from engine.history.batch import Batch
from engine.history.events import RawEvent

# How long a batch may wait for workers to get through its jobs, and how often it looks.
HOLD_MAX_S = 1.0
HOLD_POLL_S = 0.05


async def skip_superseded(outbox: Outbox, batch: Batch, clock: Clock) -> None:
    """Drop from ``batch`` the enqueued events of jobs that have had a newer state event
    (counted in ``batch.superseded``)."""
    newer = {raw.j for raw in batch.raws if raw.e not in ("enqueued", "log")}
    asked = [
        (stream, raw)
        for stream, raw in zip(batch.streams, batch.raws, strict=True)
        if raw.e == "enqueued" and raw.j not in newer and raw.v is not None and raw.v.isdigit()
    ]
    skip: set[int] = set()
    start = clock.monotonic()
    await _trail(outbox, asked, start, clock)
    while asked:
        per_stream: dict[str, list[RawEvent]] = {}
        for stream, raw in asked:
            per_stream.setdefault(stream, []).append(raw)
        still: list[tuple[str, RawEvent]] = []
        moved = await _moved_on(outbox, per_stream)
        for (stream, raws), codes in zip(per_stream.items(), moved, strict=True):
            for raw, code in zip(raws, codes, strict=True):
                if code == 1:
                    skip.add(id(raw))
                elif code == 0:
                    still.append((stream, raw))  # (-1: its hash is gone: write what we know)
        elapsed = clock.monotonic() - start
        if not still or len(still) == len(asked) or elapsed >= HOLD_MAX_S:
            break  # done, or nobody is getting to these jobs now
        await clock.sleep(HOLD_POLL_S)  # a few still running: they are about to finish
        asked = still
    if skip:
        kept = [(s, raw) for s, raw in zip(batch.streams, batch.raws, strict=True) if id(raw) not in skip]
        batch.streams = [s for s, _ in kept]
        batch.raws = [raw for _, raw in kept]
        batch.superseded += len(skip)


async def _trail(outbox: Outbox, asked: list[tuple[str, RawEvent]], start: float, clock: Clock) -> None:
    """Wait, up to ``HOLD_MAX_S`` seconds from ``start``, while workers are between the
    first and the last of these jobs of each outbox (they run in about the order they
    were enqueued in): a look at two jobs per outbox, not at each of them every time."""
    while clock.monotonic() - start < HOLD_MAX_S:
        ends: dict[str, list[RawEvent]] = {}
        for stream, raw in asked:
            ends.setdefault(stream, [raw, raw])[1] = raw
        if not any(codes == [1, 0] for codes in await _moved_on(outbox, ends)):
            return
        await clock.sleep(HOLD_POLL_S)


async def _moved_on(outbox: Outbox, per_stream: dict[str, list[RawEvent]]) -> list[list[int]]:
    # The caller kept only events whose version is set (raw.v is a string of digits).
    asked = {stream: [(raw.j, raw.v or "") for raw in raws] for stream, raws in per_stream.items()}
    return await outbox.moved_on(asked)
