"""Figures for operating a queue: per-task outcomes and run times, failures grouped by error,
and cron schedules with their pause state and recent runs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from engine import inspector
from engine.core.model import Status
from engine.dashboard.actions import BULK_STATUSES
from engine.dashboard.errors import NotFound
from engine.dashboard.schemas import MAX_SEARCH
from engine.dashboard.search import matcher
from engine.dashboard.taskstats import DURATION_BOUNDS, summed
from engine.dashboard.views import HISTORY_ERRORS, history_enabled

if TYPE_CHECKING:
    from engine.client.app import Engine

ERROR_SCAN = 5000
"""Dead letters the API reads (newest first) to group them by error: enough to show what is
failing now without walking a million-entry stream."""
PAGE_ERROR_SCAN = 500
"""The same for a page, which is rendered again at every live update."""
PAGE_GROUPS = 10
"""Error groups a page shows (the API gives them all)."""
HISTORY_PAGE = 500

log = structlog.get_logger("engine.dashboard")
Failure = tuple[str, str, str | None]
"""A failed job as grouping sees it: (id, task, error)."""


# --- per task -------------------------------------------------------------------------------


RECENT_MINUTES = 60
"""The per-task throughput's window (the throughput hashes are kept two hours)."""


async def task_breakdown(engine: Engine, queue: str) -> dict[str, Any]:
    """Each task's counters and estimated run-time quantiles in ``queue`` (checked by the
    caller), from the stats hashes of its partitions (Redis alone: no job log needed)."""
    gateway = await engine.ready()
    hashes = [(await gateway.reads.scrape(p, ())).stats for p in engine.layout.partitions(queue)]
    _, tasks = summed(hashes)
    recent = await inspector.task_throughput(engine, queue, RECENT_MINUTES)
    rows = []
    for task, figures in sorted(tasks.items()):
        done, failed = recent.get(task, (0, 0))
        counts = figures.counts
        finished = counts["completed"] + counts["failed"]
        timed = figures.observed
        p50, p95 = figures.quantile(0.5), figures.quantile(0.95)
        rows.append(
            {
                "task": task,
                **counts,
                "failure_rate": round(counts["failed"] / finished, 4) if finished else 0.0,
                "last_hour_completed": done,
                "last_hour_failed": failed,
                "per_minute": round((done + failed) / RECENT_MINUTES, 2),
                "attempts": timed,
                "mean_seconds": round(figures.sum_ms / 1000 / timed, 4) if timed else None,
                "p50_seconds": None if p50 is None else round(p50, 4),
                "p95_seconds": None if p95 is None else round(p95, 4),
            }
        )
    return {
        "queue": queue,
        "tasks": rows,
        "estimated": True,
        "bounds": [float(b) for b in DURATION_BOUNDS],
    }


# --- failures grouped by error ----------------------------------------------------------------

_DIGITS = re.compile(r"\d+")
# "ValueError: ...", "engine.core.errors.JobTimeout: ...": a dotted name before ": ".
_KIND = re.compile(r"^([A-Za-z_][\w.]*)(?=: )")


def error_line(error: str | None) -> str:
    """The first non-empty line of an error (where the engine puts ``Class: message``)."""
    for line in (error or "").splitlines():
        if line.strip():
            return line.strip()[:MAX_SEARCH]
    return ""


def _search_for(line: str) -> str:
    """Text found in every error of a merged group: the longest piece of its line without
    digits (its lines differ only there; the search may find a few more)."""
    pieces = [p for p in _DIGITS.split(line) if p.strip()]
    return max(pieces, key=len).strip() if pieces else line


@dataclass
class _Group:
    error: str
    count: int = 0
    tasks: set[str] = field(default_factory=set)
    sample: str = ""
    """The newest job's line, as it was."""
    latest_id: str = ""
    merged: bool = False


def group_errors(failures: Iterable[Failure]) -> list[dict[str, Any]]:
    """Failed jobs grouped by their error's first line, numbers aside ("order 17: declined"
    and "order 18: declined" are one group), biggest first; ``failures`` newest first."""
    groups: dict[str, _Group] = {}
    for job_id, task, error in failures:
        line = error_line(error) or "(no error recorded)"
        key = _DIGITS.sub("N", line)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(error=line, sample=line, latest_id=job_id)
        elif group.error != line:
            group.error = key  # its lines differ (in their numbers): show what they share
            group.merged = True
        group.count += 1
        if task:
            group.tasks.add(task)
    out = []
    for group in sorted(groups.values(), key=lambda g: (-g.count, g.error)):
        kind = _KIND.match(group.error)
        out.append(
            {
                "error": group.error,
                "kind": kind.group(1) if kind else "",
                "count": group.count,
                "tasks": sorted(group.tasks),
                "latest_id": group.latest_id,
                "search": _search_for(group.sample) if group.merged else group.error,
            }
        )
    return out


