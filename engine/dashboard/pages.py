"""The HTML pages (server-rendered; ``static/app.js`` refreshes their live parts)."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine.dashboard import metrics as prometheus
from engine.dashboard import service
from engine.dashboard.auth import SESSION_COOKIE, SESSION_TTL_S, Security, cookie_header, safe_next
from engine.dashboard.charts import throughput_chart
from engine.dashboard.web import engine_of

REFRESH_MS = 1500
FAILED_LOGIN_DELAY_S = 0.5


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    state = request.scope["state"]
    engine = engine_of(request)
    full = {
        "base": state.get("base", ""),
        "csrf": state.get("csrf_token", ""),
        "read_only": state.get("read_only", False),
        "auth_enabled": state.get("auth_enabled", False),
        "logged_in": state.get("auth") == "session",
        "history": service.history_enabled(engine),
        "history_notice": service.HISTORY_NOTICE,
        "refresh_ms": REFRESH_MS,
        "nav": "",
        "namespace": engine.namespace,
        **context,
    }
    templates = request.app.state.templates
    response: Response = templates.TemplateResponse(request, name, full, status_code=status_code)
    return response


def _q(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value.strip() if value and value.strip() else None


async def overview(request: Request) -> Response:
    data = await service.overview(engine_of(request))
    return render(
        request, "overview.html", {**data, "chart": throughput_chart(data["throughput"]), "nav": "overview"}
    )


async def _listing(request: Request, queue: str | None) -> dict[str, Any]:
    engine = engine_of(request)
    status = _q(request, "status")
    search = _q(request, "q")
    task = _q(request, "task")
    cursor = _q(request, "cursor")
    page = await service.list_jobs(
        engine,
        queue=queue,
        status=status,
        task=task,
        search=search,
        limit=service.check_limit(_q(request, "limit")),
        cursor=cursor,
    )
    return {
        "page": page,
        "status": status or "",
        "search": search or "",
        "task": task or "",
        "cursor": cursor or "",
        "statuses": service.STATUSES,
    }


async def search(request: Request) -> Response:
    listing = await _listing(request, _q(request, "queue"))
    queues = await service.queue_names(engine_of(request))
    return render(request, "search.html", {**listing, "queues": queues, "queue": _q(request, "queue") or ""})


async def queue(request: Request) -> Response:
    engine = engine_of(request)
    name = await service.require_queue(engine, request.path_params["queue"])
    listing = await _listing(request, name)
    summary = next(q for q in await service.queue_summaries(engine) if q["name"] == name)
    series = await service.throughput(engine, [name])
    return render(
        request,
        "queue.html",
        {**listing, "queue": summary, "chart": throughput_chart(series), "nav": "overview"},
    )


async def job(request: Request) -> Response:
    detail = await service.job_detail(engine_of(request), request.path_params["job_id"])
    return render(request, "job.html", {"job": detail, "nav": ""})


async def dead_letters(request: Request) -> Response:
    engine = engine_of(request)
    summaries = await service.queue_summaries(engine)
    chosen = _q(request, "queue")
    if chosen is None:
        with_dead = [q["name"] for q in summaries if q["dlq"]]
        chosen = with_dead[0] if with_dead else (summaries[0]["name"] if summaries else None)
    task = service.check_task(_q(request, "task"))
    search_text = service.check_search(_q(request, "q"))
    page = None
    if chosen is not None:
        await service.require_queue(engine, chosen)
        page = await service.scan_jobs(
            engine,
            [chosen],
            ["failed"],
            service.matcher(task, search_text),
            limit=service.check_limit(_q(request, "limit")),
            cursor=service.decode_cursor(_q(request, "cursor"), "scan"),
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
            "nav": "dlq",
        },
    )


async def cron(request: Request) -> Response:
    return render(request, "cron.html", {"schedules": await service.cron(engine_of(request)), "nav": "cron"})


async def workers(request: Request) -> Response:
    return render(
        request, "workers.html", {"workers": await service.workers(engine_of(request)), "nav": "workers"}
    )


async def metrics(request: Request) -> Response:
    return PlainTextResponse(await prometheus.render(engine_of(request)), media_type=prometheus.CONTENT_TYPE)


# --- login -----------------------------------------------------------------------------------


def _security(request: Request) -> Security:
    security: Security = request.app.state.security
    return security


async def login_form(request: Request) -> Response:
    security = _security(request)
    base = request.scope["state"].get("base", "")
    target = safe_next(request.query_params.get("next"))
    if security.token is None:
        return RedirectResponse(base + target, status_code=303)
    return render(request, "login.html", {"next": target, "error": None, "nav": ""})


async def login(request: Request) -> Response:
    security = _security(request)
    state = request.scope["state"]
    base = state.get("base", "")
    body = await request.body()
    if len(body) > 16 * 1024:
        return PlainTextResponse("request too large", status_code=413)
    fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    target = safe_next(fields.get("next"))
    if security.token is None:
        return RedirectResponse(base + target, status_code=303)
    cookie_csrf = request.cookies.get("engine_csrf", "")
    given_csrf = fields.get("csrf_token", "")
    if not cookie_csrf or not hmac.compare_digest(given_csrf.encode(), cookie_csrf.encode()):
        context = {"next": target, "error": "Your form expired; please try again.", "nav": ""}
        return render(request, "login.html", context, status_code=403)
    if not security.check_token(fields.get("token", "")):
        await anyio.sleep(FAILED_LOGIN_DELAY_S)  # slows guessing down
        return render(
            request, "login.html", {"next": target, "error": "Wrong token.", "nav": ""}, status_code=401
        )
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
    base = request.scope["state"].get("base", "")
    body = await request.body()
    fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    cookie_csrf = request.cookies.get("engine_csrf", "")
    given = fields.get("csrf_token") or request.headers.get("x-csrf-token", "")
    if not cookie_csrf or not hmac.compare_digest(given.encode(), cookie_csrf.encode()):
        return PlainTextResponse("CSRF check failed", status_code=403)
    response = RedirectResponse(base + "/login", status_code=303)
    secure = request.url.scheme == "https"
    response.headers.append(
        "set-cookie", cookie_header(SESSION_COOKIE, "", path=base or "/", secure=secure, max_age=0)
    )
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
