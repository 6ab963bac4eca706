"""A shipper's batch: outbox entries parsed into events, then written to PostgreSQL, bad events set aside.

A :class:`Batch` is held, and retried as it is, until its entries are acknowledged: the
shipper reads it (:func:`take`), leaves out what newer events make redundant
(:mod:`engine.history.superseded`), checks it and writes it (:func:`write`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from engine.broker.outbox import Streams
from engine.history.events import Event, RawEvent, decode_entry
from engine.history.store import JobLog, is_data_error

log = structlog.get_logger("engine.history.shipper")


@dataclass
class Batch:
    """Entries read and not yet acknowledged: retried as they are until they are."""

    ids: dict[str, list[tuple[str, int]]]  # stream -> (entry id, events beyond its first)
    raws: list[RawEvent]  # as read; checked into ``events`` before the first write
    streams: list[str]  # the outbox of each raw event
    count: int  # entries
    size: int  # events, garbage included
    superseded: int = 0  # enqueued events left out: their jobs have had a newer event
    events: list[Event] | None = None
    committed: bool = False
    skipped: int = 0
    rejected: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)  # entries another shipper has taken over since

    def held(self) -> dict[str, list[str]]:
        """The entry ids still leased to this shipper, per outbox."""
        return {
            stream: kept
            for stream, ids in self.ids.items()
            if (kept := [entry_id for entry_id, _ in ids if entry_id not in self.lost])
        }


def take(streams: Streams, limit: int) -> tuple[Batch, bool]:
    """Parse entries up to ``limit`` events, and whether some were left: those stay pending
    and are read next time."""
    ids: dict[str, list[tuple[str, int]]] = {}
    raws: list[RawEvent] = []
    sources: list[str] = []
    skipped = size = count = 0
    left = False
    for stream, rows in streams:
        taken: list[tuple[str, int]] = []
        for entry_id, fields in rows:
            if size >= limit:
                left = True
                break
            if fields:
                parsed, garbage, extra = decode_entry(entry_id, fields)
            else:
                log.warning("job-log entry without data (deleted), acknowledging it", entry=entry_id)
                parsed, garbage, extra = [], 1, 0
            raws += parsed
            sources += [stream] * len(parsed)
            skipped += garbage
            size += len(parsed) + garbage
            taken.append((entry_id, extra))
        if taken:
            ids[stream] = taken
            count += len(taken)
    batch = Batch(ids=ids, raws=raws, streams=sources, count=count, size=size, skipped=skipped)
    return batch, left


async def write(joblog: JobLog, batch: Batch) -> None:
    """Write the batch's checked events in one transaction; if PostgreSQL refuses the data
    itself, set the offending events aside (``batch.rejected``) and write the rest."""
    assert batch.events is not None
    try:
        await joblog.write(batch.events)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        # Retrying would fail forever: write it in halves to set only the bad events aside.
        log.error("PostgreSQL refused a job-log batch, isolating the bad events", error=str(exc))
        await _write_bisect(joblog, batch, batch.events)


async def _write_bisect(joblog: JobLog, batch: Batch, events: list[Event]) -> None:
    try:
        await joblog.write(events)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        if len(events) == 1:
            event = events[0]
            batch.rejected.append(event.entry_id)
            log.error(
                "skipping a job-log event PostgreSQL refuses",
                entry=event.entry_id,
                event_type=event.type,
                job_id=event.job_id,
                error=str(exc),
            )
            return
        middle = len(events) // 2
        await _write_bisect(joblog, batch, events[:middle])
        await _write_bisect(joblog, batch, events[middle:])
