"""The web dashboard and JSON API of an engine, as one ASGI app.

Mount it in a Starlette/FastAPI service (``app.mount("/jobs", create_app(engine))``, behind
the service's own login with ``auth=``) or run it with ``python -m engine.dashboard
MODULE:APP``. Pages: overview, queue, job, dead letters, cron, workers; JSON API under ``/api``
(``/api/openapi.json``); Prometheus ``/metrics``. Assets ship in the package: it works offline.

HTTP only: it reads through :mod:`engine.inspector` and acts through the client's public
methods, and imports ``engine.core``, the broker's re-exported errors and the history's
event counts; no raw Redis, no SQL, no private member of the Engine.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from engine import log as _log  # noqa: F401  (the engine's loggers are stdlib loggers)
from engine.core.errors import ConfigurationError
from engine.dashboard import api, live, pages
from engine.dashboard.auth import AuthHook, Security, Throttle, check_secret
from engine.dashboard.errors import DashboardError
from engine.dashboard.guard import BODY_LIMIT, Guard, parse_allowed_hosts
from engine.dashboard.middleware import SecurityMiddleware, is_api, route_path
from engine.dashboard.web import UNAVAILABLE, error_json, make_templates, unavailable_message

if TYPE_CHECKING:
    from engine.client.app import Engine

__all__ = ["create_app", "parse_basic_auth"]

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
    check_secret("basic auth password", password)
    return user, password


def create_app(
    engine: Engine,
    *,
    token: str | None = None,
    read_only: bool = False,
    basic_auth: tuple[str, str] | None = None,
    allowed_hosts: Sequence[str] | str | None = None,
    metrics_token: str | None = None,
    metrics_public: bool = False,
    auth: AuthHook | None = None,
    csrf_secret: str | None = None,
) -> ASGIApp:
    """The dashboard of ``engine`` as an ASGI app.

    ``token`` (default: ``ENGINE_DASHBOARD_TOKEN``) turns on authentication: bearer header or
    the login form's session cookie. ``basic_auth=(user, password)`` (default:
    ``ENGINE_DASHBOARD_BASIC_AUTH`` as ``user:password``) accepts HTTP basic credentials.
    Tokens and passwords need at least 16 characters (ConfigurationError otherwise).
    ``read_only`` hides and refuses every action (retry, cancel, delete, replay, purge,
    enqueue). State-changing requests always need the CSRF token.

    Without authentication the dashboard answers only to loopback host names (so no other
    site can reach it through DNS rebinding); ``allowed_hosts`` (default:
    ``ENGINE_DASHBOARD_ALLOWED_HOSTS``, comma-separated) names the others it answers to, and
    then applies with authentication too. ``/metrics`` takes the token, or ``metrics_token``
    (default: ``ENGINE_DASHBOARD_METRICS_TOKEN``), which opens nothing else; with
    ``metrics_public=True`` it needs nothing.

    ``auth`` reuses the host application's authentication instead of the token and basic
    credentials (which are then neither given nor read from the environment):
    ``auth(request) -> bool`` or an awaitable of one, asked about every request but the
    static assets, with the Starlette :class:`~starlette.requests.Request` (headers, cookies,
    ``request.user``/``request.session`` set by the host's middleware; not its body). True
    lets the request in, a falsy answer is refused with 401, and a
    ``starlette.exceptions.HTTPException`` it raises (FastAPI's is one) is answered with its
    status, detail and headers (403, a redirect to the host's login page...). It must be
    quick: it runs in the event loop. CSRF checks stay on for every state change (``GET
    /api/csrf`` gives a script the header and cookie to send), ``read_only`` and
    ``allowed_hosts`` apply, and ``/metrics`` still takes ``metrics_token``. Without a token
    the CSRF tokens are signed with a random key of each process: a host running several
    processes gives them all the same ``csrf_secret`` (16+ characters, e.g. its own secret
    key).
    """
    if auth is not None:
        if not callable(auth):
            raise ConfigurationError(f"auth must be a callable taking the request, not {auth!r}")
        if token is not None or basic_auth is not None:
            raise ConfigurationError(
                "auth= decides who may use the dashboard instead of token= and basic_auth=: "
                "give one or the other"
            )
    elif token is None:
        token = os.environ.get("ENGINE_DASHBOARD_TOKEN") or None
    if token is not None:
        check_secret("dashboard token", token)
    if csrf_secret is not None:
        check_secret("CSRF secret", csrf_secret)
    if basic_auth is None:
        basic_auth = None if auth is not None else _basic_from_env()
    elif not (
        isinstance(basic_auth, tuple)
        and len(basic_auth) == 2
        and all(isinstance(x, str) and x for x in basic_auth)
    ):
        raise ConfigurationError("basic_auth must be a (user, password) pair of non-empty strings")
    else:
        check_secret("basic auth password", basic_auth[1])
    if metrics_token is None:
        metrics_token = os.environ.get("ENGINE_DASHBOARD_METRICS_TOKEN") or None
    if metrics_token is not None:
        check_secret("metrics token", metrics_token)
        if token is None and basic_auth is None and auth is None:
            raise ConfigurationError(
                "a metrics token protects nothing on a dashboard without authentication: "
                "set the dashboard token (or basic auth, or auth=) too"
            )
    if allowed_hosts is None:
        allowed_hosts = os.environ.get("ENGINE_DASHBOARD_ALLOWED_HOSTS") or None
    hosts = parse_allowed_hosts(allowed_hosts)
    security = Security(
        token=token,
        basic_auth=basic_auth,
        read_only=bool(read_only),
        metrics_token=metrics_token,
        metrics_public=bool(metrics_public),
        auth=auth,
        csrf_secret=csrf_secret,
        throttle=Throttle(clock=engine.clock.monotonic),
        clock=engine.clock,
    )

    def wants_json(request: Request) -> bool:
        return is_api(request.scope.get("state", {}).get("path") or route_path(request.scope))

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

    async def on_crash(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback (it re-raises after this answer); the client gets
        # no details, only the same headers as every page (added outside, by the Guard).
        try:
            return page_error(request, 500, "internal error: the server log has the details")
        except Exception:
            return error_json(500, "internal error: the server log has the details")

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        DashboardError: on_dashboard_error,
        HTTPException: on_http_error,
        **{kind: on_unavailable for kind in UNAVAILABLE},
        Exception: on_crash,
    }
    app = Starlette(
        routes=[
            Mount("/static", StaticFiles(packages=[("engine.dashboard", "static")]), name="static"),
            Route("/api", api.index),
            Mount("/api", routes=api.routes()),
            Route("/events", live.events, methods=["GET"]),
            *pages.routes(),
        ],
        exception_handlers=handlers,
    )
    # No redirects to the slash-less or slashed path: Starlette builds them from the Host
    # header, which is the client's to choose.
    app.router.redirect_slashes = False
    app.state.engine = engine
    app.state.security = security
    app.state.templates = make_templates()
    payload_limit = getattr(engine, "max_payload_bytes", 0)
    return Guard(
        SecurityMiddleware(app, security, engine),
        open_dashboard=not security.enabled,
        allowed_hosts=hosts,
        # An enqueue body carries the payload: never refuse one the engine would take.
        body_limit=max(BODY_LIMIT, int(payload_limit) + 64 * 1024),
        security=security,
    )
