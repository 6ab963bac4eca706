"""The HTML pages (server-rendered; ``static/app.js`` refreshes their live parts)."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine import inspector
from engine.core.clock import now_utc
from engine.dashboard import breakdown, checks, views
from engine.dashboard import metrics as prometheus
from engine.dashboard import overview as figures
from engine.dashboard import search as lookup
from engine.dashboard.auth import SESSION_COOKIE, SESSION_TTL_S, Security, cookie_header, revoke, safe_next
from engine.dashboard.charts import throughput_chart
from engine.dashboard.detail import (
    collapse_tracebacks,
    job_detail,
    named_arguments,
    shown_arguments,
    split_failure,
    task_signature,
)
from engine.dashboard.web import TEXT_LIMIT, engine_of, shown_json, shown_text

REFRESH_MS = 1500
CRON_RUNS_SHOWN = 5


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    state = request.scope["state"]
    engine = engine_of(request)
    full = {
        "base": state.get("base", ""),
        "csrf": state.get("csrf_token", ""),
        "read_only": state.get("read_only", False),
        "auth_enabled": state.get("auth_enabled", False),
        "logged_in": state.get("auth") == "session",
        "history": views.history_enabled(engine),
        "history_notice": views.HISTORY_NOTICE,
        "refresh_ms": REFRESH_MS,
        "nav": "",
        "namespace": engine.namespace,
        "now": now_utc(engine.clock),
        **context,
    }
    templates = request.app.state.templates
    response: Response = templates.TemplateResponse(request, name, full, status_code=status_code)
    return response


def _q(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value.strip() if value and value.strip() else None


async def overview(request: Request) -> Response:
    data = await figures.overview(engine_of(request))
    return render(
        request, "overview.html", {**data, "chart": throughput_chart(data["throughput"]), "nav": "overview"}
    )


async def _listing(request: Request, queue: str | None) -> dict[str, Any]:
    engine = engine_of(request)
    status = _q(request, "status")
    search = _q(request, "q")
    task = _q(request, "task")
    cursor = _q(request, "cursor")
    page = await lookup.list_jobs(
        engine,
        queue=queue,
        status=status,
        task=task,
        search=search,
        limit=checks.check_limit(_q(request, "limit")),
        cursor=cursor,
    )
    return {
        "page": page,
        "status": status or "",
        "search": search or "",
        "task": task or "",
        "cursor": cursor or "",
        "statuses": checks.STATUS_CHOICES,
    }


async def search(request: Request) -> Response:
    listing = await _listing(request, _q(request, "queue"))
    queues = await inspector.queue_names(engine_of(request))
    return render(request, "search.html", {**listing, "queues": queues, "queue": _q(request, "queue") or ""})


async def queue(request: Request) -> Response:
    engine = engine_of(request)
    name = await checks.require_queue(engine, request.path_params["queue"])
    listing = await _listing(request, name)
    summary = await figures.queue_summary(engine, name)
    series = await figures.throughput(engine, [name])
    context = {
        **listing,
        "queue": summary,
        "chart": throughput_chart(series),
        "nav": "overview",
        "task_rows": (await breakdown.task_breakdown(engine, name))["tasks"],
        "errors": await _error_groups(engine, name, None) if summary["dlq"] else None,
        "bulk": breakdown.bulk_choices(listing["status"]),
    }
    return render(request, "queue.html", context)


MAX_LOG_ROWS = 300
LOG_MESSAGE_LIMIT = 4096
LOG_BUDGET = 128 * 1024
MAX_TIMELINE_STEPS = 200


def _shown_logs(logs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The newest log lines that fit the page's budget (each message cut), and how many of
    the older ones are left out."""
    shown: list[dict[str, Any]] = []
    budget = LOG_BUDGET
    for line in reversed(logs):
        if len(shown) >= MAX_LOG_ROWS or budget <= 0:
            break
        text = shown_text(str(line.get("message", "")), LOG_MESSAGE_LIMIT)
        budget -= len(text.text)
        shown.append({**line, "message": text.text + ("\n…" if text.truncated else "")})
    shown.reverse()
    return shown, len(logs) - len(shown)


async def _error_groups(engine: Any, queue: str, task: str | None) -> dict[str, Any]:
    groups = await breakdown.error_groups(engine, queue, task, scan=breakdown.PAGE_ERROR_SCAN)
    groups["shown"] = groups["groups"][: breakdown.PAGE_GROUPS]
    return groups


async def job(request: Request) -> Response:
    engine = engine_of(request)
    detail = await job_detail(engine, request.path_params["job_id"])
    failure = split_failure(detail["error"], detail["traceback"])
    signature = await task_signature(engine, detail["task"])
    arguments = named_arguments(signature, detail["args"], detail["kwargs"])
    # Everything a job carries is bounded here: a page (re-rendered every second while it
    # is open) costs at most a few hundred kilobytes of formatting, whatever the payload;
    # the full data is one click away (/api/jobs/{id}/raw).
    shown = {
        "args": shown_json(detail["args"]),
        "kwargs": shown_json(detail["kwargs"]),
        "result": shown_json(detail["result"]),
        "raw_payload": shown_text(detail["raw_payload"]),
        "error": shown_text(failure.error),
        "traceback": shown_text(failure.frames, keep_end=True),
    }
    logs, logs_omitted = _shown_logs(collapse_tracebacks(detail["logs"], failure.frames))
    timeline = detail["timeline"][:MAX_TIMELINE_STEPS]
    context = {
        "job": detail,
        "shown": shown,
        "truncated": any(block.truncated for block in shown.values()),
        "logs": logs,
        "logs_omitted": logs_omitted,
        "timeline": timeline,
        "timeline_omitted": len(detail["timeline"]) - len(timeline),
        "text_limit": TEXT_LIMIT,
        "arguments": shown_arguments(arguments),
        "nav": "",
    }
    return render(request, "job.html", context)


