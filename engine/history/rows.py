"""Turning a batch of checked events into the rows one upsert writes, and that SQL.

Events of one job collapse to the newest state (by version); facts that never change fill
in whatever is missing; log lines and failed attempts become ``job_logs`` rows keyed by
their outbox entry, so a batch written twice adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.history.events import Event

_MS = "('epoch'::timestamptz + {} * interval '1 millisecond')"
_NEWER = "excluded.version > j.version"

# One statement for all job rows of a batch (ids unique within it, sorted so concurrent
# shippers lock rows in the same order). State columns move only with a newer version and
# are then what that event says (so collapsing a job's events within a batch to the newest
# one gives the same row as applying them one by one; processed_at, which not every event
# carries, only moves forward in time); facts that never change are filled in whenever they
# are missing. The WHERE clause makes a re-shipped batch touch nothing at all.
UPSERT_JOBS = f"""
INSERT INTO jobs AS j (id, queue_name, task_name, payload, attempts, status, result, error, traceback,
                       created_at, processed_at, finished_at, due_at, last_event, version)
SELECT u.id, u.queue_name, u.task_name, u.payload::jsonb, u.attempts, u.status, u.result::jsonb,
       u.error, u.traceback, {_MS.format("u.created")}, {_MS.format("u.processed")},
       {_MS.format("u.finished")}, {_MS.format("u.due")}, u.last_event, u.version
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[],
            $14::text[], $15::bigint[])
     AS u(id, queue_name, task_name, payload, attempts, status, result, error, traceback,
          created, processed, finished, due, last_event, version)
ORDER BY u.id
ON CONFLICT (id) DO UPDATE SET
    task_name = CASE WHEN j.task_name = '' THEN excluded.task_name ELSE j.task_name END,
    payload = COALESCE(j.payload, excluded.payload),
    created_at = CASE WHEN j.payload IS NOT NULL THEN j.created_at  -- exact: from the enqueue event
                      WHEN excluded.payload IS NOT NULL THEN excluded.created_at
                      ELSE LEAST(j.created_at, excluded.created_at) END,
    attempts = CASE WHEN {_NEWER} THEN excluded.attempts ELSE j.attempts END,
    status = CASE WHEN {_NEWER} THEN excluded.status ELSE j.status END,
    result = CASE WHEN {_NEWER} THEN excluded.result ELSE j.result END,
    error = CASE WHEN {_NEWER} THEN excluded.error ELSE j.error END,
    traceback = CASE WHEN {_NEWER} THEN excluded.traceback ELSE j.traceback END,
    processed_at = CASE WHEN {_NEWER} THEN GREATEST(excluded.processed_at, j.processed_at)
                        ELSE j.processed_at END,
    finished_at = CASE WHEN {_NEWER} THEN excluded.finished_at ELSE j.finished_at END,
    due_at = CASE WHEN {_NEWER} THEN excluded.due_at ELSE j.due_at END,
    last_event = CASE WHEN {_NEWER} THEN excluded.last_event ELSE j.last_event END,
    version = GREATEST(j.version, excluded.version),
    updated_at = now()
WHERE {_NEWER}
   OR (j.payload IS NULL AND excluded.payload IS NOT NULL)
   OR (j.task_name = '' AND excluded.task_name <> '')
   OR (j.payload IS NULL AND excluded.created_at < j.created_at)
"""

INSERT_LOGS = f"""
INSERT INTO job_logs (job_id, content, level, logged_at, event_id)
SELECT u.job_id, u.content, u.level, {_MS.format("u.at")}, u.event_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) WITH ORDINALITY
     AS u(job_id, content, level, at, event_id, n)