async def error_groups(
    engine: Engine, queue: str, task: str | None = None, *, scan: int = ERROR_SCAN
) -> dict[str, Any]:
    """The newest dead letters of ``queue`` (checked by the caller), up to ``scan``, and with
    the job log on the newest failed jobs of its history too (those whose Redis data is gone),
    grouped by error. PostgreSQL unavailable: the dead letters alone."""
    page = await inspector.scan_live(
        engine, [queue], [Status.FAILED], matcher(task, None), limit=scan, budget=scan
    )
    failures = {info.id: (info.id, info.task, info.error) for info in page.jobs}
    scanned, complete, source = page.scanned, page.next_cursor is None, "redis"
    if history_enabled(engine):
        try:
            found, read, done = await _history_failures(engine, queue, task, scan)
        except HISTORY_ERRORS as exc:
            log.warning("job log unavailable; grouping dead letters only", error=str(exc))
        else:
            for failure in found:
                failures.setdefault(failure[0], failure)
            scanned, complete, source = scanned + read, complete and done, "history"
    return {
        "queue": queue,
        "groups": group_errors(failures.values()),
        "scanned": scanned,
        "complete": complete,
        "source": source,
    }


async def _history_failures(
    engine: Engine, queue: str, task: str | None, scan: int
) -> tuple[list[Failure], int, bool]:
    """(failed jobs of the history, newest first, up to ``scan``; rows read; all read)."""
    out: list[Failure] = []
    cursor = None
    while len(out) < scan:
        page = await engine.history(
            queue=queue, status="failed", task=task, limit=min(HISTORY_PAGE, scan - len(out)), cursor=cursor
        )
        out += [(job.id, job.task, job.error) for job in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            return out, len(out), True
    return out, len(out), False


# --- bulk actions ---------------------------------------------------------------------------

_BULK_LABELS = {
    "retry": ("Retry", "retried", "failed"),
    "cancel": ("Cancel", "cancelled", "waiting, delayed or running"),
    "delete": ("Delete", "deleted", "waiting, delayed or failed"),
}


def bulk_choices(status: str) -> list[dict[str, str]]:
    """The bulk actions a queue page offers for its status filter ("" or "all" for all)."""
    status = "" if status == "all" else status
    out = []
    for action, statuses in BULK_STATUSES.items():
        if status and status not in statuses:
            continue
        label, past, which = _BULK_LABELS[action]
        out.append({"action": action, "label": label, "past": past, "which": status or which})
    return out


# --- cron -----------------------------------------------------------------------------------


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


async def cron_rows(engine: Engine) -> list[dict[str, Any]]:
    """The announced schedules (``inspector.cron_schedules``), each with its pause state."""
    gateway = await engine.ready()
    pauses: dict[str, dict[str, int]] = {}
    rows = []
    for row in await inspector.cron_schedules(engine):
        partition = engine.layout.route(row.queue, row.name)
        if partition not in pauses:
            pauses[partition] = await gateway.cron_pauses(partition)
        paused_at = pauses[partition].get(row.name)
        rows.append({**asdict(row), "paused": paused_at is not None, "paused_at": _at(paused_at)})
    return rows


async def cron_detail(engine: Engine, name: str, limit: int) -> dict[str, Any]:
    """One announced schedule, its pause state and its newest ``limit`` runs with the
    status of each run's job now; NotFound for a schedule no worker announced."""
    row = next((r for r in await cron_rows(engine) if r["name"] == name), None)
    if row is None:
        raise NotFound(f"no cron schedule {name!r} (a worker announces its app's schedules when it starts)")
    return {**row, "runs": await recent_runs(engine, name, limit)}


async def recent_runs(engine: Engine, name: str, limit: int) -> list[dict[str, Any]]:
    target = await engine.schedule_target(name)
    out = []
    for run in await engine.schedule_runs(name, limit):
        status = None
        if run.job_id:
            info = await inspector.live_info(engine, run.job_id, target.queue)
            status = None if info is None else str(info.status)
        out.append(
            {
                "kind": run.kind,
                "job_id": run.job_id,
                "tick": _at(run.tick_ms),
                "at": _at(run.at_ms),
                "status": status,
            }
        )
    return out
