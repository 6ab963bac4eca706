"""The ASGI middleware that applies auth.py's rules to every request: who it is, CSRF, read-only."""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.dashboard.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    LOGIN_PATHS,
    PUBLIC_PREFIXES,
    SESSION_COOKIE,
    UNSAFE_METHODS,
    Security,
    cookie_header,
    csrf_binding,
    is_revoked,
    parse_cookies,
)
from engine.dashboard.web import UNAVAILABLE, unavailable_message

if TYPE_CHECKING:
    from engine.client.app import Engine


def client_key(scope: Scope) -> str:
    """Who is guessing: the client address; IPv6 by /64 (one host usually holds a whole /64)."""
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def route_path(scope: Scope) -> str:
    """The path inside this app (without the prefix it is mounted under)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/") or path == "/metrics"


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, security: Security, engine: Engine) -> None:
        self.app = app
        self.security = security
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        security = self.security
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        cookies = parse_cookies(headers.get("cookie", ""))
        path = route_path(scope)
        base: str = scope.get("root_path", "")
        method = scope.get("method", "GET")
        state = scope.setdefault("state", {})
        state["base"] = base
        state["path"] = path
        state["read_only"] = security.read_only
        state["auth_enabled"] = security.enabled
        state["client"] = client_key(scope)
        state["session"] = None

        if path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return

        try:
            how = await self._authenticate(scope, state, path, headers, cookies)
        except HTTPException as refused:  # raised by the host application's auth hook
            await send_json(
                send,
                refused.status_code,
                str(refused.detail),
                extra=[
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in (refused.headers or {}).items()
                ],
            )
            return
        except _Locked as locked:
            await send_json(
                send,
                429,
                f"too many failed attempts from your address: try again in {locked.seconds} s",
                extra=[(b"retry-after", str(locked.seconds).encode())],
            )
            return
        except UNAVAILABLE as exc:
            await send_json(send, 503, unavailable_message(exc))
            return
        state["auth"] = how

        binding = csrf_binding(how, state["session"])
        cookie_csrf = cookies.get(CSRF_COOKIE, "")
        valid_cookie = security.check_csrf(cookie_csrf, binding)
        new_csrf = None if valid_cookie else security.new_csrf(binding)
        state["csrf_token"] = cookie_csrf if valid_cookie else new_csrf
        state["csrf_cookie"] = cookie_csrf if valid_cookie else None
        secure = scope.get("scheme") == "https"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and new_csrf is not None:
                cookie = cookie_header(CSRF_COOKIE, new_csrf, path=base or "/", secure=secure)
                MutableHeaders(scope=message).append("set-cookie", cookie)
            await send(message)

        if how is None and path not in LOGIN_PATHS:
            await self._refuse_unauthenticated(scope, path, base, headers, send_with_cookie)
            return
        if method in UNSAFE_METHODS and path not in LOGIN_PATHS:
            if security.read_only:
                await send_json(send_with_cookie, 403, "the dashboard is read-only: changes are disabled")
                return
            given = headers.get(CSRF_HEADER, "")
            valid = valid_cookie and bool(given) and hmac.compare_digest(given.encode(), cookie_csrf.encode())
            if how != "bearer" and not valid:
                await send_json(
                    send_with_cookie,
                    403,
                    "CSRF check failed: send the X-CSRF-Token header with the value of the "
                    f"{CSRF_COOKIE} cookie (GET {base}/api/csrf gives both)",
                )
                return
        await self.app(scope, receive, send_with_cookie)

    async def _authenticate(
        self,
        scope: Scope,
        state: dict[str, Any],
        path: str,
        headers: dict[str, str],
        cookies: dict[str, str],
    ) -> str | None:
        """How the request proved who it is ("open", "bearer", "basic", "session", "metrics",
        "public", "host": the host application's auth hook), or None. Raises _Locked for a
        locked-out client that sends credentials."""
        security = self.security
        if not security.enabled:
            return "open"
        if path == "/metrics" and security.metrics_public:
            return "public"
        if security.auth is not None:
            if path == "/metrics" and security.metrics_token is not None:
                how = self._check_credentials(state, path, headers)
                if how is not None:
                    return how
            # Without the body: the hook must not consume what the dashboard reads next.
            return "host" if await security.host_allows(Request(scope)) else None
        how = self._check_credentials(state, path, headers)
        if how is not None:
            return how
        raw = cookies.get(SESSION_COOKIE)
        session = security.read_session(raw) if raw else None
        if session is not None and not await is_revoked(self.engine, session):
            state["session"] = session
            return "session"
        return None

    def _check_credentials(self, state: dict[str, Any], path: str, headers: dict[str, str]) -> str | None:
        """The Authorization header's credentials ("bearer", "metrics", "basic"), if right."""
        security = self.security
        client = state["client"]
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme in ("bearer", "basic") and credentials:
            wait = security.throttle.retry_after(client)
            if wait:
                raise _Locked(wait)
            how = None
            if scheme == "bearer" and security.check_token(credentials):
                how = "bearer"
            elif scheme == "bearer" and path == "/metrics" and security.check_metrics_token(credentials):
                how = "metrics"
            elif scheme == "basic" and security.check_basic(credentials):
                how = "basic"
            if how is not None:
                security.throttle.succeeded(client)
                return how
            security.throttle.failed(client)
        return None

    async def _refuse_unauthenticated(
        self, scope: Scope, path: str, base: str, headers: dict[str, str], send: Send
    ) -> None:
        if self.security.auth is not None:
            await send_json(
                send, 401, "authentication required: the application's authentication refused this request"
            )
            return
        wants_html = "text/html" in headers.get("accept", "")
        if self.security.token is not None and wants_html and not is_api(path):
            target = path + (
                ("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else ""
            )
            location = f"{base}/login?next={quote(target, safe='')}"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        challenge = 'Basic realm="engine dashboard"' if self.security.basic_auth else 'Bearer realm="engine"'
        await send_json(
            send,
            401,
            "authentication required: send Authorization: Bearer <ENGINE_DASHBOARD_TOKEN>"
            + (" or HTTP basic credentials" if self.security.basic_auth else "")
            + (", or log in at " + f"{base}/login" if self.security.token else ""),
            extra=[(b"www-authenticate", challenge.encode())],
        )


class _Locked(Exception):
    def __init__(self, seconds: int) -> None:
        self.seconds = seconds


async def send_json(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = msgspec.json.encode({"error": message, "status": status})
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
