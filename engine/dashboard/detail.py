"""One job in full: its fields, log lines, timeline and the actions it allows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from engine import inspector
from engine.core.model import FINAL_STATUSES, STATUSES, Status
from engine.dashboard.checks import check_job_id
from engine.dashboard.errors import NotFound
from engine.dashboard.overview import task_max_attempts
from engine.dashboard.views import HISTORY_ERRORS, HISTORY_NOTICE, history_enabled, history_view, job_view

if TYPE_CHECKING:
    from engine.client.app import Engine

log = structlog.get_logger("engine.dashboard")
_EPOCH = datetime.fromtimestamp(0, tz=UTC)


async def job_detail(engine: Engine, job_id: str) -> dict[str, Any]:
    """Everything about one job: fields, log lines, timeline and the actions it allows."""
    check_job_id(job_id)
    live = await inspector.live_job(engine, job_id)
    history_logs = await _history_logs(engine, job_id)
    if live is not None:
        view = job_view(live.info)
        gateway = await engine.ready()
        redis_logs = [_log_line(line) for line in await gateway.read_logs(live.info.queue, job_id)]
        logs = history_logs if len(history_logs) >= len(redis_logs) else redis_logs
        view["replayed_at"] = live.replayed_at
    else:
        old = await _history_job(engine, job_id)
        if old is None:
            raise NotFound(f"no job with id {job_id!r}" + ("" if history_enabled(engine) else _gone_hint()))
        view = history_view(old)
        view["replayed_at"] = None
        logs = history_logs
    if view["max_attempts"] is None:
        view["max_attempts"] = await task_max_attempts(engine, view["task"])
    status = view["status"]
    in_redis = view["source"] == "redis"
    view["logs"] = logs
    view["timeline"] = timeline(view, logs)
    view["actions"] = {
        "retry": in_redis and status == Status.FAILED,
        "cancel": in_redis and status in STATUSES and status not in FINAL_STATUSES,
        "delete": in_redis and status != Status.ACTIVE,
    }
    return view


def _log_line(line: dict[str, Any]) -> dict[str, Any]:
    """A line as ``gateway.read_logs`` decodes it, with its time as a datetime (None when it
    has none: 0 marks a stored line that was not one) and its level bounded."""
    at = line.get("at")
    when = None
    if isinstance(at, int | float) and not isinstance(at, bool) and at:
        try:
            when = datetime.fromtimestamp(at / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            when = None
    return {"at": when, "level": str(line.get("level", "info"))[:20], "message": str(line.get("message", ""))}


def _gone_hint() -> str:
    return " (finished jobs expire from Redis after result_ttl; " + HISTORY_NOTICE + ")"


async def _history_logs(engine: Engine, job_id: str) -> list[dict[str, Any]]:
    reader = getattr(engine, "job_logs", None)
    if not history_enabled(engine) or not callable(reader):
        return []
    try:
        lines = await reader(job_id)
    except HISTORY_ERRORS as exc:
        log.warning("job log unavailable", error=str(exc))
        return []
    return [{"at": line.logged_at, "level": line.level, "message": line.content} for line in lines]


async def _history_job(engine: Engine, job_id: str) -> Any:
    if not history_enabled(engine):
        return None
    try:
        page = await engine.history(search=job_id, limit=20)
    except HISTORY_ERRORS as exc:
        log.warning("job log unavailable", error=str(exc))
        return None
    for job in page.jobs:
        if job.id == job_id:
            return job
    return None


def timeline(view: dict[str, Any], logs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job's life as (time, what) steps, oldest first."""
    steps: list[dict[str, Any]] = []

    def add(at: datetime | None, label: str, kind: str) -> None:
        if at is not None:
            steps.append({"at": at, "label": label, "kind": kind})

    add(view.get("created_at"), "enqueued", Status.WAITING)
    if view["status"] == Status.DELAYED and view.get("scheduled_for"):
        add(view["scheduled_for"], "due (retry or delay)", Status.DELAYED)
    for line in logs:
        if line["level"] in ("error", "critical"):
            # The last line of a traceback names the exception; only the end can hold it.
            first = str(line["message"])[-4096:].strip().splitlines()
            last = first[-1] if first else ""
            add(line["at"], "error: " + (last if len(last) <= 300 else last[:299] + "…"), Status.FAILED)
    add(view.get("replayed_at"), "replayed (attempts reset)", Status.WAITING)
    attempt = view.get("attempts") or 0
    add(view.get("processed_at"), f"attempt {attempt} started" if attempt else "started", Status.ACTIVE)
    if view["status"] in FINAL_STATUSES:
        add(view.get("finished_at"), view["status"], view["status"])
    steps.sort(key=lambda s: s["at"] or _EPOCH)
    return steps
