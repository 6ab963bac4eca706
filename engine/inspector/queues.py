"""Queues: their names, how far behind they are and what they got done per minute."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.core.partitions import base_queue

if TYPE_CHECKING:
    from engine.runtime import Runtime


async def queue_names(engine: Runtime) -> list[str]:
    """Every queue Redis knows of and every queue this app's tasks use, sorted (a
    partitioned queue once, by its own name)."""
    gateway = await engine.ready()
    known = {base_queue(q) for q in await gateway.queues()}
    return sorted(known | {t.spec.queue for t in engine.tasks.values()})


async def queue_lags(engine: Runtime, queues: Sequence[str]) -> dict[str, float]:
    """Seconds since the oldest waiting entry of each queue was added (0 when none waits;
    of a partitioned queue, its most behind partition's)."""
    gateway = await engine.ready()
    now = engine.clock.time()
    oldest = await gateway.reads.oldest_waiting(engine.layout.expand(queues))
    out: dict[str, float] = {}
    for queue in queues:
        waiting = [ms for p in engine.layout.partitions(queue) if (ms := oldest[p]) is not None]
        out[queue] = max(0.0, now - min(waiting) / 1000) if waiting else 0.0
    return out


def _minutes(engine: Runtime, minutes: int) -> list[int]:
    """The last ``minutes`` minutes (since the epoch), the current one last."""
    current = int(engine.clock.time() // 60)
    return list(range(current - minutes + 1, current + 1))


async def throughput(engine: Runtime, queue: str, minutes: int = 60) -> list[tuple[int, int, int]]:
    """(minute start as epoch seconds, completed, failed) for the last ``minutes`` minutes."""
    return await throughput_totals(engine, [queue], minutes)


async def task_throughput(engine: Runtime, queue: str, minutes: int = 60) -> dict[str, tuple[int, int]]:
    """Task -> (completed, failed) in ``queue`` over the last ``minutes`` minutes."""
    gateway = await engine.ready()
    return await gateway.reads.task_throughput(engine.layout.expand([queue]), _minutes(engine, minutes))


async def throughput_totals(
    engine: Runtime, queues: Sequence[str], minutes: int
) -> list[tuple[int, int, int]]:
    """:func:`throughput` summed over ``queues`` (zeros for every minute when there are none)."""
    gateway = await engine.ready()
    span = _minutes(engine, minutes)
    rows = await gateway.reads.throughput(engine.layout.expand(queues), span)
    return [(m * 60, c, f) for m, (c, f) in zip(span, rows, strict=True)]
