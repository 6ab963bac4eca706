"""One job in full: its fields, log lines, timeline and the actions it allows."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from engine import inspector
from engine.core.model import FINAL_STATUSES, STATUSES, Status
from engine.core.taskdef import TaskAnnouncement
from engine.dashboard.checks import check_job_id
from engine.dashboard.errors import NotFound
from engine.dashboard.overview import task_max_attempts
from engine.dashboard.views import HISTORY_ERRORS, HISTORY_NOTICE, history_enabled, history_view, job_view
from engine.dashboard.web import TEXT_LIMIT, compact_json, shown_json

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


# --- the job page: arguments by name, the traceback once ---------------------------------------

_TRACEBACK_START = (
    "Traceback (most recent call last):",
    "  + Exception Group Traceback (most recent call last):",
)


async def task_signature(engine: Engine, task: str | None) -> inspect.Signature | None:
    """The signature of ``task`` as this app knows it or a worker announced it; None when
    neither does (a task of another app whose workers have not started yet)."""
    if not task:
        return None
    local = engine.tasks.get(task)
    if local is not None:
        return local.spec.signature
    gateway = await engine.ready()
    raw = (await gateway.reads.task_announcements()).get(task)
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=TaskAnnouncement).signature()
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError):
        return None  # an announcement from another engine version: show the raw arguments


def named_arguments(
    signature: inspect.Signature | None, args: Any, kwargs: Any
) -> list[dict[str, Any]] | None:
    """The job's arguments as (parameter name, value) rows, in the signature's order, or None
    when the signature is unknown or the arguments do not bind to it (the page then shows
    them as sent). A parameter the job leaves out is a row without a value: an announced
    signature says only that it has a default, not which."""
    if signature is None or not isinstance(args, list) or not isinstance(kwargs, dict):
        return None
    if not all(isinstance(key, str) for key in kwargs):
        return None
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    rows: list[dict[str, Any]] = []
    for index, (name, param) in enumerate(signature.parameters.items()):
        if name not in bound.arguments:
            if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                rows.append({"name": name, "given": False, "how": "default"})
            continue
        value = bound.arguments[name]
        if param.kind is param.VAR_POSITIONAL:
            rows.append({"name": "*" + name, "given": True, "value": list(value), "how": "extra positional"})
        elif param.kind is param.VAR_KEYWORD:
            how = f"in **{name}"
            rows.extend({"name": key, "given": True, "value": v, "how": how} for key, v in value.items())
        else:
            by_position = param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
            how = "positional" if by_position and index < len(args) else "keyword"
            rows.append({"name": name, "given": True, "value": value, "how": how})
    return rows


@dataclass(frozen=True)
class Failure:
    """A failure as the page shows it: the error message, then the stack without the
    exception line(s) that repeat that message (Python ends a traceback with them)."""

    error: str
    frames: str


def _tail_at(traceback: str, error: str) -> int | None:
    """Where the exception line(s) repeating ``error`` start at the end of ``traceback``:
    ``ValueError: boom``, or ``mymodule.MyError: boom`` (the error names the class only)."""
    if not error or not traceback.endswith(error):
        return None
    start = len(traceback) - len(error)
    line_start = traceback.rfind("\n", 0, start) + 1
    prefix = traceback[line_start:start]
    if prefix and not (prefix.endswith(".") and all(part.isidentifier() for part in prefix[:-1].split("."))):
        return None
    return line_start


def split_failure(error: str | None, traceback: str | None) -> Failure:
    """The error once: the traceback's last line(s) are dropped when they say what the
    error says (the usual case); otherwise both are kept whole."""
    message = (error or "").strip()
    stack = (traceback or "").rstrip()
    at = _tail_at(stack, message)
    if at is not None and stack[:at].strip():
        return Failure(message, stack[:at].rstrip())
    return Failure(message, stack)


def _split_log_message(message: str) -> tuple[str, str] | None:
    """(error, traceback) of a failed attempt's log line (``error\\n\\ntraceback``, as the
    job log writes it), or of any line that ends with a traceback; None for other lines."""
    for marker in _TRACEBACK_START:
        at = message.find(marker)
        if at == 0 or (at > 0 and message[at - 1] == "\n"):
            return message[:at].strip(), message[at:]
    return None


def collapse_tracebacks(logs: list[dict[str, Any]], shown_frames: str) -> list[dict[str, Any]]:
    """The log lines with each traceback kept only the first time: a failed attempt's line
    whose stack is the one the page shows above, or one an earlier line showed, keeps its
    error and says where its stack is (``same_as``); a stack seen first here stays, without
    the exception line that repeats the line's error."""
    seen: dict[str, str] = {}
    if shown_frames.strip():
        seen[shown_frames.strip()] = "above"
    out: list[dict[str, Any]] = []
    for line in logs:
        parts = _split_log_message(str(line.get("message", "")))
        if parts is None:
            out.append(line)
            continue
        error, traceback = parts
        failure = split_failure(error, traceback) if error else Failure("", traceback.rstrip())
        key = failure.frames.strip()
        earlier = seen.get(key)
        if earlier is not None:
            out.append({**line, "message": error or "(traceback only)", "same_as": earlier})
            continue
        seen[key] = _dt_label(line.get("at"))
        text = f"{error}\n\n{failure.frames}" if error else failure.frames
        out.append({**line, "message": text})
    return out


def _dt_label(at: Any) -> str:
    """How a later repeat names this line: by its time."""
    if isinstance(at, datetime):
        return at.astimezone(UTC).strftime("%H:%M:%S")
    return "an earlier line"


INLINE_VALUE = 80
"""A value this short in one line of JSON is shown on its parameter's line; longer ones indented."""


def shown_arguments(
    rows: list[dict[str, Any]] | None, limit: int = TEXT_LIMIT
) -> list[dict[str, Any]] | None:
    """The rows of :func:`named_arguments` with each value as bounded text: together no
    more than the page shows of the raw arguments (``limit`` characters)."""
    if rows is None:
        return None
    each = max(1024, limit // max(1, len(rows)))
    out = []
    for row in rows:
        if not row["given"]:
            out.append({**row, "text": "", "block": False, "truncated": False})
            continue
        line = compact_json(row["value"], INLINE_VALUE + 1)
        if len(line) <= INLINE_VALUE:
            out.append({**row, "text": line, "block": False, "truncated": False})
            continue
        shown = shown_json(row["value"], each)
        out.append({**row, "text": shown.text, "block": True, "truncated": shown.truncated})
    return out