ORDER BY u.n
ON CONFLICT (job_id, event_id) DO NOTHING
"""

# A re-shipped deletion keeps the later position.
UPSERT_TOMBSTONES = """
INSERT INTO deleted_jobs AS d (id, queue_name, entry_ms, entry_seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
ON CONFLICT (id) DO UPDATE SET entry_ms = excluded.entry_ms, entry_seq = excluded.entry_seq,
                               deleted_at = now()
WHERE (excluded.entry_ms, excluded.entry_seq) > (d.entry_ms, d.entry_seq)
"""


class Rows:
    """Column arrays for ``UPSERT_JOBS`` and ``INSERT_LOGS``, built from one batch."""

    __slots__ = ("jobs", "logs")

    def __init__(self, events: Sequence[Event]) -> None:
        latest: dict[str, Event] = {}  # job id -> its state event with the highest version
        facts: dict[str, Event] = {}  # job id -> an event with its payload, the enqueue's first
        earliest: dict[str, int] = {}  # job id -> earliest time seen in the batch
        processed_max: dict[str, int] = {}  # job id -> start of its latest attempt seen
        log_only: dict[str, Event] = {}
        log_job: list[str] = []
        log_content: list[str] = []
        log_level: list[str] = []
        log_at: list[int] = []
        log_entry: list[str] = []
        for ev in events:
            job_id = ev.job_id
            at = ev.at_ms if ev.processed_ms is None else min(ev.at_ms, ev.processed_ms)
            seen = earliest.get(job_id)
            if seen is None or at < seen:
                earliest[job_id] = at
            if ev.processed_ms is not None and ev.processed_ms > processed_max.get(job_id, -1):
                processed_max[job_id] = ev.processed_ms
            if ev.type == "log":
                log_job.append(job_id)
                log_content.append(ev.message or "")
                log_level.append(ev.level or "info")
                log_at.append(ev.at_ms)
                log_entry.append(ev.entry_id)
                if job_id not in log_only:
                    log_only[job_id] = ev
                continue
            current = latest.get(job_id)
            if current is None or ev.version > current.version:
                latest[job_id] = ev
            if ev.type == "enqueued" or (ev.payload is not None and job_id not in facts):
                facts[job_id] = ev
            if ev.type in ("retry", "failed"):
                # Every failed attempt leaves an error line with its traceback.
                log_job.append(job_id)
                log_content.append(f"{ev.error or ''}\n\n{ev.traceback or ''}")
                log_level.append("error")
                log_at.append(ev.at_ms)
                log_entry.append(ev.entry_id)

        ids: list[str] = []
        queues: list[str] = []
        tasks: list[str] = []
        payloads: list[str | None] = []
        attempts: list[int] = []
        statuses: list[str] = []
        results: list[str | None] = []
        errors: list[str | None] = []
        tracebacks: list[str | None] = []
        created: list[int] = []
        processed: list[int | None] = []
        finished: list[int | None] = []
        due: list[int | None] = []
        last_event: list[str] = []
        versions: list[int] = []
        for job_id, ev in latest.items():
            first = facts.get(job_id)
            ids.append(job_id)
            queues.append(ev.queue)
            tasks.append(first.task if first is not None and first.task else ev.task)
            attempts.append(ev.attempts or 0)
            statuses.append(ev.status or "waiting")
            results.append(ev.result)
            errors.append(ev.error)
            tracebacks.append(ev.traceback)
            processed.append(processed_max.get(job_id))
            finished.append(ev.finished_ms)
            due.append(ev.due_ms)
            last_event.append(ev.type)
            versions.append(ev.version)
            if first is not None:
                payloads.append(first.payload)
                created.append(first.created_ms if first.created_ms is not None else first.at_ms)
            else:
                payloads.append(None)
                created.append(earliest[job_id])
        for job_id, ev in log_only.items():
            if job_id in latest:
                continue
            # Known so far only from its log lines: a placeholder that any state event
            # overrides (version 0), running since it logs.
            ids.append(job_id)
            queues.append(ev.queue)
            tasks.append(ev.task)
            payloads.append(None)
            attempts.append(0)
            statuses.append("active")
            results.append(None)
            errors.append(None)
            tracebacks.append(None)
            created.append(earliest[job_id])
            processed.append(None)
            finished.append(None)
            due.append(None)
            last_event.append("log")
            versions.append(0)
        self.jobs: tuple[list[Any], ...] = (
            ids,
            queues,
            tasks,
            payloads,
            attempts,
            statuses,
            results,
            errors,
            tracebacks,
            created,
            processed,
            finished,
            due,
            last_event,
            versions,
        )
        self.logs: tuple[list[Any], ...] = (log_job, log_content, log_level, log_at, log_entry)


def outbox_position(entry_id: str) -> tuple[int, int]:
    """Where an event stands in its outbox: its entry id ``ms-seq`` (of a batched entry's
    event, ``ms-seq.index``: the events of one entry stand together). Entry ids of a stream
    only grow, and a job's events all go to its queue's outbox. An id that is not one (only
    hand-made events have them) stands first."""
    ms, _, seq = entry_id.partition(".")[0].partition("-")
    if ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit() and len(ms) <= 18 and len(seq) <= 18:
        return int(ms), int(seq)
    return 0, 0
