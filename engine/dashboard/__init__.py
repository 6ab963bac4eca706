"""The web dashboard and JSON API of an engine, as one ASGI app.

Mount it in a Starlette/FastAPI service (``app.mount("/jobs", create_app(engine))``) or run
it with ``python -m engine.dashboard MODULE:APP``. Pages: overview, queue, job, dead letters,
cron, workers; JSON API under ``/api`` (``/api/openapi.json``); Prometheus ``/metrics``.
Assets ship in the package: it works offline.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from engine.dashboard import api, pages
from engine.dashboard.auth import Security, SecurityMiddleware, route_path
from engine.dashboard.service import DashboardError
from engine.dashboard.web import UNAVAILABLE, error_json, make_templates, unavailable_message
from engine.errors import ConfigurationError

if TYPE_CHECKING:
    from engine.app import Engine

__all__ = ["create_app"]

log = structlog.get_logger("engine.dashboard")


def _basic_from_env() -> tuple[str, str] | None:
    raw = os.environ.get("ENGINE_DASHBOARD_BASIC_AUTH")
    if not raw:
        return None
    return parse_basic_auth(raw)


def parse_basic_auth(raw: str) -> tuple[str, str]:
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise ConfigurationError("basic auth must be given as USER:PASSWORD (both non-empty)")
    return user, password


def create_app(
    engine: Engine,
    *,
    token: str | None = None,
    read_only: bool = False,
    basic_auth: tuple[str, str] | None = None,
) -> ASGIApp:
    """The dashboard of ``engine`` as a Starlette app.

    ``token`` (default: ``ENGINE_DASHBOARD_TOKEN``) turns on authentication: bearer header or
    the login form's session cookie. ``basic_auth=(user, password)`` (default:
    ``ENGINE_DASHBOARD_BASIC_AUTH`` as ``user:password``) accepts HTTP basic credentials.
    ``read_only`` hides and refuses every action (retry, cancel, delete, replay, purge,
    enqueue). State-changing requests always need the CSRF token.
    """
    if token is None:
        token = os.environ.get("ENGINE_DASHBOARD_TOKEN") or None
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ConfigurationError("the dashboard token must be a non-empty string")
    if basic_auth is None:
        basic_auth = _basic_from_env()
    elif not (
        isinstance(basic_auth, tuple)
        and len(basic_auth) == 2
        and all(isinstance(x, str) and x for x in basic_auth)
    ):
        raise ConfigurationError("basic_auth must be a (user, password) pair of non-empty strings")
    security = Security(token=token, basic_auth=basic_auth, read_only=bool(read_only))

    def wants_json(request: Request) -> bool:
        path = request.scope.get("state", {}).get("path") or route_path(request.scope)
        return path == "/api" or path.startswith("/api/") or path == "/metrics"

    def page_error(request: Request, status: int, message: str) -> Response:
        if wants_json(request):
            return error_json(status, message)
        return pages.render(request, "error.html", {"status": status, "message": message}, status_code=status)

    async def on_dashboard_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DashboardError)
        return page_error(request, exc.status_code, str(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"nothing at {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return page_error(request, exc.status_code, message)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("dashboard request failed: Redis unavailable", error=str(exc), path=request.url.path)
        return page_error(request, 503, unavailable_message(exc))

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        DashboardError: on_dashboard_error,
        HTTPException: on_http_error,
        **{kind: on_unavailable for kind in UNAVAILABLE},
    }
    app = Starlette(
        routes=[
            Mount("/static", StaticFiles(packages=[("engine.dashboard", "static")]), name="static"),
            Mount("/api", routes=api.routes()),
            *pages.routes(),
        ],
        middleware=[Middleware(SecurityMiddleware, security=security)],
        exception_handlers=handlers,
    )
    app.state.engine = engine
    app.state.security = security
    app.state.templates = make_templates()
    return app
