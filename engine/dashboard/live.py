"""Live pages by server-sent events: ``GET /events?page=/queues/default?status=failed``.

The stream renders the page it is given with the page's own handler, as the page request
would (same auth state, same read-only mode, same queries), and sends the page's live
regions (the elements with ``data-live`` and an ``id``) when they change: at most once a
second, only the regions that changed. ``static/app.js`` swaps them in; it polls the page
instead when a browser has no EventSource or the stream keeps failing.

Events (each ``data`` is one JSON object):

- ``update``: ``{"regions": {id: outer HTML}, "csrf": token}``;
- ``problem``: ``{"status": int, "message": str}`` when the page cannot be rendered now
  (Redis away, the job deleted); the stream carries on and updates again once it can;
- ``reauth``: the session expired or was revoked, or the host application's auth now
  refuses: the stream ends (the page reloads, which leads to the login);
- ``bye``: the server stops, or the stream reached :data:`MAX_STREAM_S`: the stream ends
  (the browser opens a new one).

A comment line every :data:`HEARTBEAT_S` keeps proxies from closing an idle stream.

Ending: a stream stops within a tick when its client goes away, and when the server stops:
:func:`end_streams` ends every stream of the process (``engine.dashboard.server`` calls it),
and under a stock uvicorn the stream notices the server's exit flag by itself (uvicorn tells
an app nothing before it waits for open responses to finish, so without this its shutdown
would wait for every open tab). Under any other server a stream lasts
:data:`MAX_STREAM_S` at most.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import msgspec
import structlog
import uvicorn
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from engine.dashboard import pages
from engine.dashboard.auth import SESSION_COOKIE, Security, is_revoked, parse_cookies
from engine.dashboard.errors import DashboardError, Invalid, NotFound
from engine.dashboard.web import UNAVAILABLE, engine_of, error_json, unavailable_message

log = structlog.get_logger("engine.dashboard")

TICK_S = 1.0
"""Between two renders of the page: what the brief of "live" allows (a job's state is worth
knowing within a second) at the cost of the old poll every 1.5 s."""
HEARTBEAT_S = 15.0
"""Idle proxies commonly drop a response after 30-60 s of silence (nginx: 60 s)."""
AUTH_RECHECK_S = 10.0
"""A page checks its session at every request; a stream every this often, so a logout in
another tab (a revocation in Redis) or an expired session ends it soon after."""
MAX_STREAM_S = 300.0
"""A stream then says ``bye`` and the browser reconnects: the bound on how long a server that
does not tell us it stops waits for an open tab."""
RETRY_MS = 2000
"""The browser's wait before it reconnects a dropped stream (the SSE ``retry`` field)."""
MAX_PAGE_CHARS = 4096

LIVE_PAGES = ("/", "/search", "/queues/{queue}", "/jobs/{job_id}", "/dlq", "/cron", "/workers")
_ROUTES = [r for r in pages.routes() if isinstance(r, Route) and r.path in LIVE_PAGES]

_LIVE_OPEN = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)\b[^>]*\bdata-live\b[^>]*>")
_ID = re.compile(r'\bid="([^"]+)"')


def live_regions(html: str) -> dict[str, str]:
    """The outer HTML of each element of ``html`` with ``data-live`` and an id, by id.

    A scan, not an HTML parser: the pages are our own autoescaped templates (no ``<`` or
    ``>`` inside attribute values), and a re-render every second should cost the
    regex's time, not a parse in Python."""
    out: dict[str, str] = {}
    at = 0
    while (opening := _LIVE_OPEN.search(html, at)) is not None:
        tag = opening.group(1)
        found = _ID.search(opening.group(0))
        tags = re.compile(rf"<(/?){re.escape(tag)}\b[^>]*>", re.IGNORECASE)
        depth = 1
        end = len(html)
        for match in tags.finditer(html, opening.end()):
            depth += -1 if match.group(1) else 1
            if depth == 0:
                end = match.end()
                break
        if found is not None:
            out[found.group(1)] = html[opening.start() : end]
        at = end
    return out


# --- which page -----------------------------------------------------------------------------


def _page_route(page: str) -> tuple[Route, dict[str, Any], str, str]:
    """The live page's route, its path parameters, path and query string; Invalid or
    NotFound for anything else (only our own live pages are rendered, never a URL)."""
    if not page.startswith("/") or page.startswith("//") or len(page) > MAX_PAGE_CHARS:
        raise Invalid("page must be the path of a dashboard page, such as /queues/default")
    parts = urlsplit(page)
    # The page's URL as the browser shows it, so percent-encoded: decoded as a server decodes
    # a request's path before routing it.
    path = unquote(parts.path)
    probe: Scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
    for route in _ROUTES:
        match, child = route.matches(probe)
        if match is Match.FULL:
            return route, child.get("path_params", {}), path, parts.query
    raise NotFound(f"{path} is not a live page: {', '.join(LIVE_PAGES)}")