async def dead_letters(request: Request) -> Response:
    engine = engine_of(request)
    summaries = await figures.queue_summaries(engine)
    chosen = _q(request, "queue")
    if chosen is None:
        with_dead = [q["name"] for q in summaries if q["dlq"]]
        chosen = with_dead[0] if with_dead else (summaries[0]["name"] if summaries else None)
    task = checks.check_task(_q(request, "task"))
    search_text = checks.check_search(_q(request, "q"))
    page = None
    if chosen is not None:
        await checks.require_queue(engine, chosen)
        page = await lookup.dead_letters(
            engine,
            chosen,
            task,
            search_text,
            limit=checks.check_limit(_q(request, "limit")),
            cursor=_q(request, "cursor"),
        )
    return render(
        request,
        "dlq.html",
        {
            "queues": summaries,
            "queue": chosen or "",
            "page": page,
            "task": task or "",
            "search": search_text or "",
            "cursor": _q(request, "cursor") or "",
            "filtered": bool(task or search_text),
            "errors": await _error_groups(engine, chosen, task) if chosen else None,
            "nav": "dlq",
        },
    )


async def cron(request: Request) -> Response:
    engine = engine_of(request)
    schedules = await breakdown.cron_rows(engine)
    for row in schedules:
        row["runs"] = await breakdown.recent_runs(engine, row["name"], CRON_RUNS_SHOWN)
    return render(request, "cron.html", {"schedules": schedules, "nav": "cron"})


async def workers(request: Request) -> Response:
    return render(
        request, "workers.html", {"workers": await figures.workers(engine_of(request)), "nav": "workers"}
    )


async def metrics(request: Request) -> Response:
    return PlainTextResponse(await prometheus.render(engine_of(request)), media_type=prometheus.CONTENT_TYPE)


# --- login -----------------------------------------------------------------------------------


def _security(request: Request) -> Security:
    security: Security = request.app.state.security
    return security


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form of a login/logout POST (its size bounded by the Guard)."""
    body = await request.body()
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _csrf_ok(request: Request, given: str) -> bool:
    """The form's token is the CSRF cookie, and that cookie is signed for this session."""
    cookie = request.scope["state"].get("csrf_cookie")
    return bool(cookie) and bool(given) and hmac.compare_digest(given.encode(), cookie.encode())


async def login_form(request: Request) -> Response:
    security = _security(request)
    base = request.scope["state"].get("base", "")
    target = safe_next(request.query_params.get("next"))
    if security.token is None:
        return RedirectResponse(base + target, status_code=303)
    return render(request, "login.html", {"next": target, "error": None, "nav": ""})


def _locked_out(request: Request, target: str, seconds: int) -> Response:
    context = {
        "next": target,
        "error": f"Too many wrong tokens from your address: try again in {seconds} s.",
        "nav": "",
    }
    response = render(request, "login.html", context, status_code=429)
    response.headers["retry-after"] = str(seconds)
    return response


async def login(request: Request) -> Response:
    security = _security(request)
    state = request.scope["state"]
    base = state.get("base", "")
    fields = await _form(request)
    target = safe_next(fields.get("next"))
    if security.token is None:
        return RedirectResponse(base + target, status_code=303)
    if not _csrf_ok(request, fields.get("csrf_token", "")):
        context = {"next": target, "error": "Your form expired; please try again.", "nav": ""}
        return render(request, "login.html", context, status_code=403)
    client = state["client"]
    # Checked after the body arrived: guesses sent in parallel all see the lockout.
    wait = security.throttle.retry_after(client)
    if wait:
        return _locked_out(request, target, wait)
    if not security.check_token(fields.get("token", "")):
        security.throttle.failed(client)
        return render(
            request, "login.html", {"next": target, "error": "Wrong token.", "nav": ""}, status_code=401
        )
    security.throttle.succeeded(client)
    response = RedirectResponse(base + target, status_code=303)
    cookie = cookie_header(
        SESSION_COOKIE,
        security.new_session(),
        path=base or "/",
        secure=request.url.scheme == "https",
        max_age=SESSION_TTL_S,
    )
    response.headers.append("set-cookie", cookie)
    return response


async def logout(request: Request) -> Response:
    state = request.scope["state"]
    base = state.get("base", "")
    fields = await _form(request)
    session = state.get("session")
    response = RedirectResponse(base + "/login", status_code=303)
    secure = request.url.scheme == "https"
    response.headers.append(
        "set-cookie", cookie_header(SESSION_COOKIE, "", path=base or "/", secure=secure, max_age=0)
    )
    if session is None:
        return response  # no live session: there is nothing to end, only a cookie to drop
    given = fields.get("csrf_token") or request.headers.get("x-csrf-token", "")
    if not _csrf_ok(request, given):
        return PlainTextResponse("CSRF check failed", status_code=403)
    # Revoked in Redis, so the cookie stops working in every dashboard process at once.
    await revoke(engine_of(request), session)
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview),
        Route("/search", search),
        Route("/queues/{queue}", queue),
        Route("/jobs/{job_id}", job),
        Route("/dlq", dead_letters),
        Route("/cron", cron),
        Route("/workers", workers),
        Route("/metrics", metrics),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