def _renderer(request: Request, page: str) -> Callable[[], Awaitable[dict[str, str]]]:
    """Renders the page as a request for it from this client would, and returns its regions."""
    route, params, path, query = _page_route(page)
    base = request.scope.get("root_path", "")
    scope = {
        **request.scope,
        "path": base + path,
        "raw_path": (base + path).encode("utf-8"),
        "query_string": query.encode("utf-8"),
        "path_params": params,
        "endpoint": route.endpoint,
    }

    async def render() -> dict[str, str]:
        response = await route.endpoint(Request(scope))
        return live_regions(bytes(response.body).decode("utf-8"))

    return render


# --- ending streams -------------------------------------------------------------------------

_OPEN: set[anyio.Event] = set()


def end_streams() -> int:
    """End every open event stream of this process (each says ``bye``); how many were open.

    Call it first thing when the server stops: open streams would otherwise keep it
    waiting. Call it from the event loop the streams run in."""
    for stop in list(_OPEN):
        stop.set()
    return len(_OPEN)


def _uvicorn_exiting() -> bool:
    """Whether a stock uvicorn serving us in this process has been told to exit: the
    handler it installs for SIGTERM is a method of the server, whose flag we can read."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return isinstance(server, uvicorn.Server) and bool(server.should_exit)


# --- the endpoint ---------------------------------------------------------------------------


def _event(name: str, data: Any) -> bytes:
    # msgspec escapes newlines inside strings: the data is one line, as SSE needs.
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def _problem(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, DashboardError):
        return {"status": exc.status_code, "message": str(exc)}
    if isinstance(exc, UNAVAILABLE):
        return {"status": 503, "message": unavailable_message(exc)}
    return {"status": 500, "message": "internal error: the server log has the details"}


async def events(request: Request) -> Response:
    """``GET /events?page=PATH``: the live regions of the dashboard page at ``PATH`` (its path
    and query string inside the dashboard), as server-sent events."""
    try:
        render = _renderer(request, request.query_params.get("page", "").strip())
        first = await render()
    except DashboardError as exc:
        return error_json(exc.status_code, str(exc))
    except UNAVAILABLE as exc:
        return error_json(503, unavailable_message(exc))
    return EventStream(request, render, first)


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self, request: Request, render: Callable[[], Awaitable[dict[str, str]]], first: dict[str, str]
    ) -> None:
        # Not Response.__init__: it would send a Content-Length of the empty body.
        self.status_code = 200
        self.background = None
        # Proxies that buffer responses (nginx) would hold the events back.
        self.init_headers({"x-accel-buffering": "no", "cache-control": "no-store"})
        self.request = request
        self.render_page = render
        self.first = first
        self.security: Security = request.app.state.security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stop = anyio.Event()
        _OPEN.add(stop)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as tg:

                async def until_gone() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(until_gone)
                await self._run(send, stop)
                tg.cancel_scope.cancel()
        except OSError:
            pass  # the client went away while we wrote: nothing to tell it
        finally:
            _OPEN.discard(stop)

    async def _run(self, send: Send, stop: anyio.Event) -> None:
        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        state = self.request.scope["state"]
        sent: dict[str, str] = {}
        problem: dict[str, Any] | None = None
        regions: dict[str, str] | None = self.first
        started = last_write = last_auth = anyio.current_time()
        await write(f"retry: {RETRY_MS}\n\n".encode())
        while True:
            if regions is not None:
                changed = {k: v for k, v in regions.items() if sent.get(k) != v}
                if changed or problem is not None:
                    await write(_event("update", {"regions": changed, "csrf": state.get("csrf_token", "")}))
                    sent.update(changed)
                    problem = None
                    last_write = anyio.current_time()
            with anyio.move_on_after(TICK_S):
                await stop.wait()
            now = anyio.current_time()
            if stop.is_set() or _uvicorn_exiting():
                await write(_event("bye", {"reason": "the server is stopping"}))
                break
            if now - started >= MAX_STREAM_S:
                await write(_event("bye", {"reason": "reconnect"}))
                break
            if now - last_auth >= AUTH_RECHECK_S:
                last_auth = now
                if not await self._still_allowed():
                    await write(_event("reauth", {"message": "log in again"}))
                    break
            try:
                regions = await self.render_page()
            except Exception as exc:
                if not isinstance(exc, DashboardError | UNAVAILABLE):
                    log.exception("live page failed to render", page=self.request.query_params.get("page"))
                regions = None
                news = _problem(exc)
                if news != problem:
                    problem = news
                    await write(_event("problem", news))
                    last_write = now
            if now - last_write >= HEARTBEAT_S:
                await write(b": keep-alive\n\n")
                last_write = now
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _still_allowed(self) -> bool:
        """What the middleware decided at the start, decided again for what can change:
        a session (expiry, logout anywhere) and the host application's answer."""
        state = self.request.scope["state"]
        how = state.get("auth")
        security = self.security
        try:
            if how == "session":
                raw = parse_cookies(self.request.headers.get("cookie", "")).get(SESSION_COOKIE)
                session = security.read_session(raw) if raw else None
                return session is not None and not await is_revoked(engine_of(self.request), session)
            if how == "host":
                return await security.host_allows(Request(self.request.scope))
        except HTTPException:
            return False
        except UNAVAILABLE:
            return True  # Redis away: the renders report it; a revocation is checked again later
        return True


def open_streams() -> int:
    """How many event streams this process has open."""
    return len(_OPEN)
